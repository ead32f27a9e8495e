package supervisor

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/logs"
)

// start opens the task's cgroup and output and starts the task: in its own
// session and process group, as its user with no supplementary groups, in
// its directory, with its environment, stdin on /dev/null, inside the
// cgroup from its first instruction.
func (s *supervisor) start() error {
	sp := s.spec
	mgr, err := cgroup.NewManager(cgroup.Version(sp.Cgroup.Version), sp.Cgroup.Root)
	if err != nil {
		return err
	}
	if s.group, err = mgr.Load(sp.Cgroup.Name); err != nil {
		return err
	}
	if s.stdout, err = logs.NewWriter(sp.Logs.Dir, sp.Logs.Name+".stdout", sp.Logs.MaxFileSize, sp.Logs.MaxFiles); err != nil {
		return err
	}
	if s.stderr, err = logs.NewWriter(sp.Logs.Dir, sp.Logs.Name+".stderr", sp.Logs.MaxFileSize, sp.Logs.MaxFiles); err != nil {
		return err
	}
	var outExtra, errExtra *os.File
	if sp.Logs.StdoutPath != "" {
		if outExtra, err = openAsUser(sp.Logs.StdoutPath, sp.UID, sp.GID); err != nil {
			return err
		}
		s.extra = append(s.extra, outExtra)
	}
	switch {
	case sp.Logs.StderrPath == "":
	case sp.Logs.StderrPath == sp.Logs.StdoutPath:
		errExtra = outExtra
	default:
		if errExtra, err = openAsUser(sp.Logs.StderrPath, sp.UID, sp.GID); err != nil {
			return err
		}
		s.extra = append(s.extra, errExtra)
	}

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stdout pipe: %w", err)
	}
	defer outW.Close()
	s.readers = append(s.readers, outR)
	errR, errW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	defer errW.Close()
	s.readers = append(s.readers, errR)

	attr := &syscall.ProcAttr{
		Dir:   sp.Dir,
		Env:   sp.Env,
		Files: []uintptr{devnull.Fd(), outW.Fd(), errW.Fd()},
		Sys: &syscall.SysProcAttr{
			Setsid: true,
			Credential: &syscall.Credential{
				Uid:    sp.UID,
				Gid:    sp.GID,
				Groups: []uint32{},
			},
		},
	}
	s.started = time.Now()
	pid, err := s.group.ForkExec(sp.Path, sp.Args, attr)
	if err != nil {
		return fmt.Errorf("start %s: %w", sp.Path, err)
	}
	s.pid = pid
	s.copiers.Add(2)
	go func() {
		defer s.copiers.Done()
		copyOutput(outR, s.stdout, writerOrNil(outExtra), "stdout", s.logger)
	}()
	go func() {
		defer s.copiers.Done()
		copyOutput(errR, s.stderr, writerOrNil(errExtra), "stderr", s.logger)
	}()
	return nil
}

// writerOrNil keeps a nil file from becoming a non-nil io.Writer.
func writerOrNil(f *os.File) io.Writer {
	if f == nil {
		return nil
	}
	return f
}

// closeOutput closes the logs, the extra files and the pipes.
func (s *supervisor) closeOutput() {
	for _, w := range []*logs.Writer{s.stdout, s.stderr} {
		if w != nil {
			if err := w.Close(); err != nil {
				s.logger.Warn("close task log", "error", err)
			}
		}
	}
	for _, f := range s.extra {
		if err := f.Close(); err != nil {
			s.logger.Warn("close output file", "error", err)
		}
	}
	for _, r := range s.readers {
		r.Close()
	}
	s.stdout, s.stderr, s.extra, s.readers = nil, nil, nil, nil
}
