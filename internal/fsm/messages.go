package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
)

// MessageType is the first byte of a Raft entry: which command its JSON
// payload holds. Values are part of the Raft log format: never renumber.
type MessageType uint8

// Commands.
const (
	JobRegister       MessageType = 1
	JobStop           MessageType = 2
	EvalUpsert        MessageType = 3
	NodeRegister      MessageType = 4
	NodeStatus        MessageType = 5
	NodeDrain         MessageType = 6
	NodeEligibility   MessageType = 7
	NodeDeregister    MessageType = 8
	AllocClientUpdate MessageType = 9
	PlanApply         MessageType = 10
	Reap              MessageType = 11
	ServerMember      MessageType = 12
	// PlanApplyCompact carries a PlanApplyRequest like PlanApply, written
	// in the compact form of compact.go.
	PlanApplyCompact MessageType = 13
	// JobRegisterBatch carries several job registrations, committed in
	// one transaction.
	JobRegisterBatch MessageType = 14
)

var messageNames = [...]string{
	JobRegister:       "JobRegister",
	JobStop:           "JobStop",
	EvalUpsert:        "EvalUpsert",
	NodeRegister:      "NodeRegister",
	NodeStatus:        "NodeStatus",
	NodeDrain:         "NodeDrain",
	NodeEligibility:   "NodeEligibility",
	NodeDeregister:    "NodeDeregister",
	AllocClientUpdate: "AllocClientUpdate",
	PlanApply:         "PlanApply",
	Reap:              "Reap",
	ServerMember:      "ServerMember",
	PlanApplyCompact:  "PlanApplyCompact",
	JobRegisterBatch:  "JobRegisterBatch",
}

// String names the command.
func (t MessageType) String() string {
	if int(t) < len(messageNames) && messageNames[t] != "" {
		return messageNames[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Every payload carries Time: the leader's clock when it made the entry,
// used for the create and modify times it writes, so that every server
// writes the same.

// JobRegisterRequest creates or updates a job.
type JobRegisterRequest struct {
	Time time.Time `json:"time"`
	// Job is canonicalized and validated by the server. An empty ID gets
	// the next number of the job id sequence.
	Job *caravan.Job `json:"job"`
	// Eval, optional, is written for the job.
	Eval *caravan.Evaluation `json:"eval,omitempty"`
	// ForceNewVersion makes a new version even for an unchanged spec (a
	// restart).
	ForceNewVersion bool `json:"force_new_version,omitempty"`
}

// JobRegisterBatchRequest makes several registrations, in order, as one
// write: when one fails, none is made.
type JobRegisterBatchRequest struct {
	Jobs []JobRegisterRequest `json:"jobs"`
}

// JobStopRequest stops a job, or purges it.
type JobStopRequest struct {
	Time  time.Time           `json:"time"`
	JobID string              `json:"job_id"`
	Purge bool                `json:"purge,omitempty"`
	Eval  *caravan.Evaluation `json:"eval,omitempty"`
}

// EvalUpsertRequest writes evaluations.
type EvalUpsertRequest struct {
	Time  time.Time             `json:"time"`
	Evals []*caravan.Evaluation `json:"evals"`
}

// NodeRegisterRequest creates or updates a node.
type NodeRegisterRequest struct {
	Time  time.Time             `json:"time"`
	Node  *caravan.Node         `json:"node"`
	Evals []*caravan.Evaluation `json:"evals,omitempty"`
}

// NodeStatusRequest sets a node's liveness; down loses its allocations.
type NodeStatusRequest struct {
	Time        time.Time             `json:"time"`
	NodeID      string                `json:"node_id"`
	Status      string                `json:"status"`
	Description string                `json:"description,omitempty"`
	Evals       []*caravan.Evaluation `json:"evals,omitempty"`
}

// NodeDrainRequest starts (Drain not nil) or cancels a drain.
type NodeDrainRequest struct {
	Time   time.Time              `json:"time"`
	NodeID string                 `json:"node_id"`
	Drain  *caravan.DrainStrategy `json:"drain,omitempty"`
	// Eligibility, when not empty, is set too.
	Eligibility string                `json:"eligibility,omitempty"`
	Evals       []*caravan.Evaluation `json:"evals,omitempty"`
}

// NodeEligibilityRequest sets a node's scheduling eligibility.
type NodeEligibilityRequest struct {
	Time        time.Time             `json:"time"`
	NodeID      string                `json:"node_id"`
	Eligibility string                `json:"eligibility"`
	Evals       []*caravan.Evaluation `json:"evals,omitempty"`
}

// NodeDeregisterRequest deletes nodes.
type NodeDeregisterRequest struct {
	Time    time.Time `json:"time"`
	NodeIDs []string  `json:"node_ids"`
}

// AllocClientUpdateRequest carries an agent's batched allocation reports.
type AllocClientUpdateRequest struct {
	Time    time.Time                    `json:"time"`
	NodeID  string                       `json:"node_id"`
	Updates []*caravan.AllocClientUpdate `json:"updates"`
	Evals   []*caravan.Evaluation        `json:"evals,omitempty"`
}

// PlanApplyRequest commits a batch of plans in one entry.
type PlanApplyRequest struct {
	Time  time.Time          `json:"time"`
	Plans []state.PlanUpdate `json:"plans"`
}

// ReapRequest deletes what garbage collection found.
type ReapRequest struct {
	Time time.Time `json:"time"`
	state.Reap
}

// ServerMemberRequest records (or with Remove forgets) a Raft peer.
type ServerMemberRequest struct {
	Time   time.Time          `json:"time"`
	Member state.ServerMember `json:"member"`
	Remove bool               `json:"remove,omitempty"`
}

// Response is what Apply returns for a command that succeeded; failures
// return an error value instead.
type Response struct {
	// Index is the Raft index of the entry.
	Index uint64
	// JobID and JobVersion are set by JobRegister (the id it assigned and
	// the version it wrote) and JobID by JobStop.
	JobID      string
	JobVersion uint64
	// Jobs are set by JobRegisterBatch, one per registration.
	Jobs []state.RegisteredJob
}

// Encode makes a Raft entry: the type byte, then payload as JSON. The
// payload must be the request type of t (a pointer or a value).
// Allocations in a PlanApplyRequest are written without their Job (the
// state store links them to the stored job version); the request itself is
// not modified.
func Encode(t MessageType, payload any) ([]byte, error) {
	if err := checkPayload(t, payload); err != nil {
		return nil, err
	}
	var plan *PlanApplyRequest
	switch p := payload.(type) {
	case *PlanApplyRequest:
		plan = p
	case PlanApplyRequest:
		plan = &p
	}
	switch {
	case t == PlanApplyCompact:
		payload = compactOf(plan)
	case plan != nil:
		payload = withoutJobs(plan)
	}
	// Written after the type byte in one buffer (json.Marshal would make
	// a copy of the whole payload); the encoder's final newline is JSON
	// white space.
	var buf bytes.Buffer
	buf.WriteByte(byte(t))
	if err := json.NewEncoder(&buf).Encode(payload); err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	return buf.Bytes(), nil
}

// checkPayload refuses a payload of the wrong type for t.
func checkPayload(t MessageType, payload any) error {
	var ok bool
	switch t {
	case JobRegister:
		ok = is[JobRegisterRequest](payload)
	case JobRegisterBatch:
		ok = is[JobRegisterBatchRequest](payload)
	case JobStop:
		ok = is[JobStopRequest](payload)
	case EvalUpsert:
		ok = is[EvalUpsertRequest](payload)
	case NodeRegister:
		ok = is[NodeRegisterRequest](payload)
	case NodeStatus:
		ok = is[NodeStatusRequest](payload)
	case NodeDrain:
		ok = is[NodeDrainRequest](payload)
	case NodeEligibility:
		ok = is[NodeEligibilityRequest](payload)
	case NodeDeregister:
		ok = is[NodeDeregisterRequest](payload)
	case AllocClientUpdate:
		ok = is[AllocClientUpdateRequest](payload)
	case PlanApply, PlanApplyCompact:
		ok = is[PlanApplyRequest](payload)
	case Reap:
		ok = is[ReapRequest](payload)
	case ServerMember:
		ok = is[ServerMemberRequest](payload)
	default:
		return fmt.Errorf("encode: unknown message type %d: %w", uint8(t), caravan.ErrInvalid)
	}
	if !ok {
		return fmt.Errorf("encode %s: payload is a %T: %w", t, payload, caravan.ErrInvalid)
	}
	return nil
}

func is[T any](payload any) bool {
	switch p := payload.(type) {
	case T:
		return true
	case *T:
		return p != nil
	}
	return false
}

// withoutJobs returns a copy of the request whose allocations have no Job.
func withoutJobs(p *PlanApplyRequest) *PlanApplyRequest {
	c := &PlanApplyRequest{Time: p.Time, Plans: make([]state.PlanUpdate, len(p.Plans))}
	for i, plan := range p.Plans {
		plan.Stops = stripJobs(plan.Stops)
		plan.Allocs = stripJobs(plan.Allocs)
		c.Plans[i] = plan
	}
	return c
}

func stripJobs(allocs []*caravan.Allocation) []*caravan.Allocation {
	out := make([]*caravan.Allocation, len(allocs))
	for i, a := range allocs {
		if a == nil || a.Job == nil {
			out[i] = a
			continue
		}
		c := a.ShallowCopy()
		c.Job = nil
		out[i] = c
	}
	return out
}
