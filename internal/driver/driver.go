// Package driver defines how the agent runs one task: the Driver interface
// that the exec and docker drivers implement, the task configuration they
// get, the handle the agent persists to re-attach after a restart, and the
// exit result they report.
//
// A task's life as a driver sees it:
//
//	Start ──▶ running ──exit / time limit / OOM──▶ Wait returns ExitResult
//	  │          │
//	  │          └── Stop (SIGTERM, SIGKILL after kill timeout, whole tree)
//	  │                   └──▶ Wait returns ExitResult{Killed: true}
//	  └── agent restarts ──▶ Recover(handle) ──▶ running, or Wait returns
//	                         the exit that happened while the agent was down
//
// Destroy frees whatever is left (cgroup, container) once Wait returned.
package driver

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/caravan-sched/caravan"
)

// ErrTaskNotFound means the driver knows no task with that id: it was never
// started, or it is gone without a trace.
var ErrTaskNotFound = errors.New("task not found")

// Driver runs tasks of one kind. Implementations are safe for concurrent use.
type Driver interface {
	// Name is "exec" or "docker".
	Name() string
	// Fingerprint tells whether the driver can run tasks on this machine.
	Fingerprint(ctx context.Context) caravan.DriverInfo
	// Start starts the task and returns at once, with a handle the agent
	// persists. An error means the task did not start (a driver failure:
	// bad command, missing image).
	Start(ctx context.Context, cfg *TaskConfig) (*Handle, error)
	// Recover re-attaches to a task started by an earlier agent process.
	// It does not restart it. After Recover, Wait reports its exit, which
	// may already have happened while the agent was down.
	Recover(ctx context.Context, h *Handle) error
	// Wait blocks until the task exits or ctx ends.
	Wait(ctx context.Context, taskID string) (*ExitResult, error)
	// Stop asks the task to stop: signal (SIGTERM when 0) to the whole
	// process group or container, then SIGKILL to everything the task
	// started once killTimeout has passed. It returns when the request is
	// made; Wait reports the exit with Killed set.
	Stop(ctx context.Context, taskID string, killTimeout time.Duration, signal int) error
	// Destroy frees everything the task held (cgroup, container, state). It
	// kills what still runs.
	Destroy(ctx context.Context, taskID string) error
	// Stats samples the task's resource use.
	Stats(ctx context.Context, taskID string) (*caravan.TaskStats, error)
}

// TaskConfig is everything a driver needs to start one task.
type TaskConfig struct {
	// ID identifies the task to the driver: "<alloc id>/<task name>".
	ID        string
	AllocID   string
	JobID     string
	JobName   string
	TaskGroup string
	Task      *caravan.Task
	// Env is the complete environment of the task.
	Env map[string]string
	// AllocDir is the allocation's directory; its alloc/ folder is shared
	// by the group's tasks. TaskDir is this task's directory, holding
	// local/ and tmp/.
	AllocDir string
	TaskDir  string
	// User runs the task; "" means the driver's unprivileged default.
	User string
	// CPU in MHz (cpu shares), Memory a hard limit, Cores an exclusive
	// cpuset; Ports are the host ports the scheduler gave the task.
	CPU    int
	Memory caravan.MemoryMB
	Cores  []int
	Ports  []caravan.AllocatedPort
	// TimeLimit, when above 0, stops the task with ExitResult.TimedOut.
	TimeLimit   time.Duration
	KillTimeout time.Duration
	// Logs says where stdout and stderr go.
	Logs LogConfig
}

// LogConfig names the rotated log files of a task and the extra files the
// job asked for (already expanded: %j, %a, %x, %n replaced).
type LogConfig struct {
	// Dir holds "<task>.stdout.N" and "<task>.stderr.N".
	Dir         string
	MaxFileSize int64
	MaxFiles    int
	// StdoutPath and StderrPath, when set, receive a copy of the output.
	StdoutPath string
	StderrPath string
}

// Handle is what the agent persists for a running task so that a new agent
// process can re-attach to it. State is driver-specific.
type Handle struct {
	Driver    string          `json:"driver"`
	TaskID    string          `json:"task_id"`
	StartedAt time.Time       `json:"started_at"`
	State     json.RawMessage `json:"state"`
}

// ExitResult is how a task ended.
type ExitResult struct {
	ExitCode int `json:"exit_code"`
	// Signal is the signal that ended the process, when one did.
	Signal int `json:"signal,omitempty"`
	// OOMKilled: the memory limit killed it.
	OOMKilled bool `json:"oom_killed,omitempty"`
	// TimedOut: the time limit stopped it.
	TimedOut bool `json:"timed_out,omitempty"`
	// Killed: Stop stopped it.
	Killed bool `json:"killed,omitempty"`
	// Err is a driver failure after start (for example the task's
	// supervisor vanished), as text.
	Err        string             `json:"err,omitempty"`
	StartedAt  time.Time          `json:"started_at,omitzero"`
	FinishedAt time.Time          `json:"finished_at,omitzero"`
	Stats      *caravan.TaskStats `json:"stats,omitempty"`
}

// Successful reports an exit with code 0 that nothing forced.
func (r *ExitResult) Successful() bool {
	return r.ExitCode == 0 && r.Signal == 0 && !r.OOMKilled && !r.TimedOut && !r.Killed && r.Err == ""
}

// State maps the result to the task's terminal state. Stopped tasks are
// cancelled; the caller overrides that when it stopped the task for another
// reason.
func (r *ExitResult) State() string {
	switch {
	case r.OOMKilled:
		return caravan.TaskStateOOM
	case r.TimedOut:
		return caravan.TaskStateTimeout
	case r.Killed:
		return caravan.TaskStateCancelled
	case r.Successful():
		return caravan.TaskStateComplete
	}
	return caravan.TaskStateFailed
}
