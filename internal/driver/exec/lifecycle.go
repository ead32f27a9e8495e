package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/supervisor"
)

// LostError is Wait's error for a task whose supervisor vanished (an
// operator's kill -9, the OOM killer) without telling how the task ended:
// the driver killed whatever the task left in its cgroup.
type LostError struct {
	TaskID string
	Reason string
}

func (e *LostError) Error() string {
	return "task " + e.TaskID + " lost: " + e.Reason + "; what was left of it was killed"
}

// TaskLost marks the error as the loss of the task's run, for the task
// runner.
func (e *LostError) TaskLost() bool { return true }

// Recover re-attaches to a task that an earlier agent process started,
// without restarting it. When its supervisor is gone, Wait reports the
// status it left (the task ended while the agent was down), or the loss of
// the task.
func (d *Driver) Recover(ctx context.Context, h *driver.Handle) error {
	if h == nil || h.Driver != Name || h.TaskID == "" {
		return fmt.Errorf("recover: not an exec handle: %w", ErrInvalidTask)
	}
	var st handleState
	if err := json.Unmarshal(h.State, &st); err != nil {
		return fmt.Errorf("recover %s: handle state: %w", h.TaskID, err)
	}
	if st.SupervisorPid <= 0 || st.StatusPath == "" || st.StopPath == "" || st.Cgroup.Name == "" {
		return fmt.Errorf("recover %s: incomplete handle state: %w", h.TaskID, ErrInvalidTask)
	}
	if st.StopSignal < 0 || st.StopSignal > 64 {
		return fmt.Errorf("recover %s: bad stop signal %d: %w", h.TaskID, st.StopSignal, ErrInvalidTask)
	}
	if err := cgroup.ValidateName(st.Cgroup.Name); err != nil {
		return fmt.Errorf("recover %s: %w", h.TaskID, err)
	}
	if _, err := d.lookup(h.TaskID); err == nil {
		return nil
	}
	t := &task{id: h.TaskID, st: st, done: make(chan struct{})}
	// A task whose status is written is over, whatever its supervisor
	// does now: it may hold other tasks.
	var watch *pidWatch
	var err error
	if fileExists(st.StatusPath) {
		err = os.ErrProcessDone
	} else {
		watch, err = openWatch(st.SupervisorPid, st.SupervisorStart)
	}
	switch {
	case err == nil:
		t.watch = watch
	case errors.Is(err, os.ErrProcessDone):
		d.logger.Info("task over; collecting its status", "task", h.TaskID)
	default:
		return fmt.Errorf("recover %s: %w", h.TaskID, err)
	}
	d.mu.Lock()
	if _, ok := d.tasks[h.TaskID]; ok { // recovered or started meanwhile
		d.mu.Unlock()
		if watch != nil {
			watch.close()
		}
		return nil
	}
	d.tasks[h.TaskID] = t
	d.mu.Unlock()
	d.watchTask(t)
	return nil
}

// watchTask waits, on a goroutine that Close ends, for the task's end,
// then collects its result.
func (d *Driver) watchTask(t *task) {
	if sv := t.sv; sv != nil {
		d.watchers.Go(func() {
			select {
			case <-t.served:
			case <-sv.gone:
			case <-d.stop:
				return
			}
			d.mu.Lock()
			report := t.report
			served := isClosed(t.served)
			d.mu.Unlock()
			if served && report != nil {
				t.result = report
			} else {
				d.collect(t)
			}
			close(t.done)
			d.release(sv)
		})
		return
	}
	d.watchers.Go(func() {
		if t.watch != nil && !d.awaitRecovered(t) {
			return // the driver was closed
		}
		d.collect(t)
		close(t.done)
	})
}

// awaitRecovered waits for the end of a recovered task: its status file,
// or its supervisor's exit. It reports false when the driver was closed.
func (d *Driver) awaitRecovered(t *task) bool {
	exited := make(chan struct{})
	d.watchers.Go(func() {
		if t.watch.wait(d.stop) {
			close(exited)
		}
	})
	// A supervisor that holds other tasks does not exit when this one
	// ends; its status file tells. One of an older agent (whose status
	// file is in a directory of its own) holds only this task.
	var appeared <-chan struct{}
	if filepath.Dir(t.st.StatusPath) == d.cfg.StateDir {
		ch, cancel := d.statuses.await(d, t.st.StatusPath)
		defer cancel()
		appeared = ch
	}
	defer t.watch.close() // ends the wait above
	select {
	case <-exited:
	case <-appeared:
	case <-d.stop:
		return false
	}
	return true
}

// collect reads the status the supervisor left. Without one the task is
// lost: what may still run of it is killed.
func (d *Driver) collect(t *task) {
	res, err := supervisor.ReadStatus(t.st.StatusPath)
	if err == nil {
		t.result = res
		return
	}
	reason := fmt.Sprintf("its supervisor (pid %d) is gone without telling how the task ended", t.st.SupervisorPid)
	if t.sv != nil && t.sv.isGone() && t.sv.exit != "" {
		reason = fmt.Sprintf("its supervisor (pid %d) ended (%s) without telling how the task ended", t.st.SupervisorPid, t.sv.exit)
	}
	if !errors.Is(err, supervisor.ErrNoStatus) {
		reason += " (" + err.Error() + ")"
	}
	d.logger.Warn("task lost", "task", t.id, "reason", reason)
	if g, err := d.group(t); err == nil {
		d.cleanup(g)
	}
	t.lost = &LostError{TaskID: t.id, Reason: reason}
}

// group loads the task's cgroup.
func (d *Driver) group(t *task) (*cgroup.Group, error) {
	m := d.cgroups
	spec := t.st.Cgroup
	if m == nil || (spec.Version != 0 && cgroup.Version(spec.Version) != m.Version()) || (spec.Root != "" && spec.Root != m.Root()) {
		var err error
		if m, err = cgroup.NewManager(cgroup.Version(spec.Version), spec.Root); err != nil {
			return nil, err
		}
	}
	return m.Load(spec.Name)
}

func (d *Driver) lookup(id string) (*task, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := d.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("task %s: %w", id, driver.ErrTaskNotFound)
	}
	return t, nil
}

// Wait blocks until the task has exited and its supervisor is done with
// it, or ctx ends. A task whose supervisor vanished gives a *LostError.
func (d *Driver) Wait(ctx context.Context, taskID string) (*driver.ExitResult, error) {
	t, err := d.lookup(taskID)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.stop:
		if !isDone(t) {
			return nil, errors.New("exec driver closed")
		}
	}
	if t.lost != nil {
		return nil, t.lost
	}
	res := *t.result
	return &res, nil
}

// Stop asks the task's supervisor to stop it: signal (SIGTERM when 0) to
// the task's process group, SIGKILL to its whole cgroup after killTimeout.
func (d *Driver) Stop(ctx context.Context, taskID string, killTimeout time.Duration, signal int) error {
	t, err := d.lookup(taskID)
	if err != nil {
		return err
	}
	if isDone(t) {
		return nil
	}
	req := supervisor.StopRequest{Signal: signal, KillTimeout: caravan.Duration(max(0, killTimeout))}
	if t.sv != nil {
		// The request names the task: it reaches no other task of the
		// supervisor, nor a later run of this one.
		if err := t.sv.send(supervisor.Request{TaskID: taskID, Stop: &req}); err != nil && !isDone(t) {
			return fmt.Errorf("stop %s: %w", taskID, err)
		}
		return nil
	}
	if t.watch == nil {
		return nil
	}
	if err := supervisor.RequestStop(t.st.StopPath, req); err != nil {
		return fmt.Errorf("stop %s: %w", taskID, err)
	}
	// A shared supervisor stops the tasks that have a stop file; SIGTERM
	// would stop them all.
	sig := syscall.SIGTERM
	if t.st.StopSignal != 0 {
		sig = syscall.Signal(t.st.StopSignal)
	}
	if err := t.watch.signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: signal supervisor: %w", taskID, err)
	}
	return nil
}

func isDone(t *task) bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// Destroy ends the task at once if it still runs, kills whatever is left
// in its cgroup, deletes the cgroup and the task's state, and forgets it;
// its supervisor forgets its result. The task's logs stay.
func (d *Driver) Destroy(ctx context.Context, taskID string) error {
	t, err := d.lookup(taskID)
	if err != nil {
		return err
	}
	if !isDone(t) && (t.watch != nil || t.sv != nil) {
		if err := d.stopNow(ctx, t); err != nil {
			return err
		}
	}
	if t.sv != nil && isDone(t) && t.result != nil && !t.sv.isGone() {
		if err := t.sv.send(supervisor.Request{TaskID: taskID, Release: true}); err != nil {
			d.logger.Debug("release a result", "task", taskID, "error", err)
		}
	}
	g, _ := d.group(t)
	d.cleanup(g, t.st.Dir, t.st.StatusPath, t.st.StopPath)
	if t.watch != nil {
		t.watch.close()
	}
	d.mu.Lock()
	delete(d.tasks, taskID)
	d.mu.Unlock()
	return nil
}

// stopNow ends a task that runs: SIGKILL through its supervisor; when the
// supervisor does not answer, the driver kills the task's cgroup itself;
// when it still does not answer, it is killed, unless it holds other
// tasks, which a kill would take with it.
func (d *Driver) stopNow(ctx context.Context, t *task) error {
	if err := d.Stop(ctx, t.id, 0, int(syscall.SIGKILL)); err != nil {
		d.logger.Warn("stop for destroy", "task", t.id, "error", err)
	}
	if waitDone(ctx, t, destroyTimeout) {
		return nil
	}
	if g, err := d.group(t); err == nil {
		d.cleanup(g)
	}
	if waitDone(ctx, t, destroyTimeout) {
		return nil
	}
	alone := t.watch != nil && t.st.StopSignal == 0
	if t.sv != nil {
		d.mu.Lock()
		alone = t.sv.load == 1
		d.mu.Unlock()
	}
	if !alone {
		return fmt.Errorf("destroy %s: its supervisor does not answer", t.id)
	}
	// The watcher then finds no status: the task is lost.
	if t.sv != nil {
		_ = t.sv.proc.Kill()
	} else {
		_ = t.watch.signal(syscall.SIGKILL)
	}
	if !waitDone(ctx, t, destroyTimeout) {
		return fmt.Errorf("destroy %s: its supervisor does not exit", t.id)
	}
	return nil
}

// waitDone waits for the task's result for at most timeout.
func waitDone(ctx context.Context, t *task, timeout time.Duration) bool {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.done:
		return true
	case <-ctx.Done():
	case <-timer.C:
	}
	return false
}

// Stats samples the task's cgroup; once the task is over it returns the
// final figures.
func (d *Driver) Stats(ctx context.Context, taskID string) (*caravan.TaskStats, error) {
	t, err := d.lookup(taskID)
	if err != nil {
		return nil, err
	}
	if isDone(t) {
		if t.result != nil && t.result.Stats != nil {
			s := *t.result.Stats
			return &s, nil
		}
		return &caravan.TaskStats{}, nil
	}
	g, err := d.group(t)
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", taskID, err)
	}
	st, err := g.Stats()
	if err != nil {
		return nil, fmt.Errorf("stats of %s: %w", taskID, err)
	}
	return &caravan.TaskStats{
		CPUTime:        caravan.Duration(st.CPUTime()),
		MemoryBytes:    st.MemoryBytes,
		MaxMemoryBytes: st.MaxMemoryBytes,
	}, nil
}

// Close stops watching tasks without touching them, as an agent that shuts
// down leaves its tasks running: the supervisors it is connected to write
// the results not yet released to their status files, finish their tasks
// and exit; idle ones exit now. Waits in progress return an error.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		close(d.stop)
		for _, t := range d.tasks {
			if t != nil && t.watch != nil {
				t.watch.close()
			}
		}
		pool := slices.Clone(d.pool)
		d.mu.Unlock()
		for _, sv := range pool {
			<-sv.ready
			if sv.conn != nil {
				sv.conn.Close()
			}
		}
		d.statuses.close()
		d.watchers.Wait()
	})
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
