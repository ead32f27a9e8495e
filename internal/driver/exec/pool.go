package exec

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan/internal/supervisor"
)

// Supervisors are shared and reused: each holds up to TasksPerSupervisor
// tasks at once, served over a socket (supervisor.ServeSpecs), and stays
// for the next tasks when its tasks are done, so that a start does not
// wait for a process to start, and a node that runs many tasks does not
// pay for a process per task:
//
//	Start ─▶ the fullest supervisor with room, or a new one ─▶ {"run"}
//	      ─▶ {"pid"}
//	task ends ─▶ {"done", result} ─▶ Wait returns ─▶ the agent stores
//	      the result ─▶ Destroy ─▶ {"release"}
//	no task left ─▶ idle (at most maxIdle; beyond one, those idle for
//	      idleTimeout are let go)
//
// Filling the fullest first keeps the number of supervisors, and so their
// memory, low. The price is the blast radius: a supervisor that dies (an
// operator's kill -9, the OOM killer) loses all of its tasks, which are
// reported lost and have their cgroups killed. TasksPerSupervisor 1 keeps
// every task on a supervisor of its own.
//
// A supervisor whose connection closes (the agent stops, Close) writes the
// results it was not released from to their status files, finishes its
// tasks, writes theirs, and exits: a restarted agent recovers its tasks
// by the supervisor's pid and their status files.
const (
	// supervisorsLog, in the state directory, is the supervisors' own log.
	supervisorsLog = "supervisors.log"
	// maxIdle bounds the supervisors kept idle.
	maxIdle = 16
	// idleTimeout is how long supervisors beyond the first stay idle
	// before they are let go.
	idleTimeout = 10 * time.Second
	// DefaultTasksPerSupervisor is how many tasks share a supervisor
	// unless the config says otherwise.
	DefaultTasksPerSupervisor = 8
)

// serving is a supervisor connected to the driver.
type serving struct {
	// ready is closed once the supervisor started, or failed to (err).
	ready chan struct{}
	err   error
	// Set before ready is closed.
	proc  *os.Process
	start uint64 // start time in clock ticks after boot
	conn  *os.File
	// gone is closed when the connection ended: the supervisor exited, or
	// the driver let it go. exit then says how it ended, when known.
	gone chan struct{}
	exit string

	// Under Driver.mu: load counts the tasks it holds or starts;
	// idleSince is when it became idle; closing says the driver let it go
	// or gave up on it: it gets no new task.
	load      int
	idleSince time.Time
	closing   bool

	// tasks are the tasks it holds, by id, until their end is reported
	// (under Driver.mu). sendMu serialises writes to conn.
	tasks  map[string]*task
	sendMu sync.Mutex
}

// send writes one request.
func (sv *serving) send(r supervisor.Request) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	sv.sendMu.Lock()
	defer sv.sendMu.Unlock()
	_, err = sv.conn.Write(append(b, '\n'))
	return err
}

func (sv *serving) isGone() bool { return isClosed(sv.gone) }

// takeSupervisor returns a supervisor with room for one more task, which it
// counts: the fullest of those that have room, or a new one.
func (d *Driver) takeSupervisor(ctx context.Context) (*serving, error) {
	d.mu.Lock()
	var sv *serving
	for _, s := range d.pool {
		if s.closing || s.isGone() || s.load >= d.perSupervisor {
			continue
		}
		if sv == nil || s.load > sv.load {
			sv = s
		}
	}
	spawn := sv == nil
	if spawn {
		sv = &serving{ready: make(chan struct{}), gone: make(chan struct{}), tasks: map[string]*task{}}
		d.pool = append(d.pool, sv)
	}
	sv.load++
	d.mu.Unlock()
	if spawn {
		sv.err = d.spawn(sv)
		close(sv.ready)
	}
	select {
	case <-sv.ready:
	case <-ctx.Done():
		d.release(sv)
		return nil, ctx.Err()
	}
	if sv.err != nil {
		d.release(sv)
		return nil, sv.err
	}
	return sv, nil
}

// release gives back a task's room in sv. A supervisor left without tasks
// waits for the next ones, or goes when the driver is closed or has enough
// idle ones.
func (d *Driver) release(sv *serving) {
	d.mu.Lock()
	sv.load--
	letGo := false
	if sv.load == 0 {
		sv.idleSince = time.Now()
		idle := 0
		for _, s := range d.pool {
			if s.load == 0 && !s.closing {
				idle++
			}
		}
		letGo = isClosed(d.stop) || sv.err != nil || sv.closing || idle > maxIdle
		if letGo {
			sv.closing = true
		} else if !d.janitor {
			d.janitor = true
			d.watchers.Go(d.letIdleGo)
		}
	}
	d.mu.Unlock()
	if letGo && sv.conn != nil {
		sv.conn.Close()
	}
}

// letIdleGo lets idle supervisors go once they were idle for idleTimeout,
// all but the one idle the shortest, until the driver is closed.
func (d *Driver) letIdleGo() {
	t := time.NewTicker(idleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		d.mu.Lock()
		var idle []*serving
		for _, sv := range d.pool {
			if sv.load == 0 && !sv.closing && sv.conn != nil {
				idle = append(idle, sv)
			}
		}
		// The newest idle stays: it starts the next task.
		slices.SortFunc(idle, func(a, b *serving) int { return a.idleSince.Compare(b.idleSince) })
		var gone []*serving
		for _, sv := range idle[:max(0, len(idle)-1)] {
			if time.Since(sv.idleSince) > idleTimeout {
				sv.closing = true
				gone = append(gone, sv)
			}
		}
		d.mu.Unlock()
		for _, sv := range gone {
			sv.conn.Close()
		}
	}
}

// spawn starts a supervisor that serves tasks, connected by a socket, and
// the goroutine that listens to it.
func (d *Driver) spawn(sv *serving) error {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("supervisor socket: %w", err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return fmt.Errorf("supervisor socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "supervisor"), os.NewFile(uintptr(fds[1]), "driver")
	defer theirs.Close()
	logf, err := os.OpenFile(filepath.Join(d.cfg.StateDir, supervisorsLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		ours.Close()
		return fmt.Errorf("open supervisor log: %w", err)
	}
	defer logf.Close()
	newCmd := func(cgroupFD int) *osexec.Cmd {
		sup := d.cfg.SupervisorCommand
		c := osexec.Command(sup[0], append(slices.Clone(sup[1:]), "--handshake-fd", "3", supervisor.ServeSpecs)...)
		c.Dir = "/"
		c.Env = append([]string{"GOMAXPROCS=1", "GOGC=off"}, d.cfg.SupervisorEnv...)
		c.Stdout, c.Stderr = logf, logf
		c.ExtraFiles = []*os.File{theirs}
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if cgroupFD >= 0 {
			c.SysProcAttr.UseCgroupFD, c.SysProcAttr.CgroupFD = true, cgroupFD
		}
		return c
	}
	fd := d.supervisorCgroup()
	c := newCmd(fd)
	err = c.Start()
	if fd >= 0 {
		syscall.Close(fd)
		if errors.Is(err, syscall.ENOSYS) { // no clone3: start it where we are
			c = newCmd(-1)
			err = c.Start()
		}
	}
	if err != nil {
		ours.Close()
		return fmt.Errorf("start supervisor: %w", err)
	}
	st, err := readProcStat(c.Process.Pid)
	if err != nil {
		_ = c.Process.Kill()
		_, _ = c.Process.Wait()
		ours.Close()
		return fmt.Errorf("supervisor start time: %w", err)
	}
	sv.proc, sv.start, sv.conn = c.Process, st.start, ours
	d.watchers.Go(func() { d.listen(sv) })
	return nil
}

// listen reads a supervisor's answers until its connection ends, then
// reaps it (unless the driver was closed: the supervisor may go on with
// its tasks for the next agent) and drops it from the pool.
func (d *Driver) listen(sv *serving) {
	sc := bufio.NewScanner(sv.conn)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		var a supervisor.Answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			d.logger.Warn("supervisor answer", "pid", sv.proc.Pid, "error", err)
			break
		}
		d.answer(sv, a)
	}
	sv.conn.Close()
	if !isClosed(d.stop) {
		if ps, err := sv.proc.Wait(); err == nil {
			sv.exit = ps.String()
		}
	}
	d.mu.Lock()
	sv.closing = true
	d.pool = slices.DeleteFunc(d.pool, func(s *serving) bool { return s == sv })
	d.mu.Unlock()
	close(sv.gone)
}

// answer routes one answer of a supervisor to its task.
func (d *Driver) answer(sv *serving, a supervisor.Answer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case a.Done != "":
		t := sv.tasks[a.Done]
		if t == nil {
			return
		}
		delete(sv.tasks, a.Done)
		t.report = a.Result
		close(t.served)
	case a.TaskID != "":
		t := sv.tasks[a.TaskID]
		if t == nil {
			return
		}
		select {
		case t.answer <- a:
		default:
			d.logger.Warn("unexpected supervisor answer", "pid", sv.proc.Pid, "task", a.TaskID)
		}
	default:
		d.logger.Warn("supervisor answer without a task", "pid", sv.proc.Pid)
	}
}

// awaitStarted waits for the supervisor's answer to a task's spec, or the
// supervisor's end.
func (d *Driver) awaitStarted(ctx context.Context, sv *serving, t *task) (supervisor.Answer, error) {
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return supervisor.Answer{}, ctx.Err()
	case a := <-t.answer:
		return a, nil
	case <-sv.gone:
		// It may have answered just before it went.
		select {
		case a := <-t.answer:
			return a, nil
		default:
		}
		return supervisor.Answer{}, errors.New("the supervisor exited")
	case <-d.stop:
		return supervisor.Answer{}, errors.New("exec driver closed")
	case <-timer.C:
		return supervisor.Answer{}, fmt.Errorf("no answer within %v", startTimeout)
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
