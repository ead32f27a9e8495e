// Package allocrunner runs the tasks of one allocation together on the
// agent, one task runner each, and folds their states into the
// allocation's client status and terminal reason.
//
// The allocation's life, as Run drives it:
//
//	                 Run: build alloc/<id>/alloc/{logs,data,tmp}, start every task
//	                   │
//	                   ▼
//	pending ──every task has started──▶ running
//	   │                                  │
//	   ├─ a task dead for good: failed, timeout, oom or lost
//	   │     └─▶ its siblings are killed (sibling_failed, cancelled)
//	   │            └─▶ all dead ─▶ failed (lost, when the task was lost);
//	   │                            terminal reason: that task's state
//	   ├─ every task complete ─▶ complete (reason complete)
//	   └─ Stop (desired stop or evict, a user's stop, no servers for too long)
//	         └─▶ every task killed ─▶ complete (reason cancelled),
//	                                  or lost when the stop says so
//
// Every change is reported through Config.OnUpdate as an
// AllocClientUpdate; the agent batches them to the servers. Cancelling
// Run's context detaches from the tasks and leaves them running.
package allocrunner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

// DefaultStatsInterval is how often task stats are sampled.
const DefaultStatsInterval = 10 * time.Second

// Config is what a Runner needs.
type Config struct {
	// Alloc is the allocation as the servers sent it, with its job.
	Alloc *caravan.Allocation
	// Drivers by name; a task whose driver is missing fails.
	Drivers map[string]driver.Driver
	// Dir is the allocation's directory, <data dir>/alloc/<alloc id>.
	Dir  string
	Node taskrunner.NodeInfo
	// TaskUser, AllowRoot and the log limits go to the task runners.
	TaskUser       string
	AllowRoot      bool
	LogMaxFileSize int64
	LogMaxFiles    int
	// Persister stores task records.
	Persister taskrunner.Persister
	// OnUpdate receives every change of the allocation's client state. It
	// must not block.
	OnUpdate func(*caravan.AllocClientUpdate)
	// Restore holds the task records a previous agent process left, by
	// task name; nil for a new allocation.
	Restore map[string]*taskrunner.Record
	// StatsInterval is how often task stats are sampled.
	StatsInterval time.Duration
	Logger        *slog.Logger
}

// Runner runs one allocation.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	tasks   []*taskrunner.Runner
	drivers []driver.Driver // of each task; nil when missing
	changed chan struct{}
	done    chan struct{}

	mu             sync.Mutex
	alloc          *caravan.Allocation
	clientStatus   string
	description    string
	terminalReason string
	// decider is the task whose failure decided the allocation's fate.
	decider  string
	everRan  bool
	stopping *taskrunner.Kill
}

// New returns a runner for the allocation; it starts nothing.
func New(cfg Config) (*Runner, error) {
	a := cfg.Alloc
	if a == nil || a.Job == nil {
		return nil, fmt.Errorf("allocation runner: %w: allocation without a job", caravan.ErrInvalid)
	}
	tg := a.Job.LookupTaskGroup(a.TaskGroup)
	if tg == nil {
		return nil, fmt.Errorf("allocation runner: %w: job %s has no task group %q", caravan.ErrInvalid, a.JobID, a.TaskGroup)
	}
	if len(tg.Tasks) == 0 {
		return nil, fmt.Errorf("allocation runner: %w: task group %q has no tasks", caravan.ErrInvalid, a.TaskGroup)
	}
	if cfg.Dir == "" || cfg.Persister == nil {
		return nil, fmt.Errorf("allocation runner: %w: directory and persister are required", caravan.ErrInvalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnUpdate == nil {
		cfg.OnUpdate = func(*caravan.AllocClientUpdate) {}
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	r := &Runner{
		cfg:          cfg,
		log:          cfg.Logger.With("alloc_id", a.ID),
		changed:      make(chan struct{}, 1),
		done:         make(chan struct{}),
		alloc:        a,
		clientStatus: caravan.AllocClientPending,
	}
	for _, t := range tg.Tasks {
		if t == nil {
			return nil, fmt.Errorf("allocation runner: %w: task group %q holds a null task", caravan.ErrInvalid, a.TaskGroup)
		}
		tr, err := taskrunner.New(taskrunner.Config{
			Alloc: a, Task: t, Driver: cfg.Drivers[driverName(t)], Node: cfg.Node,
			AllocDir: cfg.Dir, TaskUser: cfg.TaskUser, AllowRoot: cfg.AllowRoot,
			LogMaxFileSize: cfg.LogMaxFileSize, LogMaxFiles: cfg.LogMaxFiles,
			Persister: cfg.Persister, OnChange: r.notify, Restore: cfg.Restore[t.Name],
			Logger: r.log,
		})
		if err != nil {
			return nil, fmt.Errorf("allocation runner: %w", err)
		}
		r.tasks = append(r.tasks, tr)
		r.drivers = append(r.drivers, cfg.Drivers[driverName(t)])
	}
	r.fold()
	return r, nil
}

// driverName is the task's driver, inferred as Canonicalize does when the
// job did not say.
func driverName(t *caravan.Task) string {
	switch {
	case t.Driver != "":
		return t.Driver
	case t.Config.Image != "":
		return caravan.DriverDocker
	}
	return caravan.DriverExec
}

// ID is the allocation's id.
func (r *Runner) ID() string { return r.cfg.Alloc.ID }

// Dir is the allocation's directory.
func (r *Runner) Dir() string { return r.cfg.Dir }

// Task returns the runner of the named task, or nil.
func (r *Runner) Task(name string) *taskrunner.Runner {
	for _, t := range r.tasks {
		if t.Name() == name {
			return t
		}
	}
	return nil
}

// Done is closed when Run returned because every task is dead.
func (r *Runner) Done() <-chan struct{} { return r.done }

func (r *Runner) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Run starts the tasks and follows them until every one is dead (it
// returns nil) or ctx ends (it returns ctx's error, leaving them running).
func (r *Runner) Run(ctx context.Context) error {
	if err := r.buildDir(); err != nil {
		// The tasks fail their setup with the details.
		r.log.Error("build allocation directory", "error", err)
	}
	// The first report, before any task moves: the allocation arrived
	// (pending), or what a restored one was.
	allDead := r.report()
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, t := range r.tasks {
		wg.Go(func() {
			if err := t.Run(ctx); err != nil && ctx.Err() == nil {
				r.log.Error("task runner", "task", t.Name(), "error", err)
			}
		})
	}
	if allDead {
		wg.Wait()
		close(r.done)
		return nil
	}
	tick := time.NewTicker(r.cfg.StatsInterval)
	defer tick.Stop()
	for {
		select {
		case <-r.changed:
			if r.report() {
				wg.Wait()
				close(r.done)
				return nil
			}
		case <-tick.C:
			for _, t := range r.tasks {
				t.SampleStats(ctx)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// buildDir makes the allocation's shared folder: logs for the agent,
// data and tmp for the tasks (anyone may write, as in /tmp).
func (r *Runner) buildDir() error {
	shared := filepath.Join(r.cfg.Dir, taskrunner.SharedDir)
	if err := os.MkdirAll(filepath.Join(shared, taskrunner.LogsDir), 0o755); err != nil {
		return fmt.Errorf("create allocation directory: %w", err)
	}
	for _, sub := range []string{"data", "tmp"} {
		dir := filepath.Join(shared, sub)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create allocation directory: %w", err)
		}
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
			return fmt.Errorf("open allocation directory: %w", err)
		}
	}
	return nil
}

// report folds the task states, kills siblings of a failed task, and sends
// an update. It reports whether every task is dead.
func (r *Runner) report() bool {
	kill := r.fold()
	if kill != nil {
		for _, t := range r.tasks {
			t.Kill(*kill)
		}
	}
	u, allDead := r.update()
	r.cfg.OnUpdate(u)
	return allDead
}

// fold computes the client status from the task states. It returns the
// kill to send to every task when one failed for good.
func (r *Runner) fold() *taskrunner.Kill {
	r.mu.Lock()
	defer r.mu.Unlock()
	var kill *taskrunner.Kill
	allDead, allStarted, anyCancelled := true, true, false
	for _, t := range r.tasks {
		st := t.State()
		if !caravan.TaskStateTerminal(st.State) {
			allDead = false
		}
		if st.StartedAt.IsZero() {
			allStarted = false
		}
		switch st.State {
		case caravan.TaskStateFailed, caravan.TaskStateTimeout, caravan.TaskStateOOM, caravan.TaskStateLost:
			if r.decider == "" {
				r.decider = t.Name()
				kill = &taskrunner.Kill{
					State: caravan.TaskStateCancelled, Event: caravan.TaskEventSiblingFailed,
					Reason: fmt.Sprintf("task %q %s", t.Name(), failedText(st.State)),
				}
			}
		case caravan.TaskStateCancelled:
			anyCancelled = true
		}
	}
	if allStarted {
		r.everRan = true
	}
	switch {
	case allDead && r.decider != "":
		st := r.Task(r.decider).State()
		r.clientStatus, r.terminalReason = caravan.AllocClientFailed, st.State
		if st.State == caravan.TaskStateLost {
			r.clientStatus = caravan.AllocClientLost
		}
		r.description = fmt.Sprintf("task %q %s", r.decider, failedText(st.State))
		if e := endEvent(st); e != nil && e.Message != "" {
			r.description += ": " + e.Message
		}
	case allDead && anyCancelled:
		r.clientStatus, r.terminalReason = caravan.AllocClientComplete, caravan.TaskStateCancelled
		r.description = "stopped"
		if r.stopping != nil && r.stopping.Reason != "" {
			r.description = r.stopping.Reason
		}
	case allDead:
		r.clientStatus, r.terminalReason = caravan.AllocClientComplete, caravan.TaskStateComplete
		r.description = "all tasks completed"
	case r.everRan:
		r.clientStatus, r.description = caravan.AllocClientRunning, "tasks are running"
	default:
		r.clientStatus, r.description = caravan.AllocClientPending, "tasks are starting"
	}
	return kill
}

// endEvent is the newest event that tells how the task ended.
func endEvent(st *caravan.TaskState) *caravan.TaskEvent {
	for i := len(st.Events) - 1; i >= 0; i-- {
		switch e := st.Events[i]; e.Type {
		case caravan.TaskEventExited, caravan.TaskEventOOM, caravan.TaskEventTimeout, caravan.TaskEventDriverFailure,
			caravan.TaskEventSetupFailure, caravan.TaskEventLost:
			return e
		}
	}
	return nil
}

func failedText(state string) string {
	switch state {
	case caravan.TaskStateTimeout:
		return "reached its time limit"
	case caravan.TaskStateOOM:
		return "ran out of memory"
	case caravan.TaskStateLost:
		return "was lost"
	}
	return "failed"
}

// update builds the report of the current state.
func (r *Runner) update() (*caravan.AllocClientUpdate, bool) {
	states := make(map[string]*caravan.TaskState, len(r.tasks))
	for _, t := range r.tasks {
		states[t.Name()] = t.State()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := &caravan.AllocClientUpdate{
		ID: r.cfg.Alloc.ID, ClientStatus: r.clientStatus, ClientDescription: r.description,
		TerminalReason: r.terminalReason, TaskStates: states,
	}
	allDead := true
	for _, ts := range states {
		if !caravan.TaskStateTerminal(ts.State) {
			allDead = false
		}
	}
	return u, allDead && r.clientStatus != caravan.AllocClientPending && r.clientStatus != caravan.AllocClientRunning
}

// Update takes the servers' newer view of the allocation. A desired stop
// or evict stops every task.
func (r *Runner) Update(a *caravan.Allocation) {
	r.mu.Lock()
	cur := r.alloc
	if a.Job == nil {
		a = a.ShallowCopy()
		a.Job = cur.Job
	}
	r.alloc = a
	r.mu.Unlock()
	if a.ServerTerminal() {
		reason := "stopped by the server"
		if a.DesiredDescription != "" {
			reason += ": " + a.DesiredDescription
		}
		r.Stop(taskrunner.Kill{Reason: reason})
	}
}

// Stop kills every task that is not dead; the first Stop's kill wins.
func (r *Runner) Stop(k taskrunner.Kill) {
	r.mu.Lock()
	if r.stopping == nil {
		r.stopping = &k
	}
	r.mu.Unlock()
	for _, t := range r.tasks {
		t.Kill(k)
	}
}

// Stopping reports whether Stop was called.
func (r *Runner) Stopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping != nil
}

// Alloc returns the allocation as the servers last sent it, with this
// agent's client status and task states.
func (r *Runner) Alloc() *caravan.Allocation {
	u, _ := r.update()
	r.mu.Lock()
	a := r.alloc.ShallowCopy()
	r.mu.Unlock()
	a.ClientStatus, a.ClientDescription, a.TerminalReason, a.TaskStates = u.ClientStatus, u.ClientDescription, u.TerminalReason, u.TaskStates
	return a
}

// ServerAlloc returns the allocation as the servers last sent it.
func (r *Runner) ServerAlloc() *caravan.Allocation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.alloc
}

// FreeTasks asks the drivers to free what the tasks' last runs may still
// hold. A task runner does that when its task dies; this catches a run
// whose freeing failed. Call it once Run returned.
func (r *Runner) FreeTasks(ctx context.Context) error {
	var errs []error
	for i, t := range r.tasks {
		if d := r.drivers[i]; d != nil {
			if err := d.Destroy(ctx, t.ID()); err != nil && !errors.Is(err, driver.ErrTaskNotFound) {
				errs = append(errs, fmt.Errorf("free task %s: %w", t.Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Destroy frees what the tasks may still hold in their drivers and removes
// the allocation's directory. Call it once Run returned.
func (r *Runner) Destroy(ctx context.Context) error {
	if err := r.FreeTasks(ctx); err != nil {
		r.log.Warn("destroy tasks", "error", err)
	}
	if err := os.RemoveAll(r.cfg.Dir); err != nil {
		return fmt.Errorf("remove allocation directory: %w", err)
	}
	return nil
}
