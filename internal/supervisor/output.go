package supervisor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyBufSize is the buffer of each output stream: small, since every
// running task pays for it.
const copyBufSize = 8 << 10

// copyOutput copies the task's output from r to the rotated log w and, when
// extra is not nil, to the job's own file. A failing extra file is logged
// once and dropped; the rotated log is what the agent serves.
func copyOutput(r io.Reader, w io.Writer, extra io.Writer, stream string, logger *slog.Logger) {
	buf := make([]byte, copyBufSize)
	logFailed := false
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil && !logFailed {
				logger.Error("write task log", "stream", stream, "error", werr)
				logFailed = true
			}
			if extra != nil {
				if _, werr := extra.Write(buf[:n]); werr != nil {
					logger.Error("write output file", "stream", stream, "error", werr)
					extra = nil
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				logger.Error("read task output", "stream", stream, "error", err)
			}
			return
		}
	}
}

// openAsUser opens path for appending with the permissions of uid and gid
// (no supplementary groups), creating it and its missing parent
// directories owned by them. The supervisor runs as root, and the path
// comes from the job: opening it as root would let a job write anywhere.
//
// The work happens on a goroutine locked to its own thread, whose file
// system credentials (fsuid, fsgid, groups are per thread in Linux) are
// switched to the user's. The goroutine never unlocks the thread, so the Go
// runtime ends that thread when the goroutine returns instead of reusing it
// with the user's credentials.
func openAsUser(path string, uid, gid uint32) (*os.File, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("output file %q: not an absolute path", path)
	}
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		f, err := openAsUserLocked(path, uid, gid)
		ch <- result{f, err}
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("open output file %s as uid %d: %w", path, uid, r.err)
	}
	return r.f, nil
}

func openAsUserLocked(path string, uid, gid uint32) (*os.File, error) {
	if err := unix.Setgroups(nil); err != nil {
		return nil, err
	}
	if err := unix.Setfsgid(int(gid)); err != nil {
		return nil, err
	}
	if err := unix.Setfsuid(int(uid)); err != nil {
		return nil, err
	}
	// setfs*id report no failure: check that the switch took.
	if prev, _ := unix.SetfsuidRetUid(-1); prev != int(uid) {
		return nil, fmt.Errorf("fsuid is %d, not %d", prev, uid)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOCTTY, 0o644)
}
