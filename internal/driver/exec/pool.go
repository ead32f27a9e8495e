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

// Supervisors are reused: each serves one task at a time over a socket
// (supervisor.ServeSpecs), and goes back to the driver's idle supervisors
// when its task is done, so that a start does not wait for a process to
// start, and a node that runs many short tasks does not start a process
// for each:
//
//	Start ─▶ an idle supervisor, or a new one ─▶ {"spec"} ─▶ {"pid"}
//	task ends ─▶ {"done"} ─▶ Wait returns ─▶ back to the idle ones
//	             (at most maxIdle; beyond one, those idle for idleTimeout
//	             exit)
//
// A supervisor whose connection closes (the agent stops, Close) finishes
// its task and exits, as a supervisor of one task does: a restarted agent
// recovers its task by its pid and status file.
const (
	// supervisorsLog, in the state directory, is the supervisors' own log.
	supervisorsLog = "supervisors.log"
	// maxIdle bounds the supervisors kept idle.
	maxIdle = 16
	// idleTimeout is how long supervisors beyond the first stay idle
	// before they are let go.
	idleTimeout = 10 * time.Second
)

// serving is a supervisor connected to the driver.
type serving struct {
	proc  *os.Process
	start uint64 // start time in clock ticks after boot
	conn  *os.File
	// gone is closed when the connection ended: the supervisor exited, or
	// the driver let it go.
	gone chan struct{}

	mu sync.Mutex
	// cur is the task it serves; started receives the answer to its
	// spec.
	cur       *task
	started   chan supervisor.Answer
	idleSince time.Time
}

// send writes one request.
func (sv *serving) send(r supervisor.Request) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	_, err = sv.conn.Write(append(b, '\n'))
	return err
}

func (sv *serving) isGone() bool {
	select {
	case <-sv.gone:
		return true
	default:
		return false
	}
}

// takeSupervisor returns an idle supervisor, or starts one.
func (d *Driver) takeSupervisor() (*serving, error) {
	d.mu.Lock()
	for len(d.idle) > 0 {
		sv := d.idle[len(d.idle)-1]
		d.idle = d.idle[:len(d.idle)-1]
		if !sv.isGone() {
			d.mu.Unlock()
			return sv, nil
		}
	}
	d.mu.Unlock()
	return d.spawn()
}

// release takes back a supervisor whose task is done.
func (d *Driver) release(sv *serving) {
	d.mu.Lock()
	closed := isClosed(d.stop)
	keep := !closed && len(d.idle) < maxIdle && !sv.isGone()
	if keep {
		sv.mu.Lock()
		sv.idleSince = time.Now()
		sv.mu.Unlock()
		d.idle = append(d.idle, sv)
		if !d.janitor {
			d.janitor = true
			d.watchers.Go(d.letIdleGo)
		}
	}
	d.mu.Unlock()
	if !keep {
		sv.conn.Close()
	}
}

// letIdleGo lets supervisors beyond the first go once they were idle for
// idleTimeout, until the driver is closed.
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
		var gone []*serving
		// The newest stays: it was used last and starts the next task.
		for len(d.idle) > 1 {
			sv := d.idle[0]
			sv.mu.Lock()
			old := time.Since(sv.idleSince) > idleTimeout
			sv.mu.Unlock()
			if !old {
				break
			}
			gone = append(gone, sv)
			d.idle = slices.Delete(d.idle, 0, 1)
		}
		d.mu.Unlock()
		for _, sv := range gone {
			sv.conn.Close()
		}
	}
}

// spawn starts a supervisor that serves tasks, connected by a socket.
func (d *Driver) spawn() (*serving, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("supervisor socket: %w", err)
	}
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		syscall.Close(fds[0])
		syscall.Close(fds[1])
		return nil, fmt.Errorf("supervisor socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "supervisor"), os.NewFile(uintptr(fds[1]), "driver")
	defer theirs.Close()
	logf, err := os.OpenFile(filepath.Join(d.cfg.StateDir, supervisorsLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		ours.Close()
		return nil, fmt.Errorf("open supervisor log: %w", err)
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
		return nil, fmt.Errorf("start supervisor: %w", err)
	}
	st, err := readProcStat(c.Process.Pid)
	if err != nil {
		_ = c.Process.Kill()
		_, _ = c.Process.Wait()
		ours.Close()
		return nil, fmt.Errorf("supervisor start time: %w", err)
	}
	sv := &serving{proc: c.Process, start: st.start, conn: ours, gone: make(chan struct{}), started: make(chan supervisor.Answer, 1)}
	d.watchers.Go(func() { d.listen(sv) })
	return sv, nil
}

// listen reads a supervisor's answers until its connection ends, then
// reaps it (unless the driver was closed: the supervisor may go on with
// its task for the next agent).
func (d *Driver) listen(sv *serving) {
	sc := bufio.NewScanner(sv.conn)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		var a supervisor.Answer
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			d.logger.Warn("supervisor answer", "pid", sv.proc.Pid, "error", err)
			break
		}
		sv.mu.Lock()
		t := sv.cur
		if a.Done != "" {
			if t != nil && t.id == a.Done {
				sv.cur = nil
				close(t.served)
			}
			sv.mu.Unlock()
			continue
		}
		sv.mu.Unlock()
		select {
		case sv.started <- a:
		default:
			d.logger.Warn("unexpected supervisor answer", "pid", sv.proc.Pid, "answer", sc.Text())
		}
	}
	sv.conn.Close()
	close(sv.gone)
	if !isClosed(d.stop) {
		_, _ = sv.proc.Wait()
	}
}

// awaitStarted waits for the answer to a spec, or the supervisor's end.
func (sv *serving) awaitStarted(ctx context.Context, stop <-chan struct{}, timeout time.Duration) (supervisor.Answer, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return supervisor.Answer{}, ctx.Err()
	case a := <-sv.started:
		return a, nil
	case <-sv.gone:
		// It may have answered just before it went.
		select {
		case a := <-sv.started:
			return a, nil
		default:
		}
		return supervisor.Answer{}, errors.New("the supervisor exited")
	case <-stop:
		return supervisor.Answer{}, errors.New("exec driver closed")
	case <-timer.C:
		return supervisor.Answer{}, fmt.Errorf("no answer within %v", timeout)
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
