package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/supervisor"
)

// Recover re-attaches to a task that an earlier agent process started,
// without restarting it. When its supervisor is gone, Wait reports the
// status it left (the task ended while the agent was down), or the loss of
// the supervisor.
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
	if err := cgroup.ValidateName(st.Cgroup.Name); err != nil {
		return fmt.Errorf("recover %s: %w", h.TaskID, err)
	}
	if _, err := d.lookup(h.TaskID); err == nil {
		return nil
	}
	t := &task{id: h.TaskID, st: st, done: make(chan struct{})}
	// A task whose status is written is over, whatever its supervisor
	// does now: a supervisor that serves tasks may run another one.
	var watch *pidWatch
	var err error
	if _, serr := os.Stat(st.StatusPath); serr == nil {
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

// watchTask waits, on a goroutine that Close ends, for the task's end: its
// supervisor's report, or its exit. Then it collects the result.
func (d *Driver) watchTask(t *task) {
	d.watchers.Go(func() {
		if sv := t.sv; sv != nil {
			select {
			case <-t.served:
			case <-sv.gone:
			case <-d.stop:
				return
			}
			t.result = d.collect(t)
			close(t.done)
			if isClosed(t.served) {
				d.release(sv)
			}
			return
		}
		if t.watch != nil && !t.watch.wait(d.stop) {
			return // the driver was closed
		}
		t.result = d.collect(t)
		close(t.done)
	})
}

// collect reads the status the supervisor left. Without one, the
// supervisor was killed: what may still run of the task is killed too.
func (d *Driver) collect(t *task) *driver.ExitResult {
	res, err := supervisor.ReadStatus(t.st.StatusPath)
	if err == nil {
		return res
	}
	msg := "supervisor exited without a status"
	if !errors.Is(err, supervisor.ErrNoStatus) {
		msg += " (" + err.Error() + ")"
	}
	d.logger.Warn(msg, "task", t.id)
	if g, err := d.group(t); err == nil {
		d.cleanup(g)
	}
	return &driver.ExitResult{ExitCode: -1, Err: msg + "; its task was killed", FinishedAt: time.Now()}
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

// Wait blocks until the task has exited and its supervisor is done, or ctx
// ends.
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
		// The request names the task: one that comes after the task ended
		// does not touch the supervisor's next one.
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
	if err := t.watch.signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
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
// in its cgroup, deletes the cgroup and the task's state, and forgets it.
// The task's logs stay.
func (d *Driver) Destroy(ctx context.Context, taskID string) error {
	t, err := d.lookup(taskID)
	if err != nil {
		return err
	}
	if !isDone(t) && (t.watch != nil || t.sv != nil) {
		if err := d.Stop(ctx, taskID, 0, int(syscall.SIGKILL)); err != nil {
			d.logger.Warn("stop for destroy", "task", taskID, "error", err)
		}
		if !waitDone(ctx, t, destroyTimeout) {
			// The supervisor does not answer: kill it; the watcher then
			// finds no status and kills the cgroup.
			if t.sv != nil {
				_ = t.sv.proc.Kill()
			} else {
				_ = t.watch.signal(syscall.SIGKILL)
			}
			if !waitDone(ctx, t, destroyTimeout) {
				return fmt.Errorf("destroy %s: its supervisor does not exit", taskID)
			}
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
		if t.result.Stats != nil {
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
// down leaves its tasks running: the supervisors it is connected to finish
// their tasks and exit, idle ones exit now. Waits in progress return an
// error.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() {
		d.mu.Lock()
		close(d.stop)
		for _, t := range d.tasks {
			if t == nil {
				continue
			}
			if t.watch != nil {
				t.watch.close()
			}
			if t.sv != nil {
				t.sv.conn.Close()
			}
		}
		for _, sv := range d.idle {
			sv.conn.Close()
		}
		d.idle = nil
		d.mu.Unlock()
		d.watchers.Wait()
	})
	return nil
}
