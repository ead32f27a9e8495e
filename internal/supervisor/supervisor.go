// Package supervisor is `caravan supervise`: the small process that holds
// exec tasks, so that they outlive the agent (even a kill -9 of it) and no
// exit status is ever lost. One supervisor holds several tasks at once (as
// many as the driver gives it) and serves them over a socket to the exec
// driver:
//
//	driver                                   supervisor
//	{"run": SPEC}                 ─────────▶ starts the task inside its
//	                                         cgroup, in its own session
//	                              ◀───────── {"task_id", "pid"} or
//	                                         {"task_id", "error"}
//	                                         copies its output to the logs,
//	                                         enforces its time limit
//	{"task_id", "stop": {…}}      ─────────▶ signal to that task's process
//	                                         group, SIGKILL to its cgroup
//	                                         after the kill timeout
//	                                         the task exits: kills what is
//	                                         left in its cgroup, reads its
//	                                         stats and OOM kills, deletes
//	                                         the cgroup
//	                              ◀───────── {"done": ID, "result": {…}}
//	stores the result durably
//	{"task_id", "release": true}  ─────────▶ forgets it
//
// Requests and answers are JSON lines. Every request names its task, so a
// stop never reaches another task, and answers for different tasks
// interleave. A result the driver has not released when the connection
// ends (the agent stopped or died) goes to the task's status file, written
// atomically and durably; so does the result of every task that ends
// while no driver is connected. The supervisor exits once its connection
// has ended and its last task is over.
//
// A restarted agent finds a task by its supervisor's pid (checked against
// its start time) and its status file: the file appears when the task is
// over. It stops a task by writing the task's stop file and sending the
// supervisor SIGUSR1, which stops the tasks that have a stop file and no
// other. SIGTERM or SIGINT stops every task (each with its stop file's
// request when it has one) and makes the supervisor exit after them. A
// supervisor that died without a status for a task lost that task; the
// driver reports it and kills the task's cgroup.
//
// With a spec file instead of a connection (`caravan supervise
// --handshake-fd 3 SPEC`), the supervisor runs that one task, answers the
// pid on the handshake pipe and writes the status file.
//
// The serving loop (server) starts the tasks, reaps every child and routes
// stop requests; each task has a goroutine of its own (task) for its
// timers and its end, and two that copy its output.
package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"golang.org/x/sys/unix"
)

// gcPercent is the supervisor's GOGC: a small heap rather than a collector
// that rarely runs.
const gcPercent = 25

// Run supervises tasks until they end, and reports how each ended.
//
// With a spec file at specPath, it runs that one task: handshake, when not
// nil, receives one Started line once the task runs (or failed to start)
// and is closed; the status goes to the task's status file; a SIGTERM or
// SIGINT to this process, or the end of ctx, stops the task. Run then
// returns an error only when the task could not be started or its status
// could not be written.
//
// With specPath ServeSpecs, Run serves tasks over handshake, which must
// then be a socket (an *os.File): see server.
func Run(ctx context.Context, specPath string, handshake io.WriteCloser, logger *slog.Logger) error {
	// The supervisor needs little: one P, a small heap. The driver starts
	// it with the collector off (GOGC=off), so that the start of the
	// binary, whose packages allocate about a megabyte at init, runs no
	// collection; it goes on here.
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
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, StopFileSignal)
	defer signal.Stop(sigs)
	// Orphans of the tasks become our children, so they are reaped here
	// rather than left to whatever init the host has.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		logger.Warn("become child subreaper", "error", err)
	}
	s := newServer(ctx, sigs, logger)
	if specPath == ServeSpecs {
		conn, ok := handshake.(*os.File)
		if !ok {
			return errors.New("serving tasks needs the connection to the driver as a file")
		}
		return s.serve(conn)
	}
	return s.runSpec(specPath, handshake)
}

// runSpec runs the one task of the spec file at specPath to its end.
func (s *server) runSpec(specPath string, handshake io.WriteCloser) error {
	reply := func(pid int, msg string) {
		if handshake == nil {
			return
		}
		if err := writeHandshake(handshake, Started{Pid: pid, Error: msg}); err != nil {
			s.logger.Warn("write handshake", "error", err)
		}
		handshake.Close()
	}
	spec, err := ReadSpec(specPath)
	if err != nil {
		reply(0, err.Error())
		return err
	}
	t, err := s.start(spec)
	if err != nil {
		// In the status file too, so a driver that lost the handshake
		// still learns why.
		reply(0, err.Error())
		if werr := writeStatus(spec.StatusPath, failedStart(err)); werr != nil {
			s.logger.Error("write status", "error", werr)
		}
		return err
	}
	reply(t.pid, "")
	s.loop()
	return s.failed
}
