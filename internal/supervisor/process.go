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
// cgroup from its first instruction. The rotated logs are made on the
// first output: a task that prints nothing costs no log file.
func (t *task) start(mgr *cgroup.Manager) error {
	sp := t.spec
	var err error
	if t.group, err = mgr.Load(sp.Cgroup.Name); err != nil {
		return err
	}
	if t.stdout, err = logs.NewLazyWriter(sp.Logs.Dir, sp.Logs.Name+".stdout", sp.Logs.MaxFileSize, sp.Logs.MaxFiles); err != nil {
		return err
	}
	if t.stderr, err = logs.NewLazyWriter(sp.Logs.Dir, sp.Logs.Name+".stderr", sp.Logs.MaxFileSize, sp.Logs.MaxFiles); err != nil {
		return err
	}
	var outExtra, errExtra *os.File
	if sp.Logs.StdoutPath != "" {
		if outExtra, err = openAsUser(sp.Logs.StdoutPath, sp.UID, sp.GID); err != nil {
			return err
		}
		t.extra = append(t.extra, outExtra)
	}
	switch {
	case sp.Logs.StderrPath == "":
	case sp.Logs.StderrPath == sp.Logs.StdoutPath:
		errExtra = outExtra
	default:
		if errExtra, err = openAsUser(sp.Logs.StderrPath, sp.UID, sp.GID); err != nil {
			return err
		}
		t.extra = append(t.extra, errExtra)
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
	t.readers = append(t.readers, outR)
	errR, errW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("stderr pipe: %w", err)
	}
	defer errW.Close()
	t.readers = append(t.readers, errR)

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
	t.started = time.Now()
	pid, err := t.group.ForkExec(sp.Path, sp.Args, attr)
	if err != nil {
		return fmt.Errorf("start %s: %w", sp.Path, err)
	}
	t.pid = pid
	t.copiers.Add(2)
	go func() {
		defer t.copiers.Done()
		copyOutput(outR, t.stdout, writerOrNil(outExtra), "stdout", t.logger)
	}()
	go func() {
		defer t.copiers.Done()
		copyOutput(errR, t.stderr, writerOrNil(errExtra), "stderr", t.logger)
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
func (t *task) closeOutput() {
	for _, w := range []*logs.Writer{t.stdout, t.stderr} {
		if w != nil {
			if err := w.Close(); err != nil {
				t.logger.Warn("close task log", "error", err)
			}
		}
	}
	for _, f := range t.extra {
		if err := f.Close(); err != nil {
			t.logger.Warn("close output file", "error", err)
		}
	}
	for _, r := range t.readers {
		r.Close()
	}
	t.stdout, t.stderr, t.extra, t.readers = nil, nil, nil, nil
}
