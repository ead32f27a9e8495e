package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ForkExec starts a program as syscall.ForkExec does, inside the group from
// its first instruction, so neither it nor its children ever run outside.
// On v2 it uses CLONE_INTO_CGROUP. On v1 one thread of this process, locked
// to its goroutine, moves itself into the group, forks, and moves back
// (forkExecFromThread); on v2 kernels without clone3 the whole process
// does (forkExecJoined). Starts through one Manager are serialised.
func (g *Group) ForkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	g.m.startMu.Lock()
	defer g.m.startMu.Unlock()
	if g.m.version == V2 {
		pid, err := g.forkExecInto(argv0, argv, attr)
		if !errors.Is(err, syscall.ENOSYS) {
			return pid, err
		}
		return g.forkExecJoined(argv0, argv, attr)
	}
	return g.forkExecFromThread(argv0, argv, attr)
}

// OpenDir opens a v2 group's directory, for os/exec's
// SysProcAttr.UseCgroupFD (CLONE_INTO_CGROUP). The caller closes the
// descriptor once the process started. On v1 it fails with ErrUnsupported.
func (g *Group) OpenDir() (int, error) {
	if g.m.version != V2 {
		return -1, fmt.Errorf("open cgroup %s: CLONE_INTO_CGROUP needs cgroup v2: %w", g.name, ErrUnsupported)
	}
	fd, err := unix.Open(g.b.dirs()[0].dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open cgroup %s: %w", g.name, err)
	}
	return fd, nil
}

// forkExecInto starts the process with clone3(CLONE_INTO_CGROUP).
func (g *Group) forkExecInto(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	fd, err := g.OpenDir()
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	a := *attr
	var sys syscall.SysProcAttr
	if attr.Sys != nil {
		sys = *attr.Sys
	}
	sys.UseCgroupFD = true
	sys.CgroupFD = fd
	a.Sys = &sys
	return syscall.ForkExec(argv0, argv, &a)
}

// forkExecFromThread starts the process from a thread that moved itself
// into the group (v1 only): a child is forked into its parent thread's
// groups. A thread that moves itself (pid 0 in the tasks file) is the one
// migration the kernel does without cgroup_threadgroup_rwsem, whose write
// side waits for an RCU grace period (several milliseconds) whenever no
// migration happened in the last few; moving the whole process in and out
// pays it on every start of a quiet node.
//
// The goroutine that moves stays locked to its thread throughout, and the
// Go runtime never clones new threads from a locked one, so no thread of
// this process but the forking one is ever inside. When the way back fails,
// the thread ends with its goroutine instead of going back to the runtime.
func (g *Group) forkExecFromThread(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	type result struct {
		pid int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		pid, home, err := g.forkExecLocked(argv0, argv, attr)
		if home {
			runtime.UnlockOSThread()
		}
		ch <- result{pid, err}
	}()
	r := <-ch
	return r.pid, r.err
}

// forkExecLocked runs on a locked thread. home reports that the thread is
// back in its own groups.
func (g *Group) forkExecLocked(argv0 string, argv []string, attr *syscall.ProcAttr) (pid int, home bool, err error) {
	own, err := threadCgroups()
	if err != nil {
		return 0, true, err
	}
	targets := g.b.dirs()
	homes := make([]string, len(targets))
	for i, t := range targets {
		p, ok := own[t.controller]
		if !ok {
			return 0, true, fmt.Errorf("this thread is in no %q cgroup", t.controller)
		}
		homes[i] = filepath.Join(g.m.root, t.controller, p)
	}
	self := []byte("0")
	goHome := func(n int) error {
		var errs []error
		for i := range n {
			if err := writeTasks(homes[i], self); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for i, t := range targets {
		if err := writeTasks(t.dir, self); err != nil {
			herr := goHome(i)
			return 0, herr == nil, errors.Join(fmt.Errorf("join cgroup %s: %w", g.name, err), herr)
		}
	}
	pid, err = syscall.ForkExec(argv0, argv, attr)
	return pid, goHome(len(targets)) == nil, err
}

// forkExecJoined moves this process into the group, forks the child there,
// and moves this process back.
func (g *Group) forkExecJoined(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	own, err := ownCgroups()
	if err != nil {
		return 0, err
	}
	self := []byte(strconv.Itoa(os.Getpid()))
	targets := g.b.dirs()
	homes := make([]string, len(targets))
	for i, t := range targets {
		p, ok := own[t.controller]
		if !ok {
			return 0, fmt.Errorf("this process is in no %q cgroup", t.controller)
		}
		homes[i] = filepath.Join(g.m.root, t.controller, p)
	}
	goHome := func(n int) error {
		var errs []error
		for i := range n {
			if err := writeProcs(homes[i], self); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	for i, t := range targets {
		if err := writeProcs(t.dir, self); err != nil {
			return 0, errors.Join(fmt.Errorf("join cgroup %s: %w", g.name, err), goHome(i))
		}
	}
	pid, startErr := syscall.ForkExec(argv0, argv, attr)
	if err := goHome(len(targets)); err != nil {
		// Left inside, this process would die with the task: refuse.
		if startErr == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_, _ = syscall.Wait4(pid, nil, 0, nil)
		}
		return 0, fmt.Errorf("leave cgroup %s: %w", g.name, err)
	}
	return pid, startErr
}

func writeProcs(dir string, pid []byte) error {
	return writeFile(filepath.Join(dir, "cgroup.procs"), pid)
}

func writeTasks(dir string, tid []byte) error {
	return writeFile(filepath.Join(dir, "tasks"), tid)
}

func writeFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
