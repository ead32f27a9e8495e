// Package exec is the exec driver: it runs a task as a tree of processes on
// the node, as an unprivileged user, in its own session, inside its own
// cgroup with the task's memory, cpu and cpuset limits.
//
// Each task is held by a `caravan supervise` process (internal/supervisor)
// that the driver starts in its own session, connected to it by a socket;
// a supervisor holds up to TasksPerSupervisor tasks at once and takes new
// ones as its tasks end (pool.go). The supervisor outlives the agent,
// enforces each task's time limit and kill sequence, and keeps each exit
// until the agent stored it (or writes it to the task's status file), so
// a restarted agent re-attaches with Recover and loses no exit:
//
//	Start: user, dirs, command checked ─▶ cgroup created ─▶ the spec to a
//	       supervisor with room, or a new one ─▶ {"pid"} ─▶ Handle (the
//	       supervisor's pid and start time)
//	Wait:  {"done", result} ─▶ ExitResult; the supervisor's connection
//	       ended first ─▶ the status file, or LostError (cgroup killed)
//	Stop:  {"stop"} naming the task; for a recovered task, its stop file
//	       and SIGUSR1 (SIGTERM for a supervisor of one task) to its
//	       supervisor
//	Destroy: stop at once, kill and delete the cgroup, {"release"}, remove
//	       the state files
//	Recover: status file written ─▶ over; otherwise wait for the status
//	       file (inotify) or the supervisor's exit (pidfd): no status then
//	       ─▶ LostError
package exec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/supervisor"
)

// Name is the driver's name.
const Name = caravan.DriverExec

// Timeouts of the driver's own waits.
const (
	// startTimeout bounds the wait for the supervisor's handshake.
	startTimeout = 30 * time.Second
	// cleanupTimeout bounds killing what is left in a cgroup.
	cleanupTimeout = 10 * time.Second
	// destroyTimeout bounds the wait for a supervisor to end its task.
	destroyTimeout = 15 * time.Second
)

// Config configures the exec driver.
type Config struct {
	// SupervisorCommand runs `caravan supervise`: a program and the
	// arguments before the supervisor's own. Empty means this executable
	// with "supervise".
	SupervisorCommand []string
	// SupervisorEnv is added to the supervisor's environment.
	SupervisorEnv []string
	// StateDir holds one directory per task: the supervisor's spec, its
	// log, the stop request and the exit status. Required.
	StateDir string
	// DefaultUser runs tasks that name no user; "nobody" when empty.
	DefaultUser string
	// AllowRoot lets tasks that ask for root run as root. Without it they
	// fail to start.
	AllowRoot bool
	// CgroupParent is the group below which every task gets its own;
	// "caravan" when empty.
	CgroupParent string
	// Cgroups manages the node's cgroups; nil detects the host's.
	Cgroups *cgroup.Manager
	// TasksPerSupervisor is how many tasks one supervisor holds at once;
	// 0 means DefaultTasksPerSupervisor. More saves memory (one process
	// for several tasks); fewer limits what the death of one supervisor
	// takes with it. 1 gives every task its own.
	TasksPerSupervisor int
	// Logger receives the driver's log lines; nil discards them.
	Logger *slog.Logger
}

// Driver is the exec driver. It is safe for concurrent use.
type Driver struct {
	cfg     Config
	cgroups *cgroup.Manager
	cgErr   error
	logger  *slog.Logger

	// stop is closed by Close and ends the watchers.
	stop      chan struct{}
	closeOnce sync.Once
	watchers  sync.WaitGroup

	// perSupervisor is Config.TasksPerSupervisor with its default.
	perSupervisor int
	// statuses tells recovered tasks when their status files appear.
	statuses statusFiles

	mu    sync.Mutex
	tasks map[string]*task
	// supGroup is the v2 group supervisors start in, once made.
	supGroup *cgroup.Group
	// pool are the connected supervisors; janitor says letIdleGo runs.
	pool    []*serving
	janitor bool
}

var _ driver.Driver = (*Driver)(nil)

// task is one task the driver started or recovered.
type task struct {
	id string
	st handleState
	// sv is the connected supervisor that holds the task; answer
	// receives its answer to the spec; served is closed once it reported
	// the task's end (report, under Driver.mu until then). Recovered
	// tasks have none: watch follows their supervisor (nil when it was
	// gone at Recover).
	sv     *serving
	answer chan supervisor.Answer
	served chan struct{}
	report *driver.ExitResult
	watch  *pidWatch
	// done is closed once the end is known: result, or lost when the
	// supervisor vanished without a result.
	done   chan struct{}
	result *driver.ExitResult
	lost   *LostError
}

// handleState is the driver's part of a Handle: what Recover needs.
type handleState struct {
	SupervisorPid int `json:"supervisor_pid"`
	// SupervisorStart is the supervisor's start time in clock ticks after
	// boot (/proc/<pid>/stat): a pid reused by another process does not
	// match it.
	SupervisorStart uint64 `json:"supervisor_start"`
	TaskPid         int    `json:"task_pid"`
	// StopSignal makes the supervisor read the task's stop file and stop
	// only that task (supervisor.StopFileSignal); 0 for supervisors of
	// one task, which SIGTERM stops.
	StopSignal int `json:"stop_signal,omitempty"`
	// Dir is the task's state directory of an older agent; now the
	// status and stop files are in the driver's state directory.
	Dir        string                `json:"dir,omitempty"`
	StatusPath string                `json:"status_path"`
	StopPath   string                `json:"stop_path"`
	Cgroup     supervisor.CgroupSpec `json:"cgroup"`
	LogDir     string                `json:"log_dir"`
}

// New returns an exec driver. A host without usable cgroups gives a driver
// that reports itself unhealthy and refuses to start tasks.
func New(cfg Config) (*Driver, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("exec driver: no state dir")
	}
	if cfg.DefaultUser == "" {
		cfg.DefaultUser = "nobody"
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "caravan"
	}
	if err := cgroup.ValidateName(cfg.CgroupParent); err != nil {
		return nil, fmt.Errorf("exec driver: cgroup parent: %w", err)
	}
	if len(cfg.SupervisorCommand) == 0 {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("exec driver: find own executable: %w", err)
		}
		cfg.SupervisorCommand = []string{self, "supervise"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TasksPerSupervisor < 0 {
		return nil, errors.New("exec driver: tasks per supervisor must not be negative")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("exec driver: %w", err)
	}
	d := &Driver{
		cfg:           cfg,
		cgroups:       cfg.Cgroups,
		logger:        cfg.Logger.With("component", "driver/exec"),
		stop:          make(chan struct{}),
		tasks:         make(map[string]*task),
		perSupervisor: cfg.TasksPerSupervisor,
		statuses:      statusFiles{dir: cfg.StateDir},
	}
	if d.perSupervisor == 0 {
		d.perSupervisor = DefaultTasksPerSupervisor
	}
	if d.cgroups == nil {
		d.cgroups, d.cgErr = cgroup.NewManager(0, "")
	}
	return d, nil
}

// Name returns "exec".
func (d *Driver) Name() string { return Name }

// Fingerprint reports the driver detected on Linux, and healthy when the
// agent runs as root on a host with usable cgroups.
func (d *Driver) Fingerprint(ctx context.Context) caravan.DriverInfo {
	info := caravan.DriverInfo{Detected: runtime.GOOS == "linux"}
	switch {
	case !info.Detected:
		info.HealthDescription = "the exec driver needs Linux"
	case d.cgErr != nil:
		info.HealthDescription = "no usable cgroups: " + d.cgErr.Error()
	case os.Geteuid() != 0:
		info.HealthDescription = "the exec driver needs root"
	default:
		if _, err := os.Stat(d.cfg.SupervisorCommand[0]); err != nil {
			info.HealthDescription = "supervisor program: " + err.Error()
			break
		}
		info.Healthy = true
		info.HealthDescription = "healthy"
		info.Attributes = map[string]string{
			"driver.exec.cgroup_version": d.cgroups.Version().String(),
		}
	}
	return info
}

// Start starts the task under a new supervisor and returns when the task
// runs. Errors are driver failures: an unknown user, root refused, a
// missing program or interpreter, a cgroup that cannot be made.
func (d *Driver) Start(ctx context.Context, cfg *driver.TaskConfig) (*driver.Handle, error) {
	if cfg == nil || cfg.Task == nil || cfg.ID == "" {
		return nil, fmt.Errorf("no task: %w", ErrInvalidTask)
	}
	if d.cgErr != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.ID, d.cgErr)
	}
	if !d.reserve(cfg.ID) {
		return nil, fmt.Errorf("start %s: the task runs already: %w", cfg.ID, ErrInvalidTask)
	}
	t, err := d.start(ctx, cfg)
	d.mu.Lock()
	if err != nil {
		delete(d.tasks, cfg.ID)
	} else {
		d.tasks[cfg.ID] = t
	}
	d.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.ID, err)
	}
	d.watchTask(t)
	state, err := json.Marshal(t.st)
	if err != nil {
		return nil, err
	}
	return &driver.Handle{Driver: Name, TaskID: cfg.ID, StartedAt: time.Now(), State: state}, nil
}

// reserve claims id for a Start; false means it is taken.
func (d *Driver) reserve(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.tasks[id]; ok {
		return false
	}
	d.tasks[id] = nil
	return true
}

func (d *Driver) start(ctx context.Context, cfg *driver.TaskConfig) (*task, error) {
	if name := cfg.Task.Name; name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return nil, fmt.Errorf("task name %q: %w", name, ErrInvalidTask)
	}
	u, err := d.resolveUser(cfg)
	if err != nil {
		return nil, err
	}
	workDir, err := prepareDirs(cfg, u)
	if err != nil {
		return nil, err
	}
	cmd, err := buildCommand(cfg, u, workDir)
	if err != nil {
		return nil, err
	}
	spec, err := d.spec(cfg, u, cmd, workDir)
	if err != nil {
		return nil, err
	}
	// What an earlier run of the task left (its status would say this run
	// is over), and the directory an older agent kept per task.
	stale := []string{spec.StatusPath, spec.StopPath, filepath.Join(d.cfg.StateDir, stateKey(cfg.ID))}
	for _, p := range stale {
		if err := os.RemoveAll(p); err != nil {
			return nil, fmt.Errorf("clear task state: %w", err)
		}
	}
	// A group of that name is a leftover of an earlier run whose state was
	// lost: whatever still runs in it goes.
	if stale, err := d.cgroups.Load(spec.Cgroup.Name); err == nil {
		d.logger.Warn("removing a stale cgroup", "cgroup", spec.Cgroup.Name)
		d.cleanup(stale)
	}
	group, err := d.cgroups.Create(spec.Cgroup.Name, cgroup.Limits{
		MemoryBytes: int64(cfg.Memory) << 20,
		CPUShares:   uint64(max(0, cfg.CPU)),
		Cpus:        cfg.Cores,
	})
	if err != nil {
		return nil, err
	}
	t, err := d.launch(ctx, cfg.ID, spec)
	if err != nil {
		d.cleanup(group, spec.StatusPath, spec.StopPath)
		return nil, err
	}
	return t, nil
}

// stateKey names a task's files in the state directory.
func stateKey(id string) string { return cgroup.Segment(strings.ReplaceAll(id, "/", ".")) }

// spec builds the supervisor's spec; its status and stop files are
// <key>.status.json and <key>.stop.json in the state directory (no
// directory per task: every file and directory made and removed costs a
// task's start and end).
func (d *Driver) spec(cfg *driver.TaskConfig, u taskUser, cmd command, workDir string) (*supervisor.Spec, error) {
	key := stateKey(cfg.ID)
	// The supervisor writes the logs as root: their directory must be the
	// agent's, never one the task can write to.
	logDir := cfg.Logs.Dir
	if logDir == "" || !filepath.IsAbs(logDir) {
		return nil, fmt.Errorf("log dir %q: not an absolute path: %w", logDir, ErrInvalidTask)
	}
	outputPath := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(workDir, p)
		}
		return p
	}
	timeLimit, killTimeout := cfg.TimeLimit, cfg.KillTimeout
	if timeLimit <= 0 {
		timeLimit = cfg.Task.TimeLimit.D()
	}
	if killTimeout <= 0 {
		killTimeout = cfg.Task.KillTimeout.D()
	}
	env := make([]string, 0, len(cfg.Env))
	for k, v := range cfg.Env {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return &supervisor.Spec{
		TaskID: cfg.ID,
		Path:   cmd.path,
		Args:   cmd.args,
		Env:    env,
		Dir:    workDir,
		UID:    u.uid,
		GID:    u.gid,
		Cgroup: supervisor.CgroupSpec{
			Version: int(d.cgroups.Version()),
			Root:    d.cgroups.Root(),
			Name:    d.cfg.CgroupParent + "/" + key,
		},
		Logs: supervisor.LogSpec{
			Dir:         logDir,
			Name:        cfg.Task.Name,
			MaxFileSize: cfg.Logs.MaxFileSize,
			MaxFiles:    cfg.Logs.MaxFiles,
			StdoutPath:  outputPath(cfg.Logs.StdoutPath),
			StderrPath:  outputPath(cfg.Logs.StderrPath),
		},
		TimeLimit:   caravan.Duration(max(0, timeLimit)),
		KillTimeout: caravan.Duration(max(0, killTimeout)),
		StatusPath:  filepath.Join(d.cfg.StateDir, key+".status.json"),
		StopPath:    filepath.Join(d.cfg.StateDir, key+".stop.json"),
	}, nil
}

// launch hands the spec to a supervisor with room and waits for its
// answer.
func (d *Driver) launch(ctx context.Context, id string, spec *supervisor.Spec) (*task, error) {
	sv, err := d.takeSupervisor(ctx)
	if err != nil {
		return nil, err
	}
	t := &task{id: id, sv: sv, answer: make(chan supervisor.Answer, 1), served: make(chan struct{}), done: make(chan struct{})}
	d.mu.Lock()
	sv.tasks[id] = t
	d.mu.Unlock()
	answer, err := func() (supervisor.Answer, error) {
		if err := sv.send(supervisor.Request{Run: spec}); err != nil {
			return supervisor.Answer{}, err
		}
		return d.awaitStarted(ctx, sv, t)
	}()
	if err != nil {
		// The task may start all the same: it must not run. A supervisor
		// that does not answer gets no new task, and is let go once its
		// tasks are over.
		_ = sv.send(supervisor.Request{TaskID: id, Stop: &supervisor.StopRequest{Signal: int(syscall.SIGKILL)}})
		d.mu.Lock()
		sv.closing = true
		d.mu.Unlock()
		d.release(sv)
		return nil, fmt.Errorf("supervisor gave no answer%s: %w", logTail(filepath.Join(d.cfg.StateDir, supervisorsLog)), err)
	}
	if answer.Error != "" {
		d.mu.Lock()
		delete(sv.tasks, id)
		d.mu.Unlock()
		d.release(sv)
		return nil, errors.New(answer.Error)
	}
	t.st = handleState{
		SupervisorPid:   sv.proc.Pid,
		SupervisorStart: sv.start,
		TaskPid:         answer.Pid,
		StopSignal:      int(supervisor.StopFileSignal),
		StatusPath:      spec.StatusPath,
		StopPath:        spec.StopPath,
		Cgroup:          spec.Cgroup,
		LogDir:          spec.Logs.Dir,
	}
	return t, nil
}

// supervisorGroup names the v2 group, below the cgroup parent, where
// supervisors run.
const supervisorGroup = "supervisors"

// supervisorCgroup returns an open descriptor of the group supervisors
// start in, or -1. On v2 they leave the agent's group, so a service
// manager that stops the agent with everything in its group (systemd's
// default KillMode) leaves them, and their tasks, running. On v1, where
// moving them would cost every start a few RCU grace periods, and systemd
// tracks processes in a hierarchy caravan does not manage, they stay in
// the agent's groups: run the agent with KillMode=process there.
func (d *Driver) supervisorCgroup() int {
	if d.cgroups.Version() != cgroup.V2 {
		return -1
	}
	d.mu.Lock()
	g := d.supGroup
	d.mu.Unlock()
	if g == nil {
		var err error
		if g, err = d.cgroups.Create(d.cfg.CgroupParent+"/"+supervisorGroup, cgroup.Limits{}); err != nil {
			d.logger.Warn("create the supervisors' cgroup", "error", err)
			return -1
		}
		d.mu.Lock()
		d.supGroup = g
		d.mu.Unlock()
	}
	fd, err := g.OpenDir()
	if err != nil {
		d.logger.Warn("open the supervisors' cgroup", "error", err)
		return -1
	}
	return fd
}

// logTail returns the end of the supervisor's log, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 512 {
		b = b[len(b)-512:]
	}
	return " (supervisor log: " + strings.TrimSpace(string(b)) + ")"
}

// cleanup kills and deletes a task's cgroup and removes its state files.
func (d *Driver) cleanup(g *cgroup.Group, state ...string) {
	if g != nil {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := g.Kill(ctx); err != nil {
			d.logger.Warn("kill cgroup", "cgroup", g.Name(), "error", err)
		}
		if err := g.Delete(); err != nil {
			d.logger.Warn("delete cgroup", "cgroup", g.Name(), "error", err)
		}
	}
	for _, p := range state {
		if p == "" {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			d.logger.Warn("remove task state", "path", p, "error", err)
		}
	}
}
