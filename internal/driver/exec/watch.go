package exec

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is what /proc/<pid>/stat tells about a process.
type procStat struct {
	state byte
	// start is the start time in clock ticks after boot: with the pid it
	// names one process, even when pids are reused.
	start uint64
}

// readProcStat reads /proc/<pid>/stat.
func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

// parseProcStat parses the contents of /proc/<pid>/stat. The command name
// in parentheses may hold anything, spaces and parentheses included, so the
// fields are counted from the last ')'.
func parseProcStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, errors.New("proc stat: no command name")
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, errors.New("proc stat: too few fields")
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("proc stat: start time: %w", err)
	}
	return procStat{state: fields[0][0], start: start}, nil
}

// running reports whether pid is the process that started at start and has
// not exited (a zombie has exited).
func running(pid int, start uint64) bool {
	st, err := readProcStat(pid)
	return err == nil && st.start == start && st.state != 'Z' && st.state != 'X'
}

// pidWatch tells when one process exits, through a pidfd registered with
// the runtime's poller (no thread blocks per process), or, on kernels
// without pidfds, by looking every pollInterval.
type pidWatch struct {
	pid   int
	start uint64
	// pidfd is nil without pidfd support.
	pidfd *os.File
}

// pollInterval is how often the fallback looks at a process.
const pollInterval = 500 * time.Millisecond

// openWatch starts watching pid, which must have started at start. It
// fails with os.ErrProcessDone when that process is gone already.
func openWatch(pid int, start uint64) (*pidWatch, error) {
	w := &pidWatch{pid: pid, start: start}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	switch {
	case err == nil:
		w.pidfd = os.NewFile(uintptr(fd), "pidfd")
	case errors.Is(err, syscall.ESRCH):
		return nil, os.ErrProcessDone
	case errors.Is(err, syscall.ENOSYS), errors.Is(err, syscall.EINVAL):
		// Before Linux 5.3 (or 5.10 for PIDFD_NONBLOCK): poll.
	default:
		return nil, fmt.Errorf("open pidfd: %w", err)
	}
	// Checked after the pidfd is open: if the pid names our process now,
	// the pidfd does too.
	if !running(pid, start) {
		w.close()
		return nil, os.ErrProcessDone
	}
	return w, nil
}

// wait blocks until the process exits (true) or the watch is closed or
// stop is closed (false).
func (w *pidWatch) wait(stop <-chan struct{}) bool {
	if w.pidfd != nil {
		rc, err := w.pidfd.SyscallConn()
		if err != nil {
			return false
		}
		err = rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(pfd, 0)
			return err == nil && n > 0
		})
		return err == nil
	}
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for running(w.pid, w.start) {
		select {
		case <-stop:
			return false
		case <-t.C:
		}
	}
	return true
}

// signal sends sig to the process, if it is still the one watched.
func (w *pidWatch) signal(sig syscall.Signal) error {
	var err error
	if w.pidfd != nil {
		rc, cerr := w.pidfd.SyscallConn()
		if cerr != nil {
			return cerr
		}
		if cerr := rc.Control(func(fd uintptr) {
			err = unix.PidfdSendSignal(int(fd), sig, nil, 0)
		}); cerr != nil {
			return cerr
		}
	} else {
		if !running(w.pid, w.start) {
			return os.ErrProcessDone
		}
		err = syscall.Kill(w.pid, sig)
	}
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// close ends the watch; a wait in progress returns false.
func (w *pidWatch) close() {
	if w.pidfd != nil {
		w.pidfd.Close()
	}
}
