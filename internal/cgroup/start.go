package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ForkExec starts a program as syscall.ForkExec does, inside the group from
// its first instruction, so neither it nor its children ever run outside.
// On v2 it uses CLONE_INTO_CGROUP; on v1, and on v2 kernels without clone3,
// it moves the calling process into the group, forks, and moves the caller
// back to where it was. Starts through one Manager are serialised.
func (g *Group) ForkExec(argv0 string, argv []string, attr *syscall.ProcAttr) (int, error) {
	g.m.startMu.Lock()
	defer g.m.startMu.Unlock()
	if g.m.version == V2 {
		pid, err := g.forkExecInto(argv0, argv, attr)
		if !errors.Is(err, syscall.ENOSYS) {
			return pid, err
		}
	}
	return g.forkExecJoined(argv0, argv, attr)
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
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.procs"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
