package docker

// How a task's output reaches its files, exactly once across agent restarts:
//
// The Engine keeps each container's output (json-file, with a timestamp per
// message). The driver follows it with timestamps on and writes every
// message into the rotated files (and the job's own stdout/stderr paths).
// After each burst of messages it saves a checkpoint beside the logs,
// ".<task>.docker-logs.json", by write-and-rename:
//
//	position: since = the newest message timestamp written,
//	          skip  = how many messages with exactly that timestamp were written
//	ends:     for each file, where it ended once those messages were written
//	          (rotated streams: newest file index and its size; copies: size)
//
// The checkpoint is always written after the output it covers. A driver
// that recovers the task first rolls every file back to the checkpoint's
// ends (deleting newer rotated files, truncating the newest one), which
// drops anything written after the last checkpoint, then follows again
// with since=position.since and drops the first position.skip messages,
// the ones with that timestamp that are already in the files. So output is
// neither lost nor repeated however the agent dies, as long as the Engine
// still holds the messages (its json-file keeps as much as our rotation).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/logs"
)

// errBadLogStream means the Engine's log stream is not the multiplexed
// format with timestamps that the driver asked for.
var errBadLogStream = errors.New("malformed container log stream")

// maxFrame bounds one message of the Engine's log stream; the Engine splits
// lines at 16 KiB.
const maxFrame = 1 << 20

// logConfig is driver.LogConfig with the defaults filled in, as kept in
// the handle.
type logConfig struct {
	Dir         string `json:"dir"`
	MaxFileSize int64  `json:"max_file_size"`
	MaxFiles    int    `json:"max_files"`
	StdoutPath  string `json:"stdout_path,omitempty"`
	StderrPath  string `json:"stderr_path,omitempty"`
}

func newLogConfig(c driver.LogConfig) (logConfig, error) {
	if c.Dir == "" {
		return logConfig{}, errors.New("no log directory")
	}
	lc := logConfig{Dir: c.Dir, MaxFileSize: c.MaxFileSize, MaxFiles: c.MaxFiles, StdoutPath: c.StdoutPath, StderrPath: c.StderrPath}
	if lc.MaxFileSize <= 0 {
		lc.MaxFileSize = logs.DefaultMaxFileSize
	}
	if lc.MaxFiles <= 0 {
		lc.MaxFiles = logs.DefaultMaxFiles
	}
	return lc, nil
}

// position is how far the task's output has been copied, in the Engine's
// terms.
type position struct {
	Since time.Time `json:"since"`
	Skip  int       `json:"skip"`
}

// fileEnd is where a rotated stream ended.
type fileEnd struct {
	Index int   `json:"index"`
	Size  int64 `json:"size"`
}

// checkpoint ties a position to the ends of the files at that position.
type checkpoint struct {
	Position position           `json:"position"`
	Rotated  map[string]fileEnd `json:"rotated"`
	Copies   map[string]int64   `json:"copies,omitempty"`
}

// copyFile is a job's own stdout or stderr file.
type copyFile struct {
	path string
	f    *os.File
	size int64
}

// sink holds the files one task's output goes to. It is used by one
// goroutine at a time.
type sink struct {
	dir     string
	cpPath  string
	names   [2]string // rotated streams: stdout, stderr
	rotated [2]*logs.Writer
	copies  [2]*copyFile // nil when not asked for; may be the same file
	pos     position
	// pending is output not yet written; pos counts it already.
	pending [2]bytes.Buffer
}

const (
	stdoutStream = 0
	stderrStream = 1
)

func checkpointPath(dir, task string) string {
	return filepath.Join(dir, "."+task+".docker-logs.json")
}

// openSink opens the task's log files. With resume, it rolls them back to
// the saved checkpoint and goes on from its position; without, it starts a
// new checkpoint at the current ends of the files, for a new container.
func openSink(lc logConfig, task string, resume bool, log *slog.Logger) (*sink, error) {
	s := &sink{
		dir:    lc.Dir,
		cpPath: checkpointPath(lc.Dir, task),
		names:  [2]string{task + ".stdout", task + ".stderr"},
	}
	if err := os.MkdirAll(lc.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create log dir: %w", err)
	}
	saveNow := !resume
	if resume {
		cp, err := readCheckpoint(s.cpPath)
		switch {
		case err == nil:
			if err := rollBack(lc.Dir, cp); err != nil {
				return nil, err
			}
			s.pos = cp.Position
		default:
			// Without a checkpoint the whole log is copied again: output
			// may repeat, but none is lost.
			log.Warn("no usable log checkpoint; copying the container's output from its start", "path", s.cpPath, "err", err)
			saveNow = true
		}
	}
	for i, name := range s.names {
		w, err := logs.NewWriter(lc.Dir, name, lc.MaxFileSize, lc.MaxFiles)
		if err != nil {
			s.close()
			return nil, err
		}
		s.rotated[i] = w
	}
	for i, p := range []string{lc.StdoutPath, lc.StderrPath} {
		if p == "" {
			continue
		}
		if i == stderrStream && p == lc.StdoutPath {
			s.copies[i] = s.copies[stdoutStream]
			continue
		}
		cf, err := openCopy(p)
		if err != nil {
			s.close()
			return nil, err
		}
		s.copies[i] = cf
	}
	if saveNow {
		if err := s.save(); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func openCopy(path string) (*copyFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create output dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open output file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat output file: %w", err)
	}
	return &copyFile{path: path, f: f, size: st.Size()}, nil
}

func readCheckpoint(path string) (*checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read log checkpoint: %w", err)
	}
	var cp checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("decode log checkpoint: %w", err)
	}
	if cp.Position.Skip < 0 {
		return nil, fmt.Errorf("decode log checkpoint: negative skip %d", cp.Position.Skip)
	}
	return &cp, nil
}

// rollBack cuts every file back to where the checkpoint says it ended.
func rollBack(dir string, cp *checkpoint) error {
	for name, end := range cp.Rotated {
		files, err := logs.Files(dir, name)
		if err != nil {
			return err
		}
		for _, f := range files {
			switch {
			case f.Index > end.Index:
				if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("roll back log file: %w", err)
				}
			case f.Index == end.Index && f.Size > end.Size:
				if err := os.Truncate(f.Path, end.Size); err != nil {
					return fmt.Errorf("roll back log file: %w", err)
				}
			}
		}
	}
	for path, size := range cp.Copies {
		st, err := os.Stat(path)
		if err != nil || st.Size() <= size {
			continue
		}
		if err := os.Truncate(path, size); err != nil {
			return fmt.Errorf("roll back output file: %w", err)
		}
	}
	return nil
}

// save writes the pending output, then the checkpoint for it.
func (s *sink) save() error {
	if err := s.flush(); err != nil {
		return err
	}
	cp := checkpoint{Position: s.pos, Rotated: make(map[string]fileEnd, 2)}
	for _, name := range s.names {
		files, err := logs.Files(s.dir, name)
		if err != nil {
			return err
		}
		var end fileEnd
		if n := len(files); n > 0 {
			end = fileEnd{Index: files[n-1].Index, Size: files[n-1].Size}
		}
		cp.Rotated[name] = end
	}
	for _, c := range s.copies {
		if c != nil {
			if cp.Copies == nil {
				cp.Copies = make(map[string]int64, 2)
			}
			cp.Copies[c.path] = c.size
		}
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode log checkpoint: %w", err)
	}
	tmp := s.cpPath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write log checkpoint: %w", err)
	}
	if err := os.Rename(tmp, s.cpPath); err != nil {
		return fmt.Errorf("write log checkpoint: %w", err)
	}
	return nil
}

// maxPending is how much output the sink gathers before it writes.
const maxPending = 32 << 10

// buffer gathers p for the stream's files. Output of one stream is
// written in batches; a message of the other stream writes what is
// pending first, so a file shared by both keeps their order.
func (s *sink) buffer(stream int, p []byte) error {
	var err error
	if s.pending[1-stream].Len() > 0 || s.pending[stream].Len()+len(p) > maxPending {
		err = s.flush()
	}
	s.pending[stream].Write(p)
	return err
}

// flush writes the pending output.
func (s *sink) flush() error {
	var errs []error
	for i := range s.pending {
		if s.pending[i].Len() > 0 {
			errs = append(errs, s.write(i, s.pending[i].Bytes()))
			s.pending[i].Reset()
		}
	}
	return errors.Join(errs...)
}

// write appends p to the stream's files.
func (s *sink) write(stream int, p []byte) error {
	_, err := s.rotated[stream].Write(p)
	if c := s.copies[stream]; c != nil {
		n, cerr := c.f.Write(p)
		c.size += int64(n)
		err = errors.Join(err, cerr)
	}
	return err
}

// close closes the files; the checkpoint stays for a later Recover. It may
// be called more than once.
func (s *sink) close() {
	for i, w := range s.rotated {
		if w != nil {
			w.Close()
			s.rotated[i] = nil
		}
	}
	if c := s.copies[stdoutStream]; c != nil {
		c.f.Close()
	}
	if c := s.copies[stderrStream]; c != nil && c != s.copies[stdoutStream] {
		c.f.Close()
	}
	s.copies = [2]*copyFile{}
}

// remove deletes the checkpoint, once the container is gone for good.
func (s *sink) remove() {
	os.Remove(s.cpPath)
	os.Remove(s.cpPath + ".tmp")
}

// copyStream copies one multiplexed, timestamped log stream of the Engine
// into the sink, from s.pos on, saving a checkpoint after every burst of
// messages. It returns nil at the end of the stream.
func (s *sink) copyStream(r io.Reader, log *slog.Logger) error {
	br := bufio.NewReaderSize(r, 64<<10)
	skip := s.pos.Skip // messages at s.pos.Since already written
	dirty := false
	defer func() {
		if err := s.flush(); err != nil {
			log.Warn("write task output", "err", err)
		}
	}()
	var hdr [8]byte
	buf := make([]byte, 0, 32<<10)
	for {
		if dirty && br.Buffered() == 0 {
			// The next read may block: record what is written.
			if err := s.save(); err != nil {
				log.Warn("save log checkpoint", "err", err)
			}
			dirty = false
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read log stream: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[4:])
		if size > maxFrame {
			return fmt.Errorf("log message of %d bytes: %w", size, errBadLogStream)
		}
		buf = buf[:size]
		if _, err := io.ReadFull(br, buf); err != nil {
			return fmt.Errorf("read log stream: %w", err)
		}
		var stream int
		switch hdr[0] {
		case 1:
			stream = stdoutStream
		case 2:
			stream = stderrStream
		case 3:
			return fmt.Errorf("engine: %s", buf)
		default:
			return fmt.Errorf("stream type %d: %w", hdr[0], errBadLogStream)
		}
		ts, line, err := splitTimestamp(buf)
		if err != nil {
			return err
		}
		switch {
		case ts.Equal(s.pos.Since) && skip > 0:
			skip--
			continue // written before the checkpoint
		case ts.After(s.pos.Since):
			s.pos = position{Since: ts, Skip: 1}
		case ts.Equal(s.pos.Since):
			s.pos.Skip++
		}
		// A message stamped earlier than the newest one (stdout and stderr
		// are stamped by two goroutines) is written and leaves the position.
		skip = 0
		if err := s.buffer(stream, line); err != nil {
			log.Warn("write task output", "err", err)
		}
		dirty = true
	}
}

// splitTimestamp splits "<RFC 3339 time> <message>".
func splitTimestamp(b []byte) (time.Time, []byte, error) {
	for i, c := range b {
		if c == ' ' {
			ts, err := time.Parse(time.RFC3339Nano, string(b[:i]))
			if err != nil {
				return time.Time{}, nil, fmt.Errorf("log message timestamp: %w", errBadLogStream)
			}
			return ts, b[i+1:], nil
		}
	}
	return time.Time{}, nil, fmt.Errorf("log message without a timestamp: %w", errBadLogStream)
}

// follow copies the container's output into the sink until the container
// has stopped and its output is read to the end, or ctx ends. A broken
// stream is opened again from the sink's position.
func follow(ctx context.Context, c *client.Client, id string, s *sink, log *slog.Logger) {
	const maxRetriesStopped = 3
	backoff := 100 * time.Millisecond
	stoppedRetries := 0
	for {
		err := followOnce(ctx, c, id, s, log)
		if ctx.Err() != nil {
			return
		}
		info, ierr := c.ContainerInspect(ctx, id)
		switch {
		case ierr != nil && ctx.Err() != nil:
			return
		case ierr != nil && isNotFound(ierr):
			return // removed: nothing more to read
		case ierr == nil && (info.State == nil || !info.State.Running):
			if err == nil || stoppedRetries >= maxRetriesStopped {
				if err != nil {
					log.Warn("container output may be incomplete", "err", err)
				}
				return
			}
			stoppedRetries++
		}
		if err != nil {
			log.Debug("container log stream broke; following again", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func followOnce(ctx context.Context, c *client.Client, id string, s *sink, log *slog.Logger) error {
	opts := container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: true}
	if !s.pos.Since.IsZero() {
		opts.Since = s.pos.Since.UTC().Format(time.RFC3339Nano)
	}
	rc, err := c.ContainerLogs(ctx, id, opts)
	if err != nil {
		return fmt.Errorf("open container logs: %w", err)
	}
	defer rc.Close()
	return s.copyStream(rc, log)
}
