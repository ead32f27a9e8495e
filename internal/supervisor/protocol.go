package supervisor

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// ErrNoStatus means the status file does not exist (yet): the supervisor
// still runs, or it died before it could write one.
var ErrNoStatus = errors.New("no status file")

// maxFileSize bounds the protocol files a reader accepts.
const maxFileSize = 1 << 20

// Spec is everything the supervisor needs to run one task. The driver
// writes it to a file and passes the file's path.
type Spec struct {
	// TaskID is the driver's task id, for log lines.
	TaskID string `json:"task_id"`
	// Path is the program to execute and Args its argument list, Args[0]
	// included. Path is absolute, or relative to Dir.
	Path string   `json:"path"`
	Args []string `json:"args"`
	// Env is the task's complete environment ("KEY=value").
	Env []string `json:"env"`
	// Dir is the working directory.
	Dir string `json:"dir"`
	// UID and GID run the task; supplementary groups are cleared.
	UID uint32 `json:"uid"`
	GID uint32 `json:"gid"`
	// Cgroup is the group the task runs in. The driver creates it with
	// the task's limits; the supervisor deletes it when the task is over.
	Cgroup CgroupSpec `json:"cgroup"`
	// Logs says where the output goes.
	Logs LogSpec `json:"logs"`
	// TimeLimit, when above 0, stops the task with TimedOut set.
	TimeLimit caravan.Duration `json:"time_limit,omitempty"`
	// KillTimeout is the time between the stop signal and SIGKILL when
	// the time limit stops the task (a stop request brings its own).
	KillTimeout caravan.Duration `json:"kill_timeout,omitempty"`
	// StatusPath receives the driver.ExitResult; StopPath is where the
	// driver puts a StopRequest before it signals the supervisor.
	StatusPath string `json:"status_path"`
	StopPath   string `json:"stop_path"`
	// LogPath, when set, receives a serving supervisor's own log lines
	// about this task (one that runs a single task logs to its stderr).
	LogPath string `json:"log_path,omitempty"`
}

// CgroupSpec names the task's cgroup. Version 0 and an empty Root mean the
// host's own.
type CgroupSpec struct {
	Version int    `json:"version,omitempty"`
	Root    string `json:"root,omitempty"`
	Name    string `json:"name"`
}

// LogSpec names the rotated log streams (<Dir>/<Name>.stdout.N and
// <Dir>/<Name>.stderr.N) and the extra files the job asked for, which are
// opened with the task user's permissions, appended to, and created with
// their parent directories when missing.
type LogSpec struct {
	Dir         string `json:"dir"`
	Name        string `json:"name"`
	MaxFileSize int64  `json:"max_file_size,omitempty"`
	MaxFiles    int    `json:"max_files,omitempty"`
	StdoutPath  string `json:"stdout_path,omitempty"`
	StderrPath  string `json:"stderr_path,omitempty"`
}

// Validate checks the fields the supervisor cannot do without.
func (s *Spec) Validate() error {
	switch {
	case s.Path == "" || len(s.Args) == 0:
		return errors.New("spec: no program to run")
	case s.Dir == "":
		return errors.New("spec: no working directory")
	case s.Cgroup.Name == "":
		return errors.New("spec: no cgroup")
	case s.Logs.Dir == "" || s.Logs.Name == "":
		return errors.New("spec: no log directory or name")
	case s.StatusPath == "" || s.StopPath == "":
		return errors.New("spec: no status or stop path")
	case s.TimeLimit < 0 || s.KillTimeout < 0:
		return errors.New("spec: negative time limit or kill timeout")
	}
	return nil
}

// StopRequest is what the driver asks for when it stops a task: the signal
// for the process group (SIGTERM when 0) and how long to wait before
// SIGKILL goes to everything in the cgroup.
type StopRequest struct {
	Signal      int              `json:"signal,omitempty"`
	KillTimeout caravan.Duration `json:"kill_timeout"`
}

// signal returns the request's signal, SIGTERM when it names none or
// nonsense.
func (r StopRequest) signal() syscall.Signal {
	if r.Signal <= 0 || r.Signal > 64 {
		return syscall.SIGTERM
	}
	return syscall.Signal(r.Signal)
}

// StopFileSignal makes a supervisor stop those of its tasks that have a
// stop file, and no other. Supervisors older than shared ones do not know
// it (it would end them): the driver sends it only to supervisors whose
// handle says they do.
const StopFileSignal = syscall.SIGUSR1

// ServeSpecs, given to Run as the spec path, makes the supervisor serve
// tasks over its connection to the driver (serve.go).
const ServeSpecs = "-"

// Request is a line the driver sends to a supervisor that serves tasks: a
// task to run (its spec, or the path of a spec file), a stop request for
// the task TaskID, or the release of TaskID's result.
type Request struct {
	Run    *Spec        `json:"run,omitempty"`
	Spec   string       `json:"spec,omitempty"`
	TaskID string       `json:"task_id,omitempty"`
	Stop   *StopRequest `json:"stop,omitempty"`
	// Release says the driver keeps TaskID's result where it survives the
	// agent: the supervisor forgets it.
	Release bool `json:"release,omitempty"`
}

// Answer is a line a supervisor that serves tasks sends back: for a task to
// run, TaskID with its pid or why it did not start; once a task is over,
// Done (its id) with its Result. The supervisor keeps a result it sent
// until the driver releases it, and writes it to the task's status file if
// the connection ends first.
type Answer struct {
	TaskID string             `json:"task_id,omitempty"`
	Pid    int                `json:"pid,omitempty"`
	Error  string             `json:"error,omitempty"`
	Done   string             `json:"done,omitempty"`
	Result *driver.ExitResult `json:"result,omitempty"`
}

// Started is the supervisor's one-line answer on the handshake pipe: the
// task's pid, or why it did not start.
type Started struct {
	Pid   int    `json:"pid,omitempty"`
	Error string `json:"error,omitempty"`
}

// WriteSpec writes s to path atomically. It does not wait for the disk: a
// spec matters only while its supervisor runs, which no crash of the
// machine outlives.
func WriteSpec(path string, s *Spec) error {
	return writeJSON(path, s, false)
}

// ReadSpec reads and validates a spec file.
func ReadSpec(path string) (*Spec, error) {
	var s Spec
	if err := readJSON(path, &s); err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// RequestStop records a stop request at path (the spec's StopPath). The
// caller then signals the supervisor: SIGUSR1 (StopFileSignal), which
// makes it read the stop files of its tasks and stop those that have one,
// or SIGTERM, which stops all its tasks (each with its stop file when it
// has one). A later request with a shorter kill timeout shortens the wait.
func RequestStop(path string, r StopRequest) error {
	if err := writeJSON(path, r, false); err != nil {
		return fmt.Errorf("write stop request: %w", err)
	}
	return nil
}

// readStop reads a stop request; a missing or broken file gives def.
func readStop(path string, def StopRequest) StopRequest {
	if r, ok := readStopFile(path); ok {
		return r
	}
	return def
}

// readStopFile reads a stop request; ok is false when there is none (or
// it is broken).
func readStopFile(path string) (StopRequest, bool) {
	var r StopRequest
	if err := readJSON(path, &r); err != nil || r.KillTimeout < 0 {
		return StopRequest{}, false
	}
	return r, true
}

// ReadStatus reads the exit result a supervisor wrote. A missing file gives
// ErrNoStatus.
func ReadStatus(path string) (*driver.ExitResult, error) {
	var r driver.ExitResult
	err := readJSON(path, &r)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoStatus
	}
	if err != nil {
		return nil, fmt.Errorf("read status: %w", err)
	}
	return &r, nil
}

// writeStatus writes the exit result atomically and durably: the agent may
// read it only after a restart of the machine.
func writeStatus(path string, r *driver.ExitResult) error {
	if err := writeJSON(path, r, true); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// ReadHandshake reads the supervisor's Started line from r.
func ReadHandshake(r io.Reader) (*Started, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, 64<<10), 4096).ReadBytes('\n')
	if len(line) == 0 && err != nil {
		return nil, fmt.Errorf("read handshake: %w", err)
	}
	var s Started
	if err := json.Unmarshal(line, &s); err != nil {
		return nil, fmt.Errorf("read handshake: %w", err)
	}
	if s.Error == "" && s.Pid <= 0 {
		return nil, errors.New("read handshake: no pid")
	}
	return &s, nil
}

func writeHandshake(w io.Writer, s Started) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeJSON writes v to path atomically: a temporary file in the same
// directory, renamed. With durable the file and then the directory are
// synced too.
func writeJSON(path string, v any, durable bool) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if !durable {
		return nil
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func readJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return err
	}
	if len(b) > maxFileSize {
		return fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
