// Package taskrunner drives one task of an allocation through its life on
// the agent: it builds the task's directory and environment, starts it
// through its driver, waits for it, applies the group's restart policy,
// stops it when asked, and records every transition as a task event. It
// persists what a restarted agent needs to re-attach (the driver's handle,
// right after Start returns) through a Persister.
//
// The task's life, as Run drives it:
//
//	new task                          restored task (the agent restarted)
//	   │                                 │
//	received                             ├─ handle, exit not collected ─▶ Recover
//	   │                                 │      ├─ fails ─▶ lost ─▶ dead
//	setup ──fails──▶ setup_failure       │      └─ ok ─▶ reattached ─▶ running
//	   │             ─▶ dead (failed)    └─ otherwise ─▶ (destroy leftovers) ─▶ start
//	   ▼
//	start ◀────────────────────────────────┐
//	   ├─ driver.Start fails ─▶ driver_failure ─▶ restart policy
//	   ▼                                   │
//	started (handle persisted) ─▶ running  │
//	   │ driver.Wait returns               │
//	   ▼                                   │
//	exited | oom | timeout | driver_failure│
//	   │  (driver.Destroy frees the run)   │
//	   ▼                                   │
//	restart policy ── restarting (delay) ──┘
//	   └─ not_restarting ─▶ dead (complete, failed, oom, timeout)
//
//	Kill, at any point: [sibling_failed | lost] ─▶ killing ─▶ driver.Stop
//	   ─▶ killed ─▶ dead (cancelled, or the state the Kill names)
//
// Cancelling Run's context detaches: the task goes on running and a new
// Runner restored from the persisted Record re-attaches to it.
package taskrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// Record is what a task runner persists about its task, and what a new
// runner is restored from.
type Record struct {
	State *caravan.TaskState `json:"state"`
	// Handle names the task's current (or last) run to its driver; it is
	// kept until the driver freed what the run held.
	Handle *driver.Handle `json:"handle,omitempty"`
	// Exited says the exit of Handle's run is recorded in State already.
	Exited bool `json:"exited,omitempty"`
	// Window is the restart policy's bookkeeping.
	Window RestartWindow `json:"restart_window"`
	// NextStart is when a restart waiting out its delay may start.
	NextStart time.Time `json:"next_start,omitzero"`
}

// Persister stores task records. The allocation's store implements it.
type Persister interface {
	PutTask(ctx context.Context, allocID, task string, rec *Record) error
}

// Kill asks a task to stop for good.
type Kill struct {
	// State is the terminal state the task gets when the stop ends it:
	// cancelled (the default) or lost.
	State string
	// Event, when set, is recorded before killing: sibling_failed, lost.
	Event string
	// Reason explains the stop in the events.
	Reason string
}

// Config is what a Runner needs.
type Config struct {
	// Alloc is the allocation, with its job. The runner only reads it.
	Alloc *caravan.Allocation
	Task  *caravan.Task
	// Driver runs the task; nil means the task's driver is not available
	// on this node (the task fails with a driver_failure event).
	Driver driver.Driver
	Node   NodeInfo
	// AllocDir is the allocation's directory: AllocDir/alloc is shared by
	// the group's tasks (logs in AllocDir/alloc/logs), AllocDir/<task> is
	// this task's.
	AllocDir string
	// TaskUser runs exec tasks that name no user; AllowRoot lets a job
	// run tasks as root.
	TaskUser  string
	AllowRoot bool
	// LogMaxFileSize (bytes) and LogMaxFiles bound the rotated logs.
	LogMaxFileSize int64
	LogMaxFiles    int
	Persister      Persister
	// OnChange is called after every change of the task's state. It must
	// not block.
	OnChange func()
	// Restore, when set, is the record a previous agent process left.
	Restore *Record
	Logger  *slog.Logger
}

// Runner runs one task. Run drives it; the other methods are safe to call
// from any goroutine.
type Runner struct {
	cfg    Config
	id     string
	log    *slog.Logger
	policy restartPolicy
	// tc is built by setup.
	tc *driver.TaskConfig

	killed chan struct{} // closed by the first Kill
	dead   chan struct{} // closed when the state is terminal

	// hold (Run's goroutine only) gathers the changes of the end of a run
	// into one persisted change: held says some are waiting, closeDead
	// that finish waits for them to close dead.
	hold, held, closeDead bool

	mu        sync.Mutex
	kill      *Kill
	state     *caravan.TaskState
	handle    *driver.Handle
	exited    bool
	nextStart time.Time
}

// New returns a runner for a task of an allocation.
func New(cfg Config) (*Runner, error) {
	if cfg.Alloc == nil || cfg.Alloc.Job == nil || cfg.Task == nil {
		return nil, fmt.Errorf("task runner: %w: allocation, job and task are required", caravan.ErrInvalid)
	}
	tg := cfg.Alloc.Job.LookupTaskGroup(cfg.Alloc.TaskGroup)
	if tg == nil {
		return nil, fmt.Errorf("task runner: %w: job %s has no task group %q", caravan.ErrInvalid, cfg.Alloc.JobID, cfg.Alloc.TaskGroup)
	}
	if cfg.Persister == nil || cfg.AllocDir == "" {
		return nil, fmt.Errorf("task runner: %w: persister and allocation dir are required", caravan.ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func() {}
	}
	r := &Runner{
		cfg:    cfg,
		id:     cfg.Alloc.ID + "/" + cfg.Task.Name,
		log:    cfg.Logger.With("task", cfg.Task.Name),
		killed: make(chan struct{}),
		dead:   make(chan struct{}),
		state:  &caravan.TaskState{State: caravan.TaskStatePending},
	}
	r.policy.batch = cfg.Alloc.Job.Type == caravan.JobTypeBatch
	if tg.Restart != nil {
		r.policy.policy = *tg.Restart
	} else {
		r.policy.policy = *caravan.DefaultRestartPolicy(cfg.Alloc.Job.Type)
	}
	if rec := cfg.Restore; rec != nil && rec.State != nil {
		r.state = rec.State.Copy()
		r.handle = rec.Handle
		r.exited = rec.Exited
		r.nextStart = rec.NextStart
		r.policy.window = rec.Window
		if caravan.TaskStateTerminal(r.state.State) {
			close(r.dead)
		}
	}
	return r, nil
}

// ID is the task's id for its driver: "<alloc id>/<task>".
func (r *Runner) ID() string { return r.id }

// Name is the task's name.
func (r *Runner) Name() string { return r.cfg.Task.Name }

// State returns a copy of the task's state.
func (r *Runner) State() *caravan.TaskState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.Copy()
}

// Dead is closed once the task's state is terminal.
func (r *Runner) Dead() <-chan struct{} { return r.dead }

// Kill asks the task to stop for good. The first Kill wins; Run records
// the stop and returns once the task is dead.
func (r *Runner) Kill(k Kill) {
	if k.State == "" {
		k.State = caravan.TaskStateCancelled
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kill != nil {
		return
	}
	r.kill = &k
	close(r.killed)
}

func (r *Runner) killRequest() *Kill {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kill
}

// SampleStats asks the driver for the task's resource use and keeps it in
// the state (without persisting or reporting it on its own).
func (r *Runner) SampleStats(ctx context.Context) {
	r.mu.Lock()
	running := r.state.State == caravan.TaskStateRunning && r.cfg.Driver != nil
	r.mu.Unlock()
	if !running {
		return
	}
	st, err := r.cfg.Driver.Stats(ctx, r.id)
	if err != nil {
		r.log.Debug("sample task stats", "error", err)
		return
	}
	r.mu.Lock()
	if r.state.State == caravan.TaskStateRunning {
		r.state.Stats = st
	}
	r.mu.Unlock()
}

// Run drives the task until it is dead (it returns nil) or ctx ends (it
// returns ctx's error and leaves the task running).
func (r *Runner) Run(ctx context.Context) error {
	select {
	case <-r.dead:
		r.freeLeftovers(ctx)
		return nil
	default:
	}
	if r.cfg.Driver == nil {
		r.finish(ctx, caravan.TaskStateFailed, event(caravan.TaskEventDriverFailure,
			fmt.Sprintf("driver %q is not available on this node", r.cfg.Task.Driver)))
		return nil
	}
	live := false
	switch rec := r.cfg.Restore; {
	case rec == nil:
		r.note(nil, event(caravan.TaskEventReceived, "task received by the agent"))
		if err := r.setup(); err != nil {
			r.finish(ctx, caravan.TaskStateFailed, event(caravan.TaskEventSetupFailure, err.Error()))
			return nil
		}
		r.note(nil, event(caravan.TaskEventSetup, "task directory built"))
	case r.handle != nil && !r.exited:
		if !r.recover(ctx) {
			return ctxErr(ctx)
		}
		live = true
	default:
		r.freeLeftovers(ctx)
		if err := r.setup(); err != nil {
			r.finish(ctx, caravan.TaskStateFailed, event(caravan.TaskEventSetupFailure, err.Error()))
			return nil
		}
	}
	for {
		if !live {
			if !r.waitForStart(ctx) {
				if err := ctx.Err(); err != nil {
					return err
				}
				k := r.killRequest()
				r.finishKilled(ctx, k, nil, "the task was not running")
				return nil
			}
			if err := r.start(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.note(func(st *caravan.TaskState) { st.State = caravan.TaskStatePending },
					event(caravan.TaskEventDriverFailure, "start: "+err.Error()))
				if r.afterRun(ctx, nil) {
					return nil
				}
				continue
			}
		}
		live = false
		res, err := r.wait(ctx)
		if err != nil {
			return err
		}
		if r.afterExit(ctx, res) {
			return nil
		}
	}
}

func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// recover re-attaches to the run the restored handle names. It reports
// whether the task runs (or ran) under the driver again; when it does not,
// the task is dead (lost) unless ctx ended.
func (r *Runner) recover(ctx context.Context) bool {
	if err := r.setup(); err != nil {
		r.log.Warn("rebuild task config after restart", "error", err)
	}
	err := r.cfg.Driver.Recover(ctx, r.handle)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		r.log.Warn("re-attach to task", "error", err)
		r.destroy(ctx)
		r.finish(ctx, caravan.TaskStateLost, event(caravan.TaskEventLost,
			"cannot re-attach to the task after an agent restart: "+err.Error()))
		return false
	}
	r.note(func(st *caravan.TaskState) { st.State = caravan.TaskStateRunning },
		event(caravan.TaskEventReattached, "re-attached to the running task after an agent restart"))
	return true
}

// freeLeftovers frees what a run the agent lost track of may hold: a run
// whose exit is recorded but not yet destroyed, or (without a handle) a
// run started just before the agent stopped, before its handle was
// written.
func (r *Runner) freeLeftovers(ctx context.Context) {
	if r.cfg.Driver == nil {
		return
	}
	r.mu.Lock()
	h := r.handle
	r.mu.Unlock()
	if h == nil && caravan.TaskStateTerminal(r.State().State) {
		return
	}
	r.destroy(ctx)
}

// destroy frees the task's last run in its driver and forgets its handle.
func (r *Runner) destroy(ctx context.Context) {
	if r.freeRun(ctx) {
		r.persist(ctx)
	}
}

// freeRun frees the task's last run in its driver and forgets its handle,
// without persisting that. It reports whether there was a handle to
// forget. A record that still names the freed run is harmless: destroying
// it again finds nothing.
func (r *Runner) freeRun(ctx context.Context) bool {
	if err := r.cfg.Driver.Destroy(context.WithoutCancel(ctx), r.id); err != nil && !errors.Is(err, driver.ErrTaskNotFound) {
		r.log.Warn("destroy task run", "error", err)
		return false
	}
	r.mu.Lock()
	had := r.handle != nil
	r.handle, r.exited = nil, false
	r.mu.Unlock()
	return had
}

// waitForStart waits out a restart delay. It reports false when the task
// was killed or ctx ended meanwhile.
func (r *Runner) waitForStart(ctx context.Context) bool {
	select {
	case <-r.killed:
		return false
	case <-ctx.Done():
		return false
	default:
	}
	r.mu.Lock()
	wait := time.Until(r.nextStart)
	r.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.killed:
		return false
	case <-ctx.Done():
		return false
	}
}

// start starts a run and persists its handle before anything else.
func (r *Runner) start(ctx context.Context) error {
	h, err := r.cfg.Driver.Start(ctx, r.tc)
	if err != nil {
		return err
	}
	now := time.Now()
	r.change(ctx, func(st *caravan.TaskState) {
		r.handle, r.exited, r.nextStart = h, false, time.Time{}
		st.State = caravan.TaskStateRunning
		st.StartedAt = now
		if !h.StartedAt.IsZero() {
			st.StartedAt = h.StartedAt
		}
		st.FinishedAt = time.Time{}
		st.ExitCode, st.Signal, st.Stats = 0, 0, nil
		if st.Restarts > 0 {
			st.LastRestart = now
		}
	}, event(caravan.TaskEventStarted, "task started by driver "+r.cfg.Driver.Name()))
	return nil
}

type waitResult struct {
	res *driver.ExitResult
	err error
}

// wait waits for the current run to end, stopping it when a Kill comes.
// It returns an error only when ctx ended.
func (r *Runner) wait(ctx context.Context) (*driver.ExitResult, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch := make(chan waitResult, 1)
	go func() { // owned: every path below receives from ch
		res, err := r.cfg.Driver.Wait(wctx, r.id)
		ch <- waitResult{res, err}
	}()
	killed := r.killed
	for {
		select {
		case w := <-ch:
			if w.err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return &driver.ExitResult{ExitCode: -1, Err: "wait: " + w.err.Error(), FinishedAt: time.Now()}, nil
			}
			return w.res, nil
		case <-killed:
			killed = nil
			r.stopRun(ctx)
		case <-ctx.Done():
			cancel()
			<-ch
			return nil, ctx.Err()
		}
	}
}

// stopRun records why the task is being killed and asks the driver to
// stop it.
func (r *Runner) stopRun(ctx context.Context) {
	k := r.killRequest()
	kt := r.killTimeout()
	var evs []*caravan.TaskEvent
	if k.Event != "" {
		evs = append(evs, event(k.Event, k.Reason))
	}
	msg := fmt.Sprintf("sending SIGTERM, SIGKILL after %s", kt)
	if k.Reason != "" {
		msg = k.Reason + ": " + msg
	}
	evs = append(evs, event(caravan.TaskEventKilling, msg))
	r.note(nil, evs...)
	if err := r.cfg.Driver.Stop(ctx, r.id, kt, 0); err != nil && !errors.Is(err, driver.ErrTaskNotFound) {
		r.log.Warn("stop task", "error", err)
		r.note(nil, event(caravan.TaskEventDriverFailure, "stop: "+err.Error()))
		if err := r.cfg.Driver.Destroy(context.WithoutCancel(ctx), r.id); err != nil {
			r.log.Warn("destroy task after a failed stop", "error", err)
		}
	}
}

func (r *Runner) killTimeout() time.Duration {
	if kt := r.cfg.Task.KillTimeout.D(); kt > 0 {
		return kt
	}
	return caravan.DefaultKillTimeout.D()
}

// afterExit records how a run ended and decides what comes next, persists
// both in one change (with the run's handle still set, so that a restarted
// agent neither reports the exit again nor mistakes the freed run for a
// lost one, nor runs a finished task again), then frees the run. A task
// that restarts persists the freed handle with its next start; a dead one
// at once. It reports whether the task is dead.
func (r *Runner) afterExit(ctx context.Context, res *driver.ExitResult) bool {
	r.hold = true
	dead := r.decideAfterExit(ctx, res)
	r.release(ctx)
	if r.freeRun(ctx) && dead {
		r.persist(ctx)
	}
	return dead
}

func (r *Runner) decideAfterExit(ctx context.Context, res *driver.ExitResult) bool {
	k := r.killRequest()
	if k != nil && res.Killed {
		r.recordExit(ctx, res, event(caravan.TaskEventKilled, "task killed"))
		r.finishKilled(ctx, k, res, "")
		return true
	}
	r.recordExit(ctx, res, exitEvent(res, r.cfg.Task))
	if k != nil {
		// It ended on its own while being stopped.
		r.finish(ctx, res.State(), nil)
		return true
	}
	return r.afterRun(ctx, res)
}

// release ends a hold: it persists and reports the changes gathered, then
// closes dead when finish asked for it.
func (r *Runner) release(ctx context.Context) {
	r.hold = false
	if r.held {
		r.held = false
		r.persist(ctx)
		r.cfg.OnChange()
	}
	if r.closeDead {
		r.closeDead = false
		close(r.dead)
	}
}

// recordExit records the end of a run.
func (r *Runner) recordExit(ctx context.Context, res *driver.ExitResult, ev *caravan.TaskEvent) {
	r.change(ctx, func(st *caravan.TaskState) {
		r.exited = true
		st.ExitCode, st.Signal = res.ExitCode, res.Signal
		st.FinishedAt = res.FinishedAt
		if st.FinishedAt.IsZero() {
			st.FinishedAt = time.Now()
		}
		if res.Stats != nil {
			st.Stats = res.Stats
		}
		st.State = caravan.TaskStatePending
	}, ev)
}

// afterRun applies the restart policy to a run that ended (res) or could
// not start (nil). It reports whether the task is dead.
func (r *Runner) afterRun(ctx context.Context, res *driver.ExitResult) bool {
	now := time.Now()
	d := r.policy.decide(now, res)
	if !d.restart {
		state := caravan.TaskStateFailed
		if res != nil {
			state = res.State()
		}
		if state == caravan.TaskStateComplete && !r.policy.batch {
			// A service out of restarts failed, however it exited.
			state = caravan.TaskStateFailed
		}
		var ev *caravan.TaskEvent
		if state != caravan.TaskStateComplete {
			ev = event(caravan.TaskEventNotRestarting, d.reason)
		}
		r.finish(ctx, state, ev)
		return true
	}
	ev := event(caravan.TaskEventRestarting, d.reason)
	ev.RestartIn = caravan.Duration(d.delay)
	if ev.Message == "" {
		ev.Message = "restarting in " + d.delay.String()
	}
	r.change(ctx, func(st *caravan.TaskState) {
		st.Restarts++
		st.State = caravan.TaskStatePending
		r.nextStart = now.Add(d.delay)
	}, ev)
	return false
}

// finishKilled ends a task that a Kill stopped. res is nil when no run was
// live.
func (r *Runner) finishKilled(ctx context.Context, k *Kill, res *driver.ExitResult, msg string) {
	var evs []*caravan.TaskEvent
	if res == nil {
		if k.Event != "" {
			evs = append(evs, event(k.Event, k.Reason))
		}
		text := msg
		if k.Reason != "" {
			text = k.Reason + ": " + msg
		}
		evs = append(evs, event(caravan.TaskEventKilled, text))
	}
	r.finish(ctx, k.State, nil, evs...)
}

// finish makes the task dead with a terminal state.
func (r *Runner) finish(ctx context.Context, state string, ev *caravan.TaskEvent, more ...*caravan.TaskEvent) {
	evs := more
	if ev != nil {
		evs = append([]*caravan.TaskEvent{ev}, more...)
	}
	r.change(ctx, func(st *caravan.TaskState) {
		st.State = state
		switch state {
		case caravan.TaskStateFailed, caravan.TaskStateTimeout, caravan.TaskStateOOM, caravan.TaskStateLost:
			st.Failed = true
		}
		if st.FinishedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
			st.FinishedAt = time.Now()
		}
		r.nextStart = time.Time{}
	}, evs...)
	if r.hold {
		r.closeDead = true
		return
	}
	close(r.dead)
}

// change applies f to the state, appends the events, persists the record
// and tells the owner; during a hold, release does the last two.
func (r *Runner) change(ctx context.Context, f func(*caravan.TaskState), evs ...*caravan.TaskEvent) {
	r.apply(f, evs)
	if r.hold {
		r.held = true
		return
	}
	r.persist(ctx)
	r.cfg.OnChange()
}

// note is change without persisting: for changes that a restarted agent
// can do without (events of a task that has not started, or that is being
// killed), which the next persisted change carries anyway.
func (r *Runner) note(f func(*caravan.TaskState), evs ...*caravan.TaskEvent) {
	r.apply(f, evs)
	if r.hold {
		r.held = true
		return
	}
	r.cfg.OnChange()
}

func (r *Runner) apply(f func(*caravan.TaskState), evs []*caravan.TaskEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f != nil {
		f(r.state)
	}
	for _, e := range evs {
		if e != nil {
			r.state.AppendEvent(e)
		}
	}
}

func (r *Runner) persist(ctx context.Context) {
	r.mu.Lock()
	rec := &Record{
		State:     r.state.Copy(),
		Handle:    r.handle,
		Exited:    r.exited,
		Window:    r.policy.window,
		NextStart: r.nextStart,
	}
	r.mu.Unlock()
	if err := r.cfg.Persister.PutTask(context.WithoutCancel(ctx), r.cfg.Alloc.ID, r.cfg.Task.Name, rec); err != nil {
		r.log.Error("persist task state", "error", err)
	}
}

func event(typ, msg string) *caravan.TaskEvent {
	return &caravan.TaskEvent{Type: typ, Time: time.Now(), Message: msg}
}

// exitEvent describes how a run ended.
func exitEvent(res *driver.ExitResult, task *caravan.Task) *caravan.TaskEvent {
	var ev *caravan.TaskEvent
	switch {
	case res.OOMKilled:
		ev = event(caravan.TaskEventOOM, fmt.Sprintf("out of memory: the task exceeded its limit of %d MB", task.Resources.Memory))
	case res.TimedOut:
		ev = event(caravan.TaskEventTimeout, fmt.Sprintf("time limit of %s reached", task.TimeLimit))
	case res.Err != "":
		ev = event(caravan.TaskEventDriverFailure, res.Err)
	case res.Signal != 0:
		ev = event(caravan.TaskEventExited, fmt.Sprintf("killed by signal %d", res.Signal))
	default:
		ev = event(caravan.TaskEventExited, fmt.Sprintf("exit code %d", res.ExitCode))
	}
	ev.ExitCode, ev.Signal = res.ExitCode, res.Signal
	return ev
}
