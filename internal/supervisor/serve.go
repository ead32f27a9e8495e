package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"syscall"
	"time"
)

// A supervisor that serves tasks is started ahead of need by the exec
// driver and kept for the next task when one ends, so that a task's start
// does not wait for a process to start, and a node that runs many short
// tasks does not start a process for each. Over a socket (the handshake
// connection):
//
//	driver                                   supervisor
//	{"run": SPEC} or {"spec": PATH} ───────▶ runs the task as Run does
//	                              ◀───────── {"pid": N} or {"error": "…"}
//	{"task_id": ID, "stop": {…}}  ─────────▶ the kill sequence, as SIGTERM
//	                                         with a stop file does
//	                              ◀───────── {"done": ID} once the status is
//	                                         written and the cgroup gone
//	{"spec": …} for the next task …
//
// When the driver's end closes (the agent stopped or died, or the driver
// has enough idle supervisors), the supervisor exits, after its task when
// one runs: it then behaves as a supervisor of one task, stopped by
// SIGTERM and its stop file, and the status file tells a restarted agent
// how the task ended.

// idleTrim is how long a supervisor waits idle before it returns unused
// memory to the system.
const idleTrim = time.Second

// serve runs tasks one after another for the driver at the other end of
// conn, until conn ends, a SIGTERM or SIGINT comes while no task runs, or
// ctx ends while no task runs.
func serve(ctx context.Context, conn *os.File, sigs <-chan os.Signal, logger *slog.Logger) error {
	c, err := pollable(conn)
	if err != nil {
		return err
	}
	reqs := make(chan Request)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		readRequests(c, reqs)
	}()
	defer func() {
		c.Close() // ends the reader
		for range reqs {
		}
		<-readDone
	}()
	enc := json.NewEncoder(c)
	send := func(a Answer) {
		if err := enc.Encode(a); err != nil {
			logger.Warn("answer the driver", "error", err)
		}
	}
	trim := time.NewTimer(idleTrim)
	defer trim.Stop()
	for {
		select {
		case req, ok := <-reqs:
			if !ok {
				return nil
			}
			if req.Run == nil && req.Spec == "" {
				continue // a stop for a task that is over
			}
			if !serveOne(ctx, req, reqs, sigs, send, logger) {
				return nil
			}
			trim.Reset(idleTrim)
		case sig := <-sigs:
			if sig == syscall.SIGTERM || sig == syscall.SIGINT {
				return nil
			}
			reapAll()
		case <-trim.C:
			debug.FreeOSMemory()
		case <-ctx.Done():
			return nil
		}
	}
}

// serveOne runs one task. It reports whether the driver is still there.
func serveOne(ctx context.Context, req Request, reqs <-chan Request, sigs <-chan os.Signal, send func(Answer), logger *slog.Logger) bool {
	s := &supervisor{logger: logger, requests: reqs}
	answered := false
	s.reply = func(pid int, msg string) {
		if !answered {
			answered = true
			send(Answer{Pid: pid, Error: msg})
		}
	}
	spec, err := req.Run, error(nil)
	if spec != nil {
		err = spec.Validate()
	} else {
		spec, err = ReadSpec(req.Spec)
	}
	if err != nil {
		s.reply(0, err.Error())
		return true
	}
	s.spec = spec
	if spec.LogPath != "" {
		f, err := os.OpenFile(spec.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err == nil {
			defer f.Close()
			s.logger = slog.New(slog.NewTextHandler(f, nil))
		}
	}
	s.logger = s.logger.With("task", spec.TaskID)
	if err := s.start(); err != nil {
		s.failStart(err)
		return !s.controlGone
	}
	s.logger.Info("task started", "pid", s.pid)
	s.reply(s.pid, "")
	s.supervise(ctx, sigs)
	if err := s.finish(); err != nil {
		s.logger.Error("finish task", "error", err)
	}
	if s.controlGone {
		return false
	}
	send(Answer{Done: spec.TaskID})
	return true
}

// pollable returns a non-blocking copy of conn, which the runtime's
// poller serves, so that closing it ends a read in progress; conn is
// closed.
func pollable(conn *os.File) (*os.File, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(f uintptr) { fd, derr = syscall.Dup(int(f)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	conn.Close()
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "driver"), nil
}

// readRequests sends every request read from r on reqs, and closes reqs
// when r ends or holds something that is not a request.
func readRequests(r io.Reader, reqs chan<- Request) {
	defer close(reqs)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		var req Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return
		}
		reqs <- req
	}
}

// reapAll collects exited children that no task claims (orphans of an
// earlier task that this subreaper inherited).
func reapAll() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}
