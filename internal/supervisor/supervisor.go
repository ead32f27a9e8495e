// Package supervisor is `caravan supervise`: the tiny process that holds one
// exec task, so that the task outlives the agent (even a kill -9 of it) and
// its exit status is never lost.
//
// The protocol with the exec driver, all in the task's state directory:
//
//	driver                                  supervisor
//	  writes spec.json, creates the cgroup
//	  starts `caravan supervise --handshake-fd 3 spec.json`
//	  (own session, stdin /dev/null, stderr supervisor.log)
//	                                          starts the task inside the cgroup
//	  reads {"pid":N} from fd 3   ◀───────── writes {"pid":N} or {"error":"…"}
//	  ...                                     copies stdout/stderr to the logs,
//	                                          enforces the time limit
//	  Stop: writes stop.json,     ─────────▶ signal to the task's process group,
//	        SIGTERM to supervisor             SIGKILL to the cgroup after the
//	                                          kill timeout
//	                                          task exits: kills what is left in
//	                                          the cgroup, reads its stats and
//	                                          OOM kills, writes status.json
//	                                          atomically, deletes the cgroup
//	  sees the supervisor exit,  ◀────────── exits 0
//	  reads status.json
//
// A restarted agent finds the supervisor by pid (checked against its start
// time) and reads status.json once it is gone. A supervisor that died
// without writing status.json was killed; the driver reports that and
// cleans up the cgroup.
//
// Everything runs on one goroutine besides the two output copiers, which
// Run waits for.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/logs"
	"golang.org/x/sys/unix"
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
	// trimAfter is how long a task runs before its supervisor returns the
	// memory its start left unused to the system, once: a short task's
	// supervisor exits before that.
	trimAfter = time.Second
	// gcPercent is the supervisor's GOGC: a small heap rather than a
	// collector that rarely runs.
	gcPercent = 25
)

// Why the task ended, as far as the supervisor is concerned.
const (
	reasonExited = iota
	reasonStopped
	reasonTimedOut
)

// Run supervises the task described by the spec file at specPath until it
// ends, and writes its status. handshake, when not nil, receives one
// Started line once the task runs (or failed to start) and is closed. A
// SIGTERM or SIGINT to this process, or the end of ctx, is a stop request.
// Run returns an error only when the task could not be started or its
// status could not be written.
//
// With specPath ServeSpecs, Run serves tasks one after another over
// handshake, which must then be a socket (an *os.File): see serve.
func Run(ctx context.Context, specPath string, handshake io.WriteCloser, logger *slog.Logger) error {
	// One task needs little: one P, a small heap. The driver starts the
	// supervisor with the collector off (GOGC=off), so that the start of
	// the binary, whose packages allocate about a megabyte at init, runs
	// no collection; it goes on here.
	runtime.GOMAXPROCS(1)
	if gogc := os.Getenv("GOGC"); gogc == "" || gogc == "off" {
		debug.SetGCPercent(gcPercent)
	}
	// The tasks must not inherit the connection to the driver.
	if f, ok := handshake.(*os.File); ok {
		if rc, err := f.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { syscall.CloseOnExec(int(fd)) })
		}
	}
	_ = os.Chdir("/") // keep no directory of the agent's busy
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// Orphans of the tasks become our children, so they are reaped here
	// rather than left to whatever init the host has.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		logger.Warn("become child subreaper", "error", err)
	}
	if specPath == ServeSpecs {
		conn, ok := handshake.(*os.File)
		if !ok {
			return errors.New("serving tasks needs the connection to the driver as a file")
		}
		return serve(ctx, conn, sigs, logger)
	}
	s := &supervisor{logger: logger}
	s.reply = func(pid int, msg string) {
		if handshake == nil {
			return
		}
		if err := writeHandshake(handshake, Started{Pid: pid, Error: msg}); err != nil {
			s.logger.Warn("write handshake", "error", err)
		}
		handshake.Close()
		handshake = nil
	}
	defer s.reply(0, "supervisor ended") // when nothing answered yet
	return s.runSpec(ctx, specPath, sigs)
}

// supervisor holds one task.
type supervisor struct {
	spec   *Spec
	logger *slog.Logger
	// reply tells the driver that the task runs (pid) or why it did not
	// start (msg).
	reply func(pid int, msg string)
	// requests, when the supervisor serves tasks, brings the driver's stop
	// requests; controlGone says the driver's connection ended.
	requests    <-chan Request
	controlGone bool

	group   *cgroup.Group
	pid     int
	started time.Time

	stdout, stderr *logs.Writer
	extra          []*os.File
	readers        []*os.File
	copiers        sync.WaitGroup

	exited   bool
	status   syscall.WaitStatus
	finished time.Time

	reason    int
	killAt    time.Time
	killTimer *time.Timer
}

// runSpec runs the task of the spec at specPath to its end.
func (s *supervisor) runSpec(ctx context.Context, specPath string, sigs <-chan os.Signal) error {
	spec, err := ReadSpec(specPath)
	if err != nil {
		s.reply(0, err.Error())
		return err
	}
	s.spec = spec
	s.logger = s.logger.With("task", spec.TaskID)
	if err := s.start(); err != nil {
		s.failStart(err)
		return err
	}
	s.logger.Info("task started", "pid", s.pid)
	s.reply(s.pid, "")
	s.supervise(ctx, sigs)
	return s.finish()
}

// supervise waits for the main process to exit, handling stop requests,
// the time limit and the kill timeout meanwhile.
func (s *supervisor) supervise(ctx context.Context, sigs <-chan os.Signal) {
	var timeLimit <-chan time.Time
	if s.spec.TimeLimit > 0 {
		t := time.NewTimer(time.Until(s.started.Add(s.spec.TimeLimit.D())))
		defer t.Stop()
		timeLimit = t.C
	}
	s.killTimer = time.NewTimer(time.Hour)
	s.killTimer.Stop()
	defer s.killTimer.Stop()
	trim := time.NewTimer(trimAfter)
	defer trim.Stop()
	done := ctx.Done()
	s.reap()
	for !s.exited {
		select {
		case <-trim.C:
			debug.FreeOSMemory()
		case req, ok := <-s.requests:
			if !ok {
				s.requests, s.controlGone = nil, true
				continue
			}
			if req.Stop != nil && req.TaskID == s.spec.TaskID {
				s.stop(reasonStopped, *req.Stop)
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGCHLD:
				s.reap()
			case syscall.SIGTERM, syscall.SIGINT:
				s.stop(reasonStopped, readStop(s.spec.StopPath, s.defaultStop()))
			}
		case <-done:
			done = nil
			s.stop(reasonStopped, readStop(s.spec.StopPath, s.defaultStop()))
		case <-timeLimit:
			s.logger.Info("time limit reached", "time_limit", s.spec.TimeLimit)
			s.stop(reasonTimedOut, s.defaultStop())
		case <-s.killTimer.C:
			s.killGroup(killRetry)
			s.reap()
			s.killTimer.Reset(killRetry)
		}
	}
}

func (s *supervisor) defaultStop() StopRequest {
	return StopRequest{Signal: int(syscall.SIGTERM), KillTimeout: s.spec.KillTimeout}
}

// stop starts the kill sequence: the signal to the task's process group
// now, SIGKILL to the whole cgroup after the kill timeout. A second request
// does not signal again but may bring the SIGKILL forward.
func (s *supervisor) stop(reason int, r StopRequest) {
	if s.reason == reasonExited {
		s.reason = reason
		s.logger.Info("stopping task", "signal", r.signal().String(), "kill_timeout", r.KillTimeout)
		if err := syscall.Kill(-s.pid, r.signal()); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.logger.Warn("signal task", "error", err)
		}
	}
	at := time.Now().Add(r.KillTimeout.D())
	if s.killAt.IsZero() || at.Before(s.killAt) {
		s.killAt = at
		s.killTimer.Reset(time.Until(at))
	}
}

// killGroup sends SIGKILL to everything in the cgroup and waits at most
// wait for it to be empty.
func (s *supervisor) killGroup(wait time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.group.Kill(ctx); err != nil {
		s.logger.Warn("kill cgroup", "error", err)
	}
}

// reap collects every exited child: the task's main process and orphans
// that were reparented to this subreaper.
func (s *supervisor) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if pid == s.pid && !s.exited {
			s.exited, s.status, s.finished = true, ws, time.Now()
		}
	}
}

// failStart reports a task that did not start: on the handshake and in the
// status file, so a driver that lost the handshake still learns why.
func (s *supervisor) failStart(err error) {
	s.logger.Error("start task", "error", err)
	s.reply(0, err.Error())
	now := time.Now()
	if werr := writeStatus(s.spec.StatusPath, &driver.ExitResult{
		ExitCode: -1, Err: err.Error(), StartedAt: now, FinishedAt: now,
	}); werr != nil {
		s.logger.Error("write status", "error", werr)
	}
	s.closeOutput()
	if s.group != nil {
		if err := s.group.Delete(); err != nil {
			s.logger.Warn("delete cgroup", "error", err)
		}
	}
}

// finish cleans up after the main process exited and writes the status.
func (s *supervisor) finish() error {
	s.killGroup(killWait)
	s.reap()
	s.drain()
	res := s.result()
	if err := writeStatus(s.spec.StatusPath, res); err != nil {
		s.logger.Error("write status", "error", err)
		return err
	}
	s.logger.Info("task exited", "exit_code", res.ExitCode, "signal", res.Signal,
		"oom_killed", res.OOMKilled, "timed_out", res.TimedOut, "killed", res.Killed)
	if err := s.deleteGroup(); err != nil {
		s.logger.Warn("delete cgroup", "error", err)
	}
	return nil
}

// drain waits for the copiers to reach the end of the output, for a
// bounded time, then closes the pipes under them.
func (s *supervisor) drain() {
	done := make(chan struct{})
	go func() {
		s.copiers.Wait()
		close(done)
	}()
	t := time.NewTimer(drainWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.logger.Warn("task output still open after the task ended; closing it")
		for _, r := range s.readers {
			r.Close()
		}
		<-done
	}
	s.closeOutput()
}

// result builds the exit result from the wait status, the reason and the
// cgroup's final figures.
func (s *supervisor) result() *driver.ExitResult {
	res := &driver.ExitResult{StartedAt: s.started, FinishedAt: s.finished}
	switch {
	case s.status.Exited():
		res.ExitCode = s.status.ExitStatus()
	case s.status.Signaled():
		res.Signal = int(s.status.Signal())
		res.ExitCode = 128 + res.Signal
	}
	res.TimedOut = s.reason == reasonTimedOut
	res.Killed = s.reason == reasonStopped
	st, err := s.group.Stats()
	if err != nil {
		s.logger.Warn("read final stats", "error", err)
		return res
	}
	res.Stats = &caravan.TaskStats{
		CPUTime:        caravan.Duration(st.CPUTime()),
		MemoryBytes:    st.MemoryBytes,
		MaxMemoryBytes: st.MaxMemoryBytes,
	}
	// The memory limit explains a failure that no stop or time limit does.
	res.OOMKilled = st.OOMKills > 0 && s.reason == reasonExited && (res.ExitCode != 0 || res.Signal != 0)
	return res
}

// deleteGroup deletes the cgroup, retrying briefly while the kernel
// finishes tearing down the last processes.
func (s *supervisor) deleteGroup() error {
	var err error
	for range 10 {
		if err = s.group.Delete(); err == nil {
			return nil
		}
		s.killGroup(killRetry)
	}
	return fmt.Errorf("delete cgroup %s: %w", s.group.Name(), err)
}
