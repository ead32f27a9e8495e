package caravan

import (
	"fmt"
	"time"
)

// Desired statuses: the server's wish for an allocation.
const (
	AllocDesiredRun   = "run"
	AllocDesiredStop  = "stop"
	AllocDesiredEvict = "evict"
)

// Client statuses: the agent's report on an allocation.
const (
	AllocClientPending  = "pending"
	AllocClientRunning  = "running"
	AllocClientComplete = "complete"
	AllocClientFailed   = "failed"
	AllocClientLost     = "lost"
)

// Task states. The terminal ones double as the precise terminal reason
// that every dialect maps to its own words.
const (
	TaskStatePending   = "pending"
	TaskStateRunning   = "running"
	TaskStateComplete  = "complete"  // exited 0
	TaskStateFailed    = "failed"    // exit code not 0, or a driver error
	TaskStateTimeout   = "timeout"   // stopped at its time limit
	TaskStateOOM       = "oom"       // killed for exceeding its memory limit
	TaskStateCancelled = "cancelled" // stopped by a user or by the server
	TaskStateLost      = "lost"      // its node failed
)

// TaskStateTerminal reports whether a task state is final.
func TaskStateTerminal(s string) bool {
	switch s {
	case TaskStateComplete, TaskStateFailed, TaskStateTimeout, TaskStateOOM, TaskStateCancelled, TaskStateLost:
		return true
	}
	return false
}

// Allocation is one copy of a task group placed on one node: the unit an
// agent runs.
//
//	        placed by the scheduler (desired run, client pending)
//	                      │
//	                      ▼
//	pending ──started──▶ running ──exit 0──▶ complete
//	   │                    │ ├──exit≠0, oom, timeout, driver error──▶ failed
//	   │                    │ └──node missed its TTL──▶ lost
//	   └──desired stop/evict: the agent stops the tasks──▶ complete (cancelled)
//
// A failed or lost allocation of a service or batch job is replaced by a
// new allocation (NextAllocation) according to the reschedule policy; the
// old one keeps its place in history until garbage collection.
type Allocation struct {
	ID     string `json:"id"`
	EvalID string `json:"eval_id"`
	// Name is "<job>.<group>[<index>]".
	Name       string `json:"name"`
	JobID      string `json:"job_id"`
	JobVersion uint64 `json:"job_version"`
	TaskGroup  string `json:"task_group"`
	// Index is the copy number in [0, count).
	Index    int    `json:"index"`
	NodeID   string `json:"node_id"`
	NodeName string `json:"node_name,omitempty"`
	// Job is the job version the allocation runs. The state store shares
	// one *Job among all allocations of a version; it is sent to agents and
	// left out of Raft entries.
	Job       *Job               `json:"job,omitempty"`
	Resources AllocatedResources `json:"resources"`

	DesiredStatus      string `json:"desired_status"`
	DesiredDescription string `json:"desired_description,omitempty"`
	ClientStatus       string `json:"client_status"`
	ClientDescription  string `json:"client_description,omitempty"`
	// TerminalReason is completed, failed, timeout, cancelled, oom or lost
	// once the allocation is client-terminal.
	TerminalReason string                `json:"terminal_reason,omitempty"`
	TaskStates     map[string]*TaskState `json:"task_states,omitempty"`

	PreviousAllocation string             `json:"previous_allocation,omitempty"`
	NextAllocation     string             `json:"next_allocation,omitempty"`
	RescheduleTracker  *RescheduleTracker `json:"reschedule_tracker,omitempty"`
	// FollowupEvalID is the delayed evaluation that will replace it.
	FollowupEvalID string `json:"followup_eval_id,omitempty"`

	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
	// AllocModifyIndex is the index of the last change the server made
	// (placement, desired status); agents watch it.
	AllocModifyIndex uint64    `json:"alloc_modify_index,omitempty"`
	CreateTime       time.Time `json:"create_time,omitzero"`
	ModifyTime       time.Time `json:"modify_time,omitzero"`
}

// TaskState is the agent's report on one task.
type TaskState struct {
	State      string    `json:"state"`
	Failed     bool      `json:"failed,omitempty"`
	Restarts   int       `json:"restarts,omitempty"`
	ExitCode   int       `json:"exit_code"`
	Signal     int       `json:"signal,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// LastRestart is when the task was last restarted in place.
	LastRestart time.Time `json:"last_restart,omitzero"`
	// Stats are the last resource figures sampled.
	Stats  *TaskStats   `json:"stats,omitempty"`
	Events []*TaskEvent `json:"events,omitempty"`
}

// TaskStats are resource figures sampled from the task's cgroup or container.
type TaskStats struct {
	// CPUTime is user plus system CPU time used so far.
	CPUTime Duration `json:"cpu_time"`
	// MemoryBytes is the current and MaxMemoryBytes the peak usage.
	MemoryBytes    int64 `json:"memory_bytes"`
	MaxMemoryBytes int64 `json:"max_memory_bytes"`
}

// Task event types.
const (
	TaskEventReceived      = "received"
	TaskEventSetup         = "setup"
	TaskEventSetupFailure  = "setup_failure"
	TaskEventDriverFailure = "driver_failure"
	TaskEventStarted       = "started"
	TaskEventExited        = "exited"
	TaskEventTimeout       = "timeout"
	TaskEventOOM           = "oom"
	TaskEventKilling       = "killing"
	TaskEventKilled        = "killed"
	TaskEventRestarting    = "restarting"
	TaskEventNotRestarting = "not_restarting"
	TaskEventSiblingFailed = "sibling_failed"
	TaskEventLost          = "lost"
	TaskEventReattached    = "reattached"
)

// TaskEvent is one transition of a task, with its time and detail.
type TaskEvent struct {
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	Message  string    `json:"message,omitempty"`
	ExitCode int       `json:"exit_code,omitempty"`
	Signal   int       `json:"signal,omitempty"`
	// RestartIn is the delay before the next restart (type restarting).
	RestartIn Duration `json:"restart_in,omitempty"`
}

// MaxTaskEvents is how many events a task state keeps: the first (received)
// and the newest ones.
const MaxTaskEvents = 12

// AppendEvent adds e, keeping the first event and the newest ones.
func (ts *TaskState) AppendEvent(e *TaskEvent) {
	ts.Events = append(ts.Events, e)
	if n := len(ts.Events); n > MaxTaskEvents {
		copy(ts.Events[1:], ts.Events[n-MaxTaskEvents+1:])
		ts.Events = ts.Events[:MaxTaskEvents]
	}
}

// RescheduleTracker records the reschedules that led to an allocation.
type RescheduleTracker struct {
	Events []RescheduleEvent `json:"events"`
}

// RescheduleEvent is one reschedule: when, from which allocation and node,
// after what delay.
type RescheduleEvent struct {
	Time        time.Time `json:"time"`
	PrevAllocID string    `json:"prev_alloc_id"`
	PrevNodeID  string    `json:"prev_node_id"`
	Delay       Duration  `json:"delay"`
}

// AllocName returns "<job>.<group>[<index>]".
func AllocName(jobID, group string, index int) string {
	return fmt.Sprintf("%s.%s[%d]", jobID, group, index)
}

// ServerTerminal reports whether the server wants the allocation gone.
func (a *Allocation) ServerTerminal() bool {
	return a.DesiredStatus == AllocDesiredStop || a.DesiredStatus == AllocDesiredEvict
}

// ClientTerminal reports whether the agent reports it finished.
func (a *Allocation) ClientTerminal() bool {
	switch a.ClientStatus {
	case AllocClientComplete, AllocClientFailed, AllocClientLost:
		return true
	}
	return false
}

// Terminal reports whether the allocation holds no resources any more in the
// scheduler's view: the agent finished it, or the server told the agent to
// stop it (the agent frees the resources before it takes new work).
func (a *Allocation) Terminal() bool {
	return a.ClientTerminal() || a.ServerTerminal()
}

// ShallowCopy returns a copy that shares the job, the task states and the
// tracker: enough for changing scalar fields copy-on-write.
func (a *Allocation) ShallowCopy() *Allocation {
	c := *a
	return &c
}

// Copy returns a deep copy, except for the shared Job.
func (a *Allocation) Copy() *Allocation {
	if a == nil {
		return nil
	}
	c := *a
	c.Resources.Cores = append([]int(nil), a.Resources.Cores...)
	c.Resources.Ports = append([]AllocatedPort(nil), a.Resources.Ports...)
	if a.TaskStates != nil {
		c.TaskStates = make(map[string]*TaskState, len(a.TaskStates))
		for k, ts := range a.TaskStates {
			c.TaskStates[k] = ts.Copy()
		}
	}
	if a.RescheduleTracker != nil {
		c.RescheduleTracker = &RescheduleTracker{Events: append([]RescheduleEvent(nil), a.RescheduleTracker.Events...)}
	}
	return &c
}

// Copy returns a deep copy.
func (ts *TaskState) Copy() *TaskState {
	if ts == nil {
		return nil
	}
	c := *ts
	if ts.Stats != nil {
		s := *ts.Stats
		c.Stats = &s
	}
	c.Events = make([]*TaskEvent, len(ts.Events))
	for i, e := range ts.Events {
		ec := *e
		c.Events[i] = &ec
	}
	return &c
}

// AllocClientUpdate is what an agent reports about one allocation.
type AllocClientUpdate struct {
	ID                string                `json:"id"`
	ClientStatus      string                `json:"client_status"`
	ClientDescription string                `json:"client_description,omitempty"`
	TerminalReason    string                `json:"terminal_reason,omitempty"`
	TaskStates        map[string]*TaskState `json:"task_states,omitempty"`
}

// Validate checks an agent's report.
func (u *AllocClientUpdate) Validate() error {
	v := &validator{}
	if !ValidUUID(u.ID) {
		v.addf("id", "%q is not an allocation id", u.ID)
	}
	switch u.ClientStatus {
	case AllocClientPending, AllocClientRunning, AllocClientComplete, AllocClientFailed, AllocClientLost:
	default:
		v.addf("client_status", "unknown client status %q", u.ClientStatus)
	}
	switch u.TerminalReason {
	case "", TaskStateComplete, TaskStateFailed, TaskStateTimeout, TaskStateOOM, TaskStateCancelled, TaskStateLost:
	default:
		v.addf("terminal_reason", "unknown terminal reason %q", u.TerminalReason)
	}
	for name, ts := range u.TaskStates {
		if ts == nil {
			v.addf("task_states."+name, "null")
			continue
		}
		switch ts.State {
		case TaskStatePending, TaskStateRunning:
		default:
			if !TaskStateTerminal(ts.State) {
				v.addf("task_states."+name+".state", "unknown task state %q", ts.State)
			}
		}
		if len(ts.Events) > 4*MaxTaskEvents {
			v.addf("task_states."+name+".events", "too many events (%d)", len(ts.Events))
		}
	}
	return v.err()
}
