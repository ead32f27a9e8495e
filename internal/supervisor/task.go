package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/logs"
)

// Bounds of the end of a task.
const (
	// killWait bounds the wait for an emptied cgroup at the end.
	killWait = 10 * time.Second
	// drainWait bounds the wait for the last output after the cgroup is
	// empty (a process outside it could hold the pipes open).
	drainWait = 5 * time.Second
	// killRetry is how often the kill is repeated while the main process
	// has not exited after SIGKILL.
	killRetry = time.Second
)

// Why a task ended, as far as the supervisor is concerned.
const (
	reasonExited = iota
	reasonStopped
	reasonTimedOut
)

// task is one task a supervisor holds. Its goroutine (run) follows it from
// its start to its result; the serving loop hands it the exit of its main
// process, which only the loop reaps, and its stop requests.
//
//	start (the loop) ─▶ run: exit, stop requests, time limit, kill timer
//	  ─▶ finish: kill what is left in the cgroup, drain the output, read
//	     the final stats, delete the cgroup ─▶ result ─▶ the loop
type task struct {
	spec   *Spec
	logger *slog.Logger
	// logFile, when not nil, receives the logger's lines (Spec.LogPath).
	logFile *os.File

	group   *cgroup.Group
	pid     int
	started time.Time

	stdout, stderr *logs.Writer
	extra          []*os.File
	readers        []*os.File
	copiers        sync.WaitGroup

	// exit receives the main process's wait status; stops the stop
	// requests. Only the loop sends on them.
	exit  chan exitStatus
	stops chan stopOrder

	// Fields of run's goroutine; result is read by the loop once run
	// returned.
	status    syscall.WaitStatus
	finished  time.Time
	reason    int
	killAt    time.Time
	killTimer *time.Timer
	result    *driver.ExitResult
}

// exitStatus is how the main process ended, and when it was reaped.
type exitStatus struct {
	status syscall.WaitStatus
	at     time.Time
}

// stopOrder is a stop request and why it came.
type stopOrder struct {
	reason int
	req    StopRequest
}

// maxPendingStops bounds the stop requests waiting for a task's goroutine;
// beyond them, requests are redundant.
const maxPendingStops = 4

func newTask(spec *Spec, logger *slog.Logger) *task {
	t := &task{
		spec:  spec,
		exit:  make(chan exitStatus, 1),
		stops: make(chan stopOrder, maxPendingStops),
	}
	if spec.LogPath != "" {
		if f, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600); err == nil {
			t.logFile = f
			logger = slog.New(slog.NewTextHandler(f, nil))
		}
	}
	t.logger = logger.With("task", spec.TaskID)
	return t
}

// request passes a stop request to the task's goroutine without waiting.
func (t *task) request(reason int, r StopRequest) {
	select {
	case t.stops <- stopOrder{reason, r}:
	default:
	}
}

// run follows the task until its main process exited, then finishes it.
func (t *task) run() {
	t.supervise()
	t.finish()
}

// supervise waits for the main process to exit, handling stop requests,
// the time limit and the kill timeout meanwhile.
func (t *task) supervise() {
	var timeLimit <-chan time.Time
	if t.spec.TimeLimit > 0 {
		tl := time.NewTimer(time.Until(t.started.Add(t.spec.TimeLimit.D())))
		defer tl.Stop()
		timeLimit = tl.C
	}
	t.killTimer = time.NewTimer(time.Hour)
	t.killTimer.Stop()
	defer t.killTimer.Stop()
	for {
		select {
		case e := <-t.exit:
			t.status, t.finished = e.status, e.at
			return
		case o := <-t.stops:
			t.stop(o.reason, o.req)
		case <-timeLimit:
			t.logger.Info("time limit reached", "time_limit", t.spec.TimeLimit)
			t.stop(reasonTimedOut, t.defaultStop())
		case <-t.killTimer.C:
			t.killGroup(killRetry)
			t.killTimer.Reset(killRetry)
		}
	}
}

func (t *task) defaultStop() StopRequest {
	return StopRequest{Signal: int(syscall.SIGTERM), KillTimeout: t.spec.KillTimeout}
}

// stop starts the kill sequence: the signal to the task's process group
// now, SIGKILL to the whole cgroup after the kill timeout. A second request
// does not signal again but may bring the SIGKILL forward.
func (t *task) stop(reason int, r StopRequest) {
	if t.reason == reasonExited {
		t.reason = reason
		t.logger.Info("stopping task", "signal", r.signal().String(), "kill_timeout", r.KillTimeout)
		if err := syscall.Kill(-t.pid, r.signal()); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.logger.Warn("signal task", "error", err)
		}
	}
	at := time.Now().Add(r.KillTimeout.D())
	if t.killAt.IsZero() || at.Before(t.killAt) {
		t.killAt = at
		t.killTimer.Reset(time.Until(at))
	}
}

// killGroup sends SIGKILL to everything in the cgroup and waits at most
// wait for it to be empty.
func (t *task) killGroup(wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := t.group.Kill(ctx); err != nil {
		t.logger.Warn("kill cgroup", "error", err)
	}
}

// finish cleans up after the main process exited and sets the result.
func (t *task) finish() {
	t.killGroup(killWait)
	t.drain()
	t.result = t.buildResult()
	t.logger.Info("task exited", "exit_code", t.result.ExitCode, "signal", t.result.Signal,
		"oom_killed", t.result.OOMKilled, "timed_out", t.result.TimedOut, "killed", t.result.Killed)
	if err := t.deleteGroup(); err != nil {
		t.logger.Warn("delete cgroup", "error", err)
	}
}

// drain waits for the copiers to reach the end of the output, for a
// bounded time, then closes the pipes under them.
func (t *task) drain() {
	done := make(chan struct{})
	go func() {
		t.copiers.Wait()
		close(done)
	}()
	timer := time.NewTimer(drainWait)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.logger.Warn("task output still open after the task ended; closing it")
		for _, r := range t.readers {
			r.Close()
		}
		<-done
	}
	t.closeOutput()
}

// buildResult builds the exit result from the wait status, the reason and
// the cgroup's final figures.
func (t *task) buildResult() *driver.ExitResult {
	res := &driver.ExitResult{StartedAt: t.started, FinishedAt: t.finished}
	switch {
	case t.status.Exited():
		res.ExitCode = t.status.ExitStatus()
	case t.status.Signaled():
		res.Signal = int(t.status.Signal())
		res.ExitCode = 128 + res.Signal
	}
	res.TimedOut = t.reason == reasonTimedOut
	res.Killed = t.reason == reasonStopped
	st, err := t.group.Stats()
	if err != nil {
		t.logger.Warn("read final stats", "error", err)
		return res
	}
	res.Stats = &caravan.TaskStats{
		CPUTime:        caravan.Duration(st.CPUTime()),
		MemoryBytes:    st.MemoryBytes,
		MaxMemoryBytes: st.MaxMemoryBytes,
	}
	// The memory limit explains a failure that no stop or time limit does.
	res.OOMKilled = st.OOMKills > 0 && t.reason == reasonExited && (res.ExitCode != 0 || res.Signal != 0)
	return res
}

// deleteGroup deletes the cgroup, retrying briefly while the kernel
// finishes tearing down the last processes.
func (t *task) deleteGroup() error {
	var err error
	for range 10 {
		if err = t.group.Delete(); err == nil {
			return nil
		}
		t.killGroup(killRetry)
	}
	return fmt.Errorf("delete cgroup %s: %w", t.group.Name(), err)
}

// failedStart is the result of a task that did not start.
func failedStart(err error) *driver.ExitResult {
	now := time.Now()
	return &driver.ExitResult{ExitCode: -1, Err: err.Error(), StartedAt: now, FinishedAt: now}
}

// release closes what the task holds besides its processes: its log file.
func (t *task) release() {
	if t.logFile != nil {
		t.logFile.Close()
		t.logFile = nil
	}
}
