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

	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
)

// trimAfter is how long after the last start or end of a task the
// supervisor returns the memory it does not use to the system.
const trimAfter = time.Second

// server is a supervisor's loop. It alone starts tasks (so that a task's
// pid is known before its exit can be reaped), reaps every child, routes
// stop requests by task id, and reports how each task ended: to the
// driver while it is connected, in the task's status file otherwise.
type server struct {
	ctx    context.Context
	logger *slog.Logger
	sigs   <-chan os.Signal

	// conn is the connection to the driver; reqs brings its requests and
	// is nil once it ended (connected false). A supervisor of one task
	// from a spec file has neither.
	conn      *os.File
	enc       *json.Encoder
	reqs      <-chan Request
	connected bool
	// stopping: a SIGTERM or SIGINT came (or ctx ended). No task starts
	// any more, and the supervisor exits once its tasks are over.
	stopping bool

	managers map[CgroupSpec]*cgroup.Manager
	// tasks are the tasks that run, by id, until their result is in;
	// byPid their main processes that are not reaped yet.
	tasks map[string]*task
	byPid map[int]*task
	// held are results sent to the driver that it has not released, by
	// task id, with their status paths.
	held     map[string]heldResult
	finished chan *task
	trim     *time.Timer
	// failed is the last status that could not be written.
	failed error
}

// heldResult is a result sent to the driver and kept until it is
// released, or written to statusPath when the connection ends first.
type heldResult struct {
	statusPath string
	result     *driver.ExitResult
}

func newServer(ctx context.Context, sigs <-chan os.Signal, logger *slog.Logger) *server {
	return &server{
		ctx:      ctx,
		logger:   logger,
		sigs:     sigs,
		managers: make(map[CgroupSpec]*cgroup.Manager),
		tasks:    make(map[string]*task),
		byPid:    make(map[int]*task),
		held:     make(map[string]heldResult),
		finished: make(chan *task),
		trim:     time.NewTimer(trimAfter),
	}
}

// serve runs tasks for the driver at the other end of conn until conn
// ends, or a SIGTERM or SIGINT comes (or ctx ends), and then until the
// tasks that run are over.
func (s *server) serve(conn *os.File) error {
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
	s.conn, s.enc, s.reqs, s.connected = c, json.NewEncoder(c), reqs, true
	s.loop()
	return nil
}

// loop runs until no task runs and no driver can send one.
func (s *server) loop() {
	defer s.trim.Stop()
	done := s.ctx.Done()
	for len(s.tasks) > 0 || (s.connected && !s.stopping) {
		select {
		case req, ok := <-s.reqs:
			if !ok {
				s.disconnected()
				continue
			}
			s.handle(req)
		case sig := <-s.sigs:
			s.signal(sig)
		case t := <-s.finished:
			s.report(t)
		case <-s.trim.C:
			debug.FreeOSMemory()
		case <-done:
			done = nil
			s.stopAll()
		}
	}
	s.flushHeld()
}

// handle serves one request of the driver.
func (s *server) handle(req Request) {
	switch {
	case req.Run != nil || req.Spec != "":
		spec, err := req.Run, error(nil)
		if spec != nil {
			err = spec.Validate()
		} else if spec, err = ReadSpec(req.Spec); err != nil {
			spec = &Spec{TaskID: req.TaskID}
		}
		switch {
		case err != nil:
		case spec.TaskID == "":
			err = errors.New("spec: no task id")
		case s.stopping:
			err = errors.New("the supervisor is stopping")
		case s.tasks[spec.TaskID] != nil:
			err = errors.New("the task runs already")
		}
		if err == nil {
			var t *task
			if t, err = s.start(spec); err == nil {
				s.send(Answer{TaskID: spec.TaskID, Pid: t.pid})
				return
			}
		}
		s.send(Answer{TaskID: spec.TaskID, Error: err.Error()})
	case req.Stop != nil:
		if t := s.tasks[req.TaskID]; t != nil {
			t.request(reasonStopped, *req.Stop)
		}
	case req.Release:
		delete(s.held, req.TaskID)
	}
}

// start starts a task and its goroutine.
func (s *server) start(spec *Spec) (*task, error) {
	t := newTask(spec, s.logger)
	mgr, err := s.manager(spec.Cgroup)
	if err == nil {
		err = t.start(mgr)
	}
	if err != nil {
		t.logger.Error("start task", "error", err)
		t.closeOutput()
		if t.group != nil {
			if err := t.group.Delete(); err != nil {
				t.logger.Warn("delete cgroup", "error", err)
			}
		}
		t.release()
		return nil, err
	}
	t.logger.Info("task started", "pid", t.pid)
	s.tasks[spec.TaskID] = t
	s.byPid[t.pid] = t
	s.trim.Reset(trimAfter)
	go func() {
		t.run()
		s.finished <- t
	}()
	return t, nil
}

// manager returns the cgroup manager of a spec's hierarchy, one per
// supervisor (its starts are serialised).
func (s *server) manager(c CgroupSpec) (*cgroup.Manager, error) {
	key := CgroupSpec{Version: c.Version, Root: c.Root}
	if m := s.managers[key]; m != nil {
		return m, nil
	}
	m, err := cgroup.NewManager(cgroup.Version(c.Version), c.Root)
	if err != nil {
		return nil, err
	}
	s.managers[key] = m
	return m, nil
}

// signal handles a signal to the supervisor.
func (s *server) signal(sig os.Signal) {
	switch sig {
	case syscall.SIGCHLD:
		s.reap()
	case syscall.SIGTERM, syscall.SIGINT:
		s.stopAll()
	case StopFileSignal:
		for _, t := range s.tasks {
			if r, ok := readStopFile(t.spec.StopPath); ok {
				t.request(reasonStopped, r)
			}
		}
	}
}

// stopAll stops every task, each with its stop file's request when it has
// one, and lets no new one start.
func (s *server) stopAll() {
	s.stopping = true
	for _, t := range s.tasks {
		t.request(reasonStopped, readStop(t.spec.StopPath, t.defaultStop()))
	}
}

// reap collects every exited child: the tasks' main processes, whose exit
// goes to their task, and orphans of the tasks that were reparented to
// this subreaper.
func (s *server) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if t := s.byPid[pid]; t != nil {
			delete(s.byPid, pid)
			t.exit <- exitStatus{ws, time.Now()}
		}
	}
}

// report passes on how a task ended: to the driver, which releases it once
// it keeps it where it survives the agent, or to the task's status file,
// atomically and durably, when no driver is connected.
func (s *server) report(t *task) {
	id := t.spec.TaskID
	delete(s.tasks, id)
	t.release()
	s.trim.Reset(trimAfter)
	if s.connected {
		s.held[id] = heldResult{statusPath: t.spec.StatusPath, result: t.result}
		s.send(Answer{Done: id, Result: t.result})
		return
	}
	if err := writeStatus(t.spec.StatusPath, t.result); err != nil {
		s.logger.Error("write status", "task", id, "error", err)
		s.failed = err
	}
}

// disconnected handles the end of the driver's connection: the results it
// did not release go to their status files, and so will those of the
// tasks that still run.
func (s *server) disconnected() {
	s.connected, s.reqs = false, nil
	s.flushHeld()
}

// flushHeld writes the results the driver did not release to their status
// files.
func (s *server) flushHeld() {
	for id, h := range s.held {
		if err := writeStatus(h.statusPath, h.result); err != nil {
			s.logger.Error("write status", "task", id, "error", err)
			s.failed = err
		}
		delete(s.held, id)
	}
}

// send writes one answer to the driver. A failure is logged: the end of
// the connection follows, and with it the status files.
func (s *server) send(a Answer) {
	if s.enc == nil {
		return
	}
	if err := s.enc.Encode(a); err != nil {
		s.logger.Warn("answer the driver", "error", err)
	}
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
	sc.Buffer(make([]byte, 4096), maxRequestSize)
	for sc.Scan() {
		var req Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return
		}
		reqs <- req
	}
}

// maxRequestSize bounds one request line (a spec with its environment).
const maxRequestSize = 1 << 20
