package allocrunner

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/taskrunner"
	"github.com/caravan-sched/caravan/internal/taskrunner/fakedriver"
)

type memPersister struct {
	mu   sync.Mutex
	recs map[string]*taskrunner.Record
}

func (p *memPersister) PutTask(_ context.Context, allocID, task string, rec *taskrunner.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recs[task] = rec
	return nil
}

// updates records what a runner reports.
type updates struct {
	mu   sync.Mutex
	list []*caravan.AllocClientUpdate
}

func (u *updates) add(up *caravan.AllocClientUpdate) {
	u.mu.Lock()
	u.list = append(u.list, up)
	u.mu.Unlock()
}

// statuses returns the client statuses reported, without repeats.
func (u *updates) statuses() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for _, up := range u.list {
		if len(out) == 0 || out[len(out)-1] != up.ClientStatus {
			out = append(out, up.ClientStatus)
		}
	}
	return out
}

func (u *updates) last() *caravan.AllocClientUpdate {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.list[len(u.list)-1]
}

func task(name, command string, edit ...func(*caravan.Task)) *caravan.Task {
	t := &caravan.Task{Name: name, Driver: caravan.DriverExec, Config: caravan.TaskConfig{Command: command},
		Resources: caravan.Resources{CPU: 100, Memory: 64}, KillTimeout: caravan.Duration(time.Second)}
	for _, e := range edit {
		e(t)
	}
	return t
}

func alloc(jobType string, tasks ...*caravan.Task) *caravan.Allocation {
	job := &caravan.Job{ID: "j", Type: jobType, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Tasks: tasks,
		Restart: &caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(10 * time.Second), Mode: caravan.RestartModeFail},
	}}}
	return &caravan.Allocation{ID: caravan.NewID(), JobID: "j", Job: job, TaskGroup: "g", Name: "j.g[0]", DesiredStatus: caravan.AllocDesiredRun}
}

type harness struct {
	world *fakedriver.World
	store *memPersister
	ups   *updates
	dir   string
}

func newHarness(t *testing.T) *harness {
	w := fakedriver.NewWorld()
	t.Cleanup(w.Close)
	return &harness{world: w, store: &memPersister{recs: map[string]*taskrunner.Record{}}, ups: &updates{}, dir: t.TempDir()}
}

func (h *harness) runner(t *testing.T, a *caravan.Allocation, restore map[string]*taskrunner.Record) *Runner {
	t.Helper()
	r, err := New(Config{
		Alloc: a, Drivers: map[string]driver.Driver{"exec": fakedriver.New("exec", h.world)},
		Dir: h.dir, TaskUser: "nobody", Persister: h.store, OnUpdate: h.ups.add, Restore: restore,
		StatsInterval: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func taskStates(u *caravan.AllocClientUpdate) map[string]string {
	out := map[string]string{}
	for name, ts := range u.TaskStates {
		out[name] = ts.State
	}
	return out
}

func TestAllocLifecycle(t *testing.T) {
	tests := []struct {
		name    string
		jobType string
		tasks   []*caravan.Task
		// act runs after the tasks started.
		act         func(r *Runner)
		statuses    []string
		reason      string
		description string
		states      map[string]string
		// siblingEvents are the event types of the named task.
		eventsOf string
		events   []string
	}{
		{
			name: "batch tasks complete", jobType: caravan.JobTypeBatch,
			tasks:    []*caravan.Task{task("a", "exit 0 after 1s"), task("b", "exit 0 after 5s")},
			statuses: []string{"pending", "running", "complete"}, reason: "complete",
			states: map[string]string{"a": "complete", "b": "complete"},
		},
		{
			name: "a failing task stops its sibling", jobType: caravan.JobTypeService,
			tasks: []*caravan.Task{task("web", "run"), task("db", "exit 1 after 2s; exit 2 after 2s")},
			// db fails at 2s, restarts at 12s, fails for good at 14s.
			statuses: []string{"pending", "running", "failed"}, reason: "failed",
			description: `task "db" failed: exit code 2`,
			states:      map[string]string{"web": "cancelled", "db": "failed"},
			eventsOf:    "web", events: []string{"received", "setup", "started", "sibling_failed", "killing", "killed"},
		},
		{
			name: "time limit decides the reason", jobType: caravan.JobTypeBatch,
			tasks: []*caravan.Task{task("a", "run"), task("b", "run", func(t *caravan.Task) {
				t.TimeLimit = caravan.Duration(3 * time.Second)
			})},
			statuses: []string{"pending", "running", "failed"}, reason: "timeout",
			states: map[string]string{"a": "cancelled", "b": "timeout"},
		},
		{
			name: "out of memory decides the reason", jobType: caravan.JobTypeBatch,
			tasks:    []*caravan.Task{task("a", "oom after 1s")},
			statuses: []string{"pending", "running", "failed"}, reason: "oom",
			states: map[string]string{"a": "oom"},
		},
		{
			name: "desired stop stops every task", jobType: caravan.JobTypeService,
			tasks: []*caravan.Task{task("a", "run"), task("b", "trap")},
			act: func(r *Runner) {
				a := r.ServerAlloc().ShallowCopy()
				a.DesiredStatus, a.DesiredDescription = caravan.AllocDesiredStop, "job stopped"
				r.Update(a)
			},
			statuses: []string{"pending", "running", "complete"}, reason: "cancelled",
			states:   map[string]string{"a": "cancelled", "b": "cancelled"},
			eventsOf: "b", events: []string{"received", "setup", "started", "killing", "killed"},
		},
		{
			name: "pending until every task started", jobType: caravan.JobTypeService,
			tasks:    []*caravan.Task{task("a", "run"), task("b", "startfail; run")},
			act:      func(r *Runner) { time.Sleep(20 * time.Second); r.Stop(taskrunner.Kill{}) },
			statuses: []string{"pending", "running", "complete"}, reason: "cancelled",
			states: map[string]string{"a": "cancelled", "b": "cancelled"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			synctest.Test(t, func(t *testing.T) {
				r := h.runner(t, alloc(tc.jobType, tc.tasks...), nil)
				errc := make(chan error, 1)
				go func() { errc <- r.Run(context.Background()) }()
				if tc.act != nil {
					time.Sleep(time.Second)
					tc.act(r)
				}
				if err := <-errc; err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.statuses, h.ups.statuses()); diff != "" {
					t.Errorf("client statuses (-want +got):\n%s", diff)
				}
				last := h.ups.last()
				if tc.description != "" && last.ClientDescription != tc.description {
					t.Errorf("description = %q, want %q", last.ClientDescription, tc.description)
				}
				if last.TerminalReason != tc.reason {
					t.Errorf("terminal reason = %q, want %q (%s)", last.TerminalReason, tc.reason, last.ClientDescription)
				}
				if diff := cmp.Diff(tc.states, taskStates(last)); diff != "" {
					t.Errorf("task states (-want +got):\n%s", diff)
				}
				if tc.eventsOf != "" {
					var got []string
					for _, e := range last.TaskStates[tc.eventsOf].Events {
						got = append(got, e.Type)
					}
					if diff := cmp.Diff(tc.events, got); diff != "" {
						t.Errorf("events of %s (-want +got):\n%s", tc.eventsOf, diff)
					}
				}
				if a := r.Alloc(); a.ClientStatus != last.ClientStatus || a.Job == nil {
					t.Errorf("Alloc() = %s with job %v, want %s with the job", a.ClientStatus, a.Job != nil, last.ClientStatus)
				}
				select {
				case <-r.Done():
				default:
					t.Error("Done not closed")
				}
			})
		})
	}
}

func TestAllocRestoreLost(t *testing.T) {
	h := newHarness(t)
	synctest.Test(t, func(t *testing.T) {
		a := alloc(caravan.JobTypeService, task("a", "run"), task("b", "run"))
		ctx, cancel := context.WithCancel(context.Background())
		r1 := h.runner(t, a, nil)
		errc := make(chan error, 1)
		go func() { errc <- r1.Run(ctx) }()
		time.Sleep(time.Second)
		cancel()
		<-errc
		// b's run vanished while the agent was down.
		if err := fakedriver.New("exec", h.world).Destroy(context.Background(), a.ID+"/b"); err != nil {
			t.Fatal(err)
		}
		h.store.mu.Lock()
		restore := map[string]*taskrunner.Record{"a": h.store.recs["a"], "b": h.store.recs["b"]}
		h.store.mu.Unlock()
		r2 := h.runner(t, a, restore)
		if err := r2.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		last := h.ups.last()
		if last.ClientStatus != caravan.AllocClientLost || last.TerminalReason != caravan.TaskStateLost {
			t.Errorf("client status, reason = %s, %s, want lost, lost", last.ClientStatus, last.TerminalReason)
		}
		if diff := cmp.Diff(map[string]string{"a": "cancelled", "b": "lost"}, taskStates(last)); diff != "" {
			t.Errorf("task states (-want +got):\n%s", diff)
		}
	})
}

func TestAllocStats(t *testing.T) {
	h := newHarness(t)
	synctest.Test(t, func(t *testing.T) {
		r := h.runner(t, alloc(caravan.JobTypeService, task("a", "run")), nil)
		errc := make(chan error, 1)
		go func() { errc <- r.Run(context.Background()) }()
		time.Sleep(1500 * time.Millisecond)
		if st := r.Alloc().TaskStates["a"].Stats; st == nil || st.MemoryBytes == 0 {
			t.Errorf("stats = %+v, want sampled figures", st)
		}
		r.Stop(taskrunner.Kill{})
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

func TestNewRefusesBadAllocations(t *testing.T) {
	noGroup := alloc(caravan.JobTypeBatch, task("a", "run"))
	noGroup.TaskGroup = "nope"
	noJob := alloc(caravan.JobTypeBatch, task("a", "run"))
	noJob.Job = nil
	noTasks := alloc(caravan.JobTypeBatch)
	for name, a := range map[string]*caravan.Allocation{"unknown group": noGroup, "no job": noJob, "no tasks": noTasks} {
		t.Run(name, func(t *testing.T) {
			_, err := New(Config{Alloc: a, Dir: t.TempDir(), Persister: &memPersister{}})
			if err == nil {
				t.Fatal("New accepted a bad allocation")
			}
		})
	}
}
