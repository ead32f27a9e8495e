package exec

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// statusFiles tells recovered tasks when their status files appear in the
// driver's state directory. A shared supervisor does not exit when one of
// its tasks ends, so the status file, not the supervisor's exit, tells
// that the task is over. It watches the directory with inotify, or looks
// every pollInterval where inotify is not available, from the first
// await until the driver is closed.
type statusFiles struct {
	dir string

	mu      sync.Mutex
	waiters map[string][]chan struct{} // by path
	started bool
	closed  bool
	// events is the inotify descriptor; nil when polling.
	events *os.File
	stop   chan struct{}
}

// await returns a channel that is closed once path exists, and a function
// that ends the wait.
func (w *statusFiles) await(d *Driver, path string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ch, func() {}
	}
	if w.waiters == nil {
		w.waiters = make(map[string][]chan struct{})
	}
	w.waiters[path] = append(w.waiters[path], ch)
	if !w.started {
		w.started = true
		w.stop = make(chan struct{})
		w.events = openInotify(w.dir)
		d.watchers.Go(w.run)
	}
	w.mu.Unlock()
	// Looked at once the wait is in place: a file that appeared before is
	// seen here, one that appears after by the watch.
	if fileExists(path) {
		w.wake(path)
	}
	cancel := func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		list := w.waiters[path]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(w.waiters, path)
		} else {
			w.waiters[path] = list
		}
	}
	return ch, cancel
}

// openInotify watches dir for files renamed or written into it; nil when
// the kernel refuses (no inotify, too many watches).
func openInotify(dir string) *os.File {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), "inotify")
}

// wake ends the waits for path.
func (w *statusFiles) wake(path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.waiters[path] {
		close(ch)
	}
	delete(w.waiters, path)
}

// wakeExisting ends the waits for every path that exists.
func (w *statusFiles) wakeExisting() {
	w.mu.Lock()
	var paths []string
	for p := range w.waiters {
		paths = append(paths, p)
	}
	w.mu.Unlock()
	for _, p := range paths {
		if fileExists(p) {
			w.wake(p)
		}
	}
}

// run follows the directory until close.
func (w *statusFiles) run() {
	if w.events == nil {
		t := time.NewTicker(pollInterval)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.wakeExisting()
			}
		}
	}
	buf := make([]byte, 16<<10)
	for {
		n, err := w.events.Read(buf)
		if err != nil {
			return // closed
		}
		names, overflow := parseInotify(buf[:n])
		if overflow {
			w.wakeExisting()
		}
		for _, name := range names {
			if p := filepath.Join(w.dir, name); fileExists(p) {
				w.wake(p)
			}
		}
	}
}

// parseInotify returns the names of the events in b, and whether the
// kernel's queue overflowed (events were lost).
func parseInotify(b []byte) (names []string, overflow bool) {
	for len(b) >= unix.SizeofInotifyEvent {
		mask := binary.NativeEndian.Uint32(b[4:8])
		n := int(binary.NativeEndian.Uint32(b[12:16]))
		if n < 0 || n > len(b)-unix.SizeofInotifyEvent {
			return names, true
		}
		name := b[unix.SizeofInotifyEvent : unix.SizeofInotifyEvent+n]
		for len(name) > 0 && name[len(name)-1] == 0 {
			name = name[:len(name)-1]
		}
		if mask&unix.IN_Q_OVERFLOW != 0 {
			overflow = true
		}
		if len(name) > 0 {
			names = append(names, string(name))
		}
		b = b[unix.SizeofInotifyEvent+n:]
	}
	return names, overflow
}

// close ends run.
func (w *statusFiles) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if !w.started {
		return
	}
	close(w.stop)
	if w.events != nil {
		w.events.Close()
	}
}
