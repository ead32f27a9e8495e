package caravan

import (
	"time"
)

// Job types.
const (
	// JobTypeService keeps Count copies of each task group running.
	JobTypeService = "service"
	// JobTypeBatch runs each task group copy to completion once.
	JobTypeBatch = "batch"
	// JobTypeSystem runs one copy of each task group on every eligible node.
	JobTypeSystem = "system"
)

// Job statuses, derived from the job's allocations and evaluations.
const (
	JobStatusPending  = "pending"  // nothing placed yet, or waiting for capacity
	JobStatusRunning  = "running"  // at least one allocation is not terminal
	JobStatusComplete = "complete" // batch: every allocation finished with exit 0
	JobStatusFailed   = "failed"   // out of retries
	JobStatusStopped  = "stopped"  // stopped by a user
)

// Placement algorithms, chosen per job (Job.Algorithm) with a server default.
const (
	AlgorithmBinpack        = "binpack"
	AlgorithmSpread         = "spread"
	AlgorithmFirstFit       = "first-fit"
	AlgorithmMostFreeMemory = "most-free-memory"
)

// DefaultNodePool is the pool of nodes that name none, and of jobs that name
// none. In the Slurm dialect the node pool is the partition.
const DefaultNodePool = "default"

// Priorities are in [MinPriority, MaxPriority]; jobs get DefaultPriority.
const (
	MinPriority     = 1
	MaxPriority     = 100
	DefaultPriority = 50
)

// Job is what a user submits: one or more task groups to place and run.
// Fields marked "set by the server" are ignored on submit.
type Job struct {
	// ID names the job. Left empty on submit, the server assigns the next
	// number: "1001", "1002", ...
	ID string `json:"id"`
	// Name is a display name; it defaults to the ID.
	Name string `json:"name,omitempty"`
	// Type is service (the default), batch or system.
	Type string `json:"type,omitempty"`
	// Priority in [1, 100]; higher is served first. Default 50.
	Priority int `json:"priority,omitempty"`
	// Account is charged for the job's use (Slurm's account).
	Account string `json:"account,omitempty"`
	// NodePool restricts placement to one pool of nodes (Slurm's partition).
	NodePool string `json:"node_pool,omitempty"`
	// Datacenters the job may run in; empty or "*" means any.
	Datacenters []string `json:"datacenters,omitempty"`
	// Constraints apply to every task group.
	Constraints []Constraint `json:"constraints,omitempty"`
	// Spreads ask placement to spread allocations across attribute values.
	Spreads []Spread `json:"spreads,omitempty"`
	// Algorithm overrides the server's placement algorithm for this job.
	Algorithm string `json:"algorithm,omitempty"`
	// Update controls rolling replacement when the spec changes.
	Update *UpdateStrategy `json:"update,omitempty"`
	// AllAtOnce places every allocation of an evaluation or none.
	AllAtOnce bool `json:"all_at_once,omitempty"`
	// Meta is free-form metadata, available to tasks as environment.
	Meta map[string]string `json:"meta,omitempty"`
	// TaskGroups are the units of placement.
	TaskGroups []*TaskGroup `json:"task_groups"`

	// Stop is set by the server when a user stops the job.
	Stop bool `json:"stop,omitempty"`
	// Status is derived by the server from allocations and evaluations.
	Status string `json:"status,omitempty"`
	// StatusDescription explains Status where useful.
	StatusDescription string `json:"status_description,omitempty"`
	// Version counts spec changes from 0; set by the server.
	Version uint64 `json:"version"`
	// SubmitTime is when this version was submitted; set by the server.
	SubmitTime time.Time `json:"submit_time,omitzero"`
	// CreateIndex, ModifyIndex and JobModifyIndex are Raft indexes set by
	// the server: creation, last change of any field (status included), and
	// last change of the spec.
	CreateIndex    uint64 `json:"create_index,omitempty"`
	ModifyIndex    uint64 `json:"modify_index,omitempty"`
	JobModifyIndex uint64 `json:"job_modify_index,omitempty"`
}

// TaskGroup is a set of tasks that run together on one node. Count copies of
// it are placed, each as one allocation.
type TaskGroup struct {
	Name        string            `json:"name"`
	Count       *int              `json:"count,omitempty"`
	Constraints []Constraint      `json:"constraints,omitempty"`
	Spreads     []Spread          `json:"spreads,omitempty"`
	Restart     *RestartPolicy    `json:"restart,omitempty"`
	Reschedule  *ReschedulePolicy `json:"reschedule,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	Tasks       []*Task           `json:"tasks"`
}

// Drivers.
const (
	DriverExec   = "exec"
	DriverDocker = "docker"
)

// Task is the smallest unit run: a process or a container.
type Task struct {
	Name string `json:"name"`
	// Driver is exec or docker; left out, it is inferred from the config:
	// config.image means docker, config.command or config.script means exec.
	Driver      string            `json:"driver,omitempty"`
	Config      TaskConfig        `json:"config"`
	Env         map[string]string `json:"env,omitempty"`
	Resources   Resources         `json:"resources"`
	Constraints []Constraint      `json:"constraints,omitempty"`
	// User runs the task; empty means the agent's unprivileged default.
	User string `json:"user,omitempty"`
	// WorkDir is the working directory; empty means the task directory.
	WorkDir string `json:"work_dir,omitempty"`
	// TimeLimit stops the task (state timeout) when it runs longer.
	TimeLimit Duration `json:"time_limit,omitempty"`
	// KillTimeout is how long a task has between SIGTERM and SIGKILL.
	KillTimeout Duration `json:"kill_timeout,omitempty"`
	// Stdout and Stderr are extra files that receive the task's output, on
	// the node, beside the agent's own rotated logs. Patterns: %j job id,
	// %a array index, %x job name, %n node name, %% a percent sign.
	Stdout string            `json:"stdout,omitempty"`
	Stderr string            `json:"stderr,omitempty"`
	Meta   map[string]string `json:"meta,omitempty"`
}

// TaskConfig is the driver-specific part of a task. exec reads Command, Args
// and Script; docker reads Image, Command, Args, Entrypoint, Port and Labels.
type TaskConfig struct {
	// Command is a program to run, or, when Args is empty and it holds
	// white space, a whole command line run by /bin/sh -c.
	Command string   `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	// Script is a script body written into the task directory and run by
	// its shebang line (or /bin/sh when it has none).
	Script string `json:"script,omitempty"`
	// Image is the Docker image.
	Image      string   `json:"image,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	// Port is a container port to publish on a host port that the scheduler
	// picks (as the myNomad-style API has it). The chosen host port is in
	// the allocation's resources under the label "port".
	Port int `json:"port,omitempty"`
	// Labels are added to the container beside caravan's own.
	Labels map[string]string `json:"labels,omitempty"`
	// ForcePull is accepted for compatibility; no registry is ever needed
	// when the image exists locally.
	ForcePull bool `json:"force_pull,omitempty"`
}

// Resources are what one task asks for.
type Resources struct {
	// CPU is in MHz and becomes cpu shares; default 100.
	CPU int `json:"cpu,omitempty"`
	// Cores is a count of whole cores reserved for the task alone (a
	// cpuset). It excludes CPU.
	Cores int `json:"cores,omitempty"`
	// Memory is in MB; default 300. It is a hard limit.
	Memory MemoryMB `json:"memory,omitempty"`
	// Ports are network ports the task needs on its node.
	Ports []Port `json:"ports,omitempty"`
}

// Port asks for one port on the node. Value 0 asks the scheduler to pick a
// free port from the node's dynamic range; a Value above 0 is static. To is
// the port inside the container (docker), default the host port.
type Port struct {
	Label string `json:"label"`
	Value int    `json:"value,omitempty"`
	To    int    `json:"to,omitempty"`
}

// Constraint filters nodes by attribute. Attribute and Value may name node
// fields with ${...}: ${attr.os}, ${attr.cpu.arch}, ${meta.rack},
// ${node.datacenter}, ${node.pool}, ${node.name}, ${node.id}.
type Constraint struct {
	Attribute string `json:"attribute,omitempty"`
	Operator  string `json:"operator,omitempty"`
	Value     string `json:"value,omitempty"`
}

// Constraint operators.
const (
	ConstraintEqual        = "="
	ConstraintNotEqual     = "!="
	ConstraintLess         = "<"
	ConstraintLessEqual    = "<="
	ConstraintGreater      = ">"
	ConstraintGreaterEqual = ">="
	ConstraintRegexp       = "regexp"
	ConstraintSetContains  = "set_contains"
	ConstraintVersion      = "version"
	ConstraintIsSet        = "is_set"
	ConstraintIsNotSet     = "is_not_set"
)

// String renders the constraint as it appears in placement failure reports.
func (c Constraint) String() string {
	switch c.Operator {
	case ConstraintIsSet, ConstraintIsNotSet:
		return c.Attribute + " " + c.Operator
	}
	return c.Attribute + " " + c.Operator + " " + c.Value
}

// Spread asks the scheduler to spread allocations evenly over the values of
// a node attribute, such as ${meta.rack}.
type Spread struct {
	Attribute string `json:"attribute"`
	// Weight in (0, 100] sets how much the spread counts against binpacking.
	Weight int `json:"weight,omitempty"`
}

// Restart modes.
const (
	RestartModeFail  = "fail"  // out of attempts: the task fails
	RestartModeDelay = "delay" // out of attempts: wait out the interval, then try again
)

// RestartPolicy restarts a task in place, on the same node.
type RestartPolicy struct {
	Attempts int      `json:"attempts"`
	Interval Duration `json:"interval,omitempty"`
	Delay    Duration `json:"delay,omitempty"`
	Mode     string   `json:"mode,omitempty"`
}

// Delay functions of a reschedule policy.
const (
	DelayConstant    = "constant"
	DelayExponential = "exponential"
	DelayFibonacci   = "fibonacci"
)

// ReschedulePolicy places a failed allocation again, possibly on another node.
type ReschedulePolicy struct {
	// Attempts within Interval; ignored when Unlimited.
	Attempts      int      `json:"attempts"`
	Interval      Duration `json:"interval,omitempty"`
	Delay         Duration `json:"delay,omitempty"`
	DelayFunction string   `json:"delay_function,omitempty"`
	MaxDelay      Duration `json:"max_delay,omitempty"`
	Unlimited     bool     `json:"unlimited,omitempty"`
}

// UpdateStrategy controls how allocations of an old job version are replaced.
type UpdateStrategy struct {
	// MaxParallel old allocations are replaced at a time; a replacement is
	// done when its allocation runs. Default 1; 0 replaces all at once.
	MaxParallel int `json:"max_parallel"`
}

// GroupCount returns the task group's count, with the default of 1.
func (tg *TaskGroup) GroupCount() int {
	if tg.Count == nil {
		return 1
	}
	return *tg.Count
}

// LookupTaskGroup returns the named task group, or nil.
func (j *Job) LookupTaskGroup(name string) *TaskGroup {
	for _, tg := range j.TaskGroups {
		if tg.Name == name {
			return tg
		}
	}
	return nil
}

// LookupTask returns the named task of the group, or nil.
func (tg *TaskGroup) LookupTask(name string) *Task {
	for _, t := range tg.Tasks {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Terminal reports whether the job's status is final for now.
func (j *Job) Terminal() bool {
	switch j.Status {
	case JobStatusComplete, JobStatusFailed, JobStatusStopped:
		return true
	}
	return false
}

// Resources sums what the group's tasks ask for.
func (tg *TaskGroup) Resources() Resources {
	var r Resources
	for _, t := range tg.Tasks {
		r.CPU += t.Resources.CPU
		r.Cores += t.Resources.Cores
		r.Memory += t.Resources.Memory
		r.Ports = append(r.Ports, t.Resources.Ports...)
	}
	return r
}
