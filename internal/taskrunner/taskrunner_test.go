package taskrunner

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/taskrunner/fakedriver"
)

// memPersister keeps records in memory, and every record written.
type memPersister struct {
	mu      sync.Mutex
	recs    map[string]*Record
	history []*Record
}

func (p *memPersister) PutTask(_ context.Context, allocID, task string, rec *Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.recs == nil {
		p.recs = map[string]*Record{}
	}
	p.recs[allocID+"/"+task] = rec
	p.history = append(p.history, rec)
	return nil
}

func (p *memPersister) get(id string) *Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recs[id]
}

// testAlloc returns an allocation of a one-task group.
func testAlloc(jobType, command string, policy *caravan.RestartPolicy, edit func(*caravan.Task)) *caravan.Allocation {
	task := &caravan.Task{Name: "main", Driver: caravan.DriverExec, Config: caravan.TaskConfig{Command: command},
		Resources: caravan.Resources{CPU: 100, Memory: 64}, KillTimeout: caravan.Duration(3 * time.Second)}
	if edit != nil {
		edit(task)
	}
	job := &caravan.Job{ID: "job1", Name: "job one", Type: jobType, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Restart: policy, Tasks: []*caravan.Task{task},
	}}}
	return &caravan.Allocation{ID: caravan.NewID(), JobID: job.ID, Job: job, TaskGroup: "g", Name: "job1.g[0]"}
}

type harness struct {
	world *fakedriver.World
	drv   *fakedriver.Driver
	store *memPersister
	dir   string
}

func newHarness(t *testing.T) *harness {
	w := fakedriver.NewWorld()
	t.Cleanup(w.Close)
	return &harness{world: w, drv: fakedriver.New("exec", w), store: &memPersister{}, dir: t.TempDir()}
}

func (h *harness) runner(t *testing.T, alloc *caravan.Allocation, restore *Record) *Runner {
	t.Helper()
	r, err := New(Config{
		Alloc: alloc, Task: alloc.Job.TaskGroups[0].Tasks[0], Driver: h.drv,
		Node: NodeInfo{ID: "node1", Name: "n1", Datacenter: "dc1"}, AllocDir: h.dir,
		TaskUser: "nobody", Persister: h.store, Restore: restore,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run starts Run in the bubble and returns a function that waits for it.
func run(r *Runner) func() error {
	errc := make(chan error, 1)
	go func() { errc <- r.Run(context.Background()) }()
	return func() error { return <-errc }
}

func eventTypes(ts *caravan.TaskState) []string {
	var out []string
	for _, e := range ts.Events {
		out = append(out, e.Type)
	}
	return out
}

// startOffsets returns when each started event happened, from t0.
func startOffsets(ts *caravan.TaskState, t0 time.Time) []time.Duration {
	var out []time.Duration
	for _, e := range ts.Events {
		if e.Type == caravan.TaskEventStarted {
			out = append(out, e.Time.Sub(t0))
		}
	}
	return out
}

func TestTaskLifecycle(t *testing.T) {
	const (
		recv  = caravan.TaskEventReceived
		setup = caravan.TaskEventSetup
		start = caravan.TaskEventStarted
		exit  = caravan.TaskEventExited
		rest  = caravan.TaskEventRestarting
		notr  = caravan.TaskEventNotRestarting
	)
	fail := func(attempts int, interval, delay time.Duration) *caravan.RestartPolicy {
		return &caravan.RestartPolicy{Attempts: attempts, Interval: caravan.Duration(interval), Delay: caravan.Duration(delay), Mode: caravan.RestartModeFail}
	}
	delayMode := func(attempts int, interval, delay time.Duration) *caravan.RestartPolicy {
		p := fail(attempts, interval, delay)
		p.Mode = caravan.RestartModeDelay
		return p
	}
	tests := []struct {
		name     string
		jobType  string
		command  string
		policy   *caravan.RestartPolicy
		edit     func(*caravan.Task)
		state    string
		failed   bool
		exitCode int
		restarts int
		events   []string
		starts   []time.Duration
	}{
		{
			name: "batch exit 0 is complete", jobType: caravan.JobTypeBatch, command: "exit 0 after 2s",
			policy: fail(3, time.Hour, time.Second), state: caravan.TaskStateComplete,
			events: []string{recv, setup, start, exit}, starts: []time.Duration{0},
		},
		{
			name: "batch failure uses every attempt then fails", jobType: caravan.JobTypeBatch, command: "exit 3 after 1s",
			policy: fail(2, time.Hour, 10*time.Second), state: caravan.TaskStateFailed, failed: true, exitCode: 3, restarts: 2,
			events: []string{recv, setup, start, exit, rest, start, exit, rest, start, exit, notr},
			starts: []time.Duration{0, 11 * time.Second, 22 * time.Second},
		},
		{
			name: "attempts 0 never restarts", jobType: caravan.JobTypeBatch, command: "exit 1",
			policy: fail(0, time.Hour, time.Second), state: caravan.TaskStateFailed, failed: true, exitCode: 1,
			events: []string{recv, setup, start, exit, notr}, starts: []time.Duration{0},
		},
		{
			name: "interval resets the count", jobType: caravan.JobTypeBatch, command: "exit 1 after 30s; exit 1 after 30s; exit 1 after 30s; exit 0",
			policy: fail(1, 35*time.Second, 10*time.Second), state: caravan.TaskStateComplete, restarts: 3,
			// 13 events: the task keeps the first and the 11 newest.
			events: []string{recv, start, exit, rest, start, exit, rest, start, exit, rest, start, exit},
			// Exits at 30s (a window opens), 70s (that window is over: a
			// new one), 110s (a new one again), each restart after 10s.
			starts: []time.Duration{0, 40 * time.Second, 80 * time.Second, 120 * time.Second},
		},
		{
			name: "delay mode waits out the interval", jobType: caravan.JobTypeBatch, command: "exit 1; exit 1; exit 0",
			policy: delayMode(1, time.Minute, 5*time.Second), state: caravan.TaskStateComplete, restarts: 2,
			events: []string{recv, setup, start, exit, rest, start, exit, rest, start, exit},
			starts: []time.Duration{0, 5 * time.Second, time.Minute},
		},
		{
			name: "service exit 0 is restarted", jobType: caravan.JobTypeService, command: "exit 0 after 1s; exit 0 after 1s; exit 0 after 1s",
			policy: fail(2, time.Hour, time.Second), state: caravan.TaskStateFailed, failed: true, restarts: 2,
			events: []string{recv, setup, start, exit, rest, start, exit, rest, start, exit, notr},
			starts: []time.Duration{0, 2 * time.Second, 4 * time.Second},
		},
		{
			name: "time limit is a timeout and not restarted", jobType: caravan.JobTypeBatch, command: "run",
			policy: fail(3, time.Hour, time.Second), edit: func(t *caravan.Task) { t.TimeLimit = caravan.Duration(30 * time.Second) },
			state: caravan.TaskStateTimeout, failed: true, exitCode: 143,
			events: []string{recv, setup, start, caravan.TaskEventTimeout, notr}, starts: []time.Duration{0},
		},
		{
			name: "oom", jobType: caravan.JobTypeBatch, command: "oom after 3s",
			policy: fail(0, time.Hour, time.Second), state: caravan.TaskStateOOM, failed: true, exitCode: 137,
			events: []string{recv, setup, start, caravan.TaskEventOOM, notr}, starts: []time.Duration{0},
		},
		{
			name: "oom is restarted like a failure", jobType: caravan.JobTypeBatch, command: "oom after 3s; exit 0",
			policy: fail(1, time.Hour, time.Second), state: caravan.TaskStateComplete, restarts: 1,
			events: []string{recv, setup, start, caravan.TaskEventOOM, rest, start, exit}, starts: []time.Duration{0, 4 * time.Second},
		},
		{
			name: "driver failure on start counts as an attempt", jobType: caravan.JobTypeBatch, command: "startfail; exit 0",
			policy: fail(1, time.Hour, 2*time.Second), state: caravan.TaskStateComplete, restarts: 1,
			events: []string{recv, setup, caravan.TaskEventDriverFailure, rest, start, exit}, starts: []time.Duration{2 * time.Second},
		},
		{
			name: "root is refused", jobType: caravan.JobTypeBatch, command: "exit 0",
			policy: fail(1, time.Hour, time.Second), edit: func(t *caravan.Task) { t.User = "root" },
			state: caravan.TaskStateFailed, failed: true,
			events: []string{recv, caravan.TaskEventSetupFailure},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			synctest.Test(t, func(t *testing.T) {
				t0 := time.Now()
				r := h.runner(t, testAlloc(tc.jobType, tc.command, tc.policy, tc.edit), nil)
				if err := run(r)(); err != nil {
					t.Fatalf("Run: %v", err)
				}
				st := r.State()
				if diff := cmp.Diff(tc.events, eventTypes(st)); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tc.starts, startOffsets(st, t0)); diff != "" {
					t.Errorf("start times (-want +got):\n%s", diff)
				}
				got := [4]any{st.State, st.Failed, st.ExitCode, st.Restarts}
				want := [4]any{tc.state, tc.failed, tc.exitCode, tc.restarts}
				if got != want {
					t.Errorf("state, failed, exit code, restarts = %v, want %v", got, want)
				}
				select {
				case <-r.Dead():
				default:
					t.Error("Dead not closed after Run returned")
				}
				rec := h.store.get(r.ID())
				if rec == nil || rec.Handle != nil || rec.State.State != tc.state {
					t.Errorf("persisted record = %+v, want state %s and no handle", rec, tc.state)
				}
			})
		})
	}
}

func TestTaskKill(t *testing.T) {
	tests := []struct {
		name    string
		command string
		killAt  time.Duration
		kill    Kill
		state   string
		events  []string
		endAt   time.Duration
	}{
		{
			name: "stop is cancelled", command: "run", killAt: 5 * time.Second, kill: Kill{Reason: "stopped by the server"},
			state:  caravan.TaskStateCancelled,
			events: []string{"received", "setup", "started", "killing", "killed"}, endAt: 5 * time.Second,
		},
		{
			name: "a task that ignores SIGTERM takes the kill timeout", command: "trap", killAt: 5 * time.Second, kill: Kill{},
			state:  caravan.TaskStateCancelled,
			events: []string{"received", "setup", "started", "killing", "killed"}, endAt: 8 * time.Second,
		},
		{
			name: "sibling failure", command: "run", killAt: time.Second,
			kill:   Kill{Event: caravan.TaskEventSiblingFailed, Reason: `task "db" failed`},
			state:  caravan.TaskStateCancelled,
			events: []string{"received", "setup", "started", "sibling_failed", "killing", "killed"}, endAt: time.Second,
		},
		{
			name: "lost", command: "run", killAt: time.Second,
			kill:   Kill{State: caravan.TaskStateLost, Event: caravan.TaskEventLost, Reason: "no server contact"},
			state:  caravan.TaskStateLost,
			events: []string{"received", "setup", "started", "lost", "killing", "killed"}, endAt: time.Second,
		},
		{
			name: "kill during a restart delay", command: "exit 1", killAt: 5 * time.Second, kill: Kill{},
			state:  caravan.TaskStateCancelled,
			events: []string{"received", "setup", "started", "exited", "restarting", "killed"}, endAt: 5 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			synctest.Test(t, func(t *testing.T) {
				t0 := time.Now()
				policy := &caravan.RestartPolicy{Attempts: 3, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(time.Minute), Mode: caravan.RestartModeFail}
				r := h.runner(t, testAlloc(caravan.JobTypeService, tc.command, policy, nil), nil)
				wait := run(r)
				time.Sleep(tc.killAt)
				r.Kill(tc.kill)
				if err := wait(); err != nil {
					t.Fatal(err)
				}
				st := r.State()
				if diff := cmp.Diff(tc.events, eventTypes(st)); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
				if st.State != tc.state {
					t.Errorf("state = %s, want %s", st.State, tc.state)
				}
				if end := st.Events[len(st.Events)-1].Time.Sub(t0); end != tc.endAt {
					t.Errorf("killed at %s, want %s", end, tc.endAt)
				}
				if h.world.Running(r.ID()) {
					t.Error("task still runs")
				}
			})
		})
	}
}

// TestTaskEventsInOrder checks that events are recorded in time order with
// their details.
func TestTaskEventsInOrder(t *testing.T) {
	h := newHarness(t)
	synctest.Test(t, func(t *testing.T) {
		policy := &caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(7 * time.Second), Mode: caravan.RestartModeFail}
		r := h.runner(t, testAlloc(caravan.JobTypeBatch, "exit 2 after 1s", policy, nil), nil)
		if err := run(r)(); err != nil {
			t.Fatal(err)
		}
		st := r.State()
		for i := 1; i < len(st.Events); i++ {
			if st.Events[i].Time.Before(st.Events[i-1].Time) {
				t.Errorf("event %d (%s) is older than event %d", i, st.Events[i].Type, i-1)
			}
		}
		var restart, exit *caravan.TaskEvent
		for _, e := range st.Events {
			switch e.Type {
			case caravan.TaskEventRestarting:
				restart = e
			case caravan.TaskEventExited:
				exit = e
			}
		}
		if restart == nil || restart.RestartIn.D() != 7*time.Second {
			t.Errorf("restarting event = %+v, want restart_in 7s", restart)
		}
		if exit == nil || exit.ExitCode != 2 || exit.Message != "exit code 2" {
			t.Errorf("exited event = %+v, want exit code 2", exit)
		}
	})
}

func TestTaskNoDriver(t *testing.T) {
	h := newHarness(t)
	alloc := testAlloc(caravan.JobTypeBatch, "exit 0", nil, nil)
	r, err := New(Config{Alloc: alloc, Task: alloc.Job.TaskGroups[0].Tasks[0], AllocDir: h.dir, Persister: h.store})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := r.State()
	if st.State != caravan.TaskStateFailed || len(st.Events) != 1 || st.Events[0].Type != caravan.TaskEventDriverFailure {
		t.Errorf("state = %+v, want failed with one driver_failure event", st)
	}
}

func TestTaskRestore(t *testing.T) {
	policy := &caravan.RestartPolicy{Attempts: 0, Mode: caravan.RestartModeFail}
	tests := []struct {
		name string
		// before runs on the world after the first runner detached.
		before func(w *fakedriver.World, id string)
		// after runs once the new runner re-attached.
		after    func(w *fakedriver.World, id string)
		state    string
		exitCode int
		events   []string
	}{
		{
			name:     "a running task is re-attached, not restarted",
			after:    func(w *fakedriver.World, id string) { w.Exit(id, 4) },
			state:    caravan.TaskStateFailed,
			exitCode: 4,
			events:   []string{"received", "setup", "started", "reattached", "exited", "not_restarting"},
		},
		{
			name:   "a task that exited while the agent was down reports its exit",
			before: func(w *fakedriver.World, id string) { w.Exit(id, 0) },
			state:  caravan.TaskStateComplete,
			events: []string{"received", "setup", "started", "reattached", "exited"},
		},
		{
			name: "a task the driver lost is lost",
			before: func(w *fakedriver.World, id string) {
				_ = fakedriver.New("exec", w).Destroy(context.Background(), id)
			},
			state:  caravan.TaskStateLost,
			events: []string{"received", "setup", "started", "lost"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			synctest.Test(t, func(t *testing.T) {
				alloc := testAlloc(caravan.JobTypeBatch, "run", policy, nil)
				ctx, cancel := context.WithCancel(context.Background())
				r1 := h.runner(t, alloc, nil)
				errc := make(chan error, 1)
				go func() { errc <- r1.Run(ctx) }()
				time.Sleep(time.Second)
				cancel()
				if err := <-errc; !errors.Is(err, context.Canceled) {
					t.Fatalf("detached Run = %v, want context.Canceled", err)
				}
				if !h.world.Running(r1.ID()) {
					t.Fatal("detaching stopped the task")
				}
				if tc.before != nil {
					tc.before(h.world, r1.ID())
				}
				rec := h.store.get(r1.ID())
				r2 := h.runner(t, alloc, rec)
				wait := run(r2)
				synctest.Wait()
				if tc.after != nil {
					tc.after(h.world, r1.ID())
				}
				if err := wait(); err != nil {
					t.Fatal(err)
				}
				st := r2.State()
				if diff := cmp.Diff(tc.events, eventTypes(st)); diff != "" {
					t.Errorf("events (-want +got):\n%s", diff)
				}
				if st.State != tc.state || st.ExitCode != tc.exitCode {
					t.Errorf("state, exit code = %s, %d, want %s, %d", st.State, st.ExitCode, tc.state, tc.exitCode)
				}
				var starts int
				for _, c := range h.world.Calls() {
					if c == "start "+r1.ID() {
						starts++
					}
				}
				if starts != 1 {
					t.Errorf("task started %d times, want 1", starts)
				}
			})
		})
	}
}

func TestTaskStats(t *testing.T) {
	h := newHarness(t)
	synctest.Test(t, func(t *testing.T) {
		r := h.runner(t, testAlloc(caravan.JobTypeService, "run", nil, nil), nil)
		wait := run(r)
		synctest.Wait()
		r.SampleStats(context.Background())
		if st := r.State(); st.Stats == nil || st.Stats.MemoryBytes != 1<<20 {
			t.Errorf("stats = %+v, want the driver's", st.Stats)
		}
		r.Kill(Kill{})
		if err := wait(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRestoredDeadTaskFreesItsRun(t *testing.T) {
	h := newHarness(t)
	alloc := testAlloc(caravan.JobTypeBatch, "run", nil, nil)
	rec := &Record{
		State:  &caravan.TaskState{State: caravan.TaskStateComplete},
		Handle: &driver.Handle{Driver: "exec", TaskID: alloc.ID + "/main"},
		Exited: true,
	}
	r := h.runner(t, alloc, rec)
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"destroy " + r.ID()}, h.world.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if got := h.store.get(r.ID()); got == nil || got.Handle != nil {
		t.Errorf("record = %+v, want the handle cleared", got)
	}
}

// TestEndOfRunIsOneRecord checks what a run persists: its handle at start,
// then its exit together with what comes next (never an exit without the
// decision, which a restarted agent would take for a task to start again),
// then the freed handle once the task is dead.
func TestEndOfRunIsOneRecord(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command string
		policy  *caravan.RestartPolicy
		states  []string
	}{
		{"complete", "exit 0", nil, []string{"running", "complete", "complete"}},
		{"restarted once", "exit 1", &caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail},
			[]string{"running", "pending", "running", "failed", "failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			synctest.Test(t, func(t *testing.T) {
				r := h.runner(t, testAlloc(caravan.JobTypeBatch, tc.command, tc.policy, nil), nil)
				if err := run(r)(); err != nil {
					t.Fatal(err)
				}
				var states []string
				for i, rec := range h.store.history {
					states = append(states, rec.State.State)
					if rec.Exited && rec.State.State == caravan.TaskStatePending && rec.NextStart.IsZero() {
						t.Errorf("record %d: an exit without a decision: %+v", i, rec)
					}
				}
				if diff := cmp.Diff(tc.states, states); diff != "" {
					t.Errorf("persisted states (-want +got):\n%s", diff)
				}
				if last := h.store.history[len(h.store.history)-1]; last.Handle != nil {
					t.Errorf("last record keeps the handle %+v", last.Handle)
				}
			})
		})
	}
}
