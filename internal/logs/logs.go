// Package logs writes a task's output into size-rotated files and reads them
// back, from any offset, optionally following new output as it is written.
//
// The files of one stream are "<dir>/<name>.<N>" with N counting up from 0;
// the writer starts a new file when the current one reaches the size limit
// and deletes the oldest beyond the count limit. Readers address output by a
// byte offset into the concatenation of the files that still exist.
package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for the rotation limits.
const (
	DefaultMaxFileSize = 10 << 20
	DefaultMaxFiles    = 5
)

// Writer appends to the newest file of a stream and rotates by size. It is
// safe for concurrent use.
type Writer struct {
	mu       sync.Mutex
	dir      string
	name     string
	maxSize  int64
	maxFiles int
	f        *os.File
	index    int
	size     int64
	// lazy: the file is opened by the first Write; closed: Close was
	// called.
	lazy   bool
	closed bool
}

// NewWriter opens the stream <dir>/<name>.N for appending, going on in the
// newest existing file, so a restarted writer loses and repeats nothing.
func NewWriter(dir, name string, maxSize int64, maxFiles int) (*Writer, error) {
	w, err := NewLazyWriter(dir, name, maxSize, maxFiles)
	if err != nil {
		return nil, err
	}
	w.lazy = false
	if err := w.openNewest(); err != nil {
		return nil, err
	}
	return w, nil
}

// NewLazyWriter is NewWriter whose file is opened (and created) by the
// first Write: a stream that never gets output costs no file. The
// directory is made at once.
func NewLazyWriter(dir, name string, maxSize int64, maxFiles int) (*Writer, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxFileSize
	}
	if maxFiles <= 0 {
		maxFiles = DefaultMaxFiles
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	return &Writer{dir: dir, name: name, maxSize: maxSize, maxFiles: maxFiles, lazy: true}, nil
}

// openNewest opens the newest existing file of the stream, or its first.
func (w *Writer) openNewest() error {
	files, err := Files(w.dir, w.name)
	if err != nil {
		return err
	}
	if len(files) > 0 {
		w.index = files[len(files)-1].Index
	}
	return w.open()
}

func (w *Writer) open() error {
	f, err := os.OpenFile(filePath(w.dir, w.name, w.index), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat log file: %w", err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Write appends p, rotating first when the current file is full. A single
// write is never split across files.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, os.ErrClosed
	}
	if w.f == nil {
		if !w.lazy {
			return 0, os.ErrClosed
		}
		if err := w.openNewest(); err != nil {
			return 0, err
		}
		w.lazy = false
	}
	if w.size > 0 && w.size+int64(len(p)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return 0, err
		}
	}
	n, err := w.f.Write(p)
	w.size += int64(n)
	return n, err
}

func (w *Writer) rotate() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close log file: %w", err)
	}
	w.index++
	if err := w.open(); err != nil {
		return err
	}
	for old := w.index - w.maxFiles; old >= 0; old-- {
		err := os.Remove(filePath(w.dir, w.name, old))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
	}
	return nil
}

// Close closes the current file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

func filePath(dir, name string, index int) string {
	return filepath.Join(dir, name+"."+strconv.Itoa(index))
}

// File is one file of a stream.
type File struct {
	Index int
	Path  string
	Size  int64
}

// Files lists the existing files of a stream, oldest first.
func Files(dir, name string) ([]File, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list log dir: %w", err)
	}
	var files []File
	prefix := name + "."
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || e.IsDir() {
			continue
		}
		idx, err := strconv.Atoi(rest)
		if err != nil || idx < 0 {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // rotated away meanwhile
		}
		files = append(files, File{Index: idx, Path: filepath.Join(dir, e.Name()), Size: info.Size()})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Index < files[j].Index })
	return files, nil
}

// Size is the total size of a stream's existing files.
func Size(dir, name string) (int64, error) {
	files, err := Files(dir, name)
	var total int64
	for _, f := range files {
		total += f.Size
	}
	return total, err
}

// ReadOptions say where reading starts and whether it follows.
type ReadOptions struct {
	// Offset in bytes, from the start of the oldest existing file, or back
	// from the end when FromEnd is set.
	Offset  int64
	FromEnd bool
	// Follow keeps reading new output until ctx ends or Done is closed
	// and everything written before has been sent.
	Follow bool
	Done   <-chan struct{}
	// PollInterval is how often a follower looks for new output; default
	// 100ms.
	PollInterval time.Duration
}

// Copy writes the stream to w as ReadOptions say. When w is an
// http.Flusher-like value with a Flush method, it is flushed after every
// chunk so followers see output at once.
func Copy(ctx context.Context, w io.Writer, dir, name string, opt ReadOptions) error {
	files, err := Files(dir, name)
	if err != nil {
		return err
	}
	var total int64
	for _, f := range files {
		total += f.Size
	}
	start := opt.Offset
	if opt.FromEnd {
		start = total - opt.Offset
	}
	start = max(0, min(start, total))
	// Find the file and offset in it to start at.
	index, off := 0, start
	for _, f := range files {
		index = f.Index
		if off < f.Size {
			break
		}
		off -= f.Size
		index = f.Index + 1
	}
	if len(files) > 0 && index > files[len(files)-1].Index {
		index, off = files[len(files)-1].Index, files[len(files)-1].Size
	}
	poll := opt.PollInterval
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	flusher, _ := w.(interface{ Flush() })
	buf := make([]byte, 32<<10)
	doneSeen := false
	for {
		n, err := copyFrom(w, filePath(dir, name, index), off, buf)
		off += n
		if err != nil {
			return err
		}
		if n > 0 && flusher != nil {
			flusher.Flush()
		}
		// A newer file means this one is complete: move on.
		if _, err := os.Stat(filePath(dir, name, index+1)); err == nil {
			index, off = index+1, 0
			continue
		}
		if !opt.Follow || doneSeen {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-opt.Done:
			doneSeen = true // one more pass for what was written last
			opt.Done = nil
		case <-time.After(poll):
		}
	}
}

// copyFrom copies path from off to EOF into w; a missing file is empty.
func copyFrom(w io.Writer, path string, off int64, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open log file: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, fmt.Errorf("seek log file: %w", err)
	}
	n, err := io.CopyBuffer(w, f, buf)
	if err != nil {
		return n, fmt.Errorf("copy log: %w", err)
	}
	return n, nil
}
