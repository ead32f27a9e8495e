package caravan

import "time"

// This file holds the request and response bodies of the HTTP API that are
// not domain objects themselves. Server, agent, CLI and Go client share them.

// JobRegisterRequest is the body of POST /v1/jobs.
type JobRegisterRequest struct {
	Job *Job `json:"job"`
}

// JobRegisterResponse answers a job registration.
type JobRegisterResponse struct {
	JobID      string   `json:"job_id"`
	EvalID     string   `json:"eval_id,omitempty"`
	JobVersion uint64   `json:"job_version"`
	Index      uint64   `json:"index"`
	Warnings   []string `json:"warnings,omitempty"`
}

// EvalResponse answers a write that created an evaluation (stop, force
// evaluate, restart, drain).
type EvalResponse struct {
	EvalID string `json:"eval_id,omitempty"`
	Index  uint64 `json:"index"`
}

// JobStub is a job as lists show it: no task groups, plus the summary.
type JobStub struct {
	ID                string                  `json:"id"`
	Name              string                  `json:"name"`
	Type              string                  `json:"type"`
	Priority          int                     `json:"priority"`
	Account           string                  `json:"account,omitempty"`
	NodePool          string                  `json:"node_pool"`
	Status            string                  `json:"status"`
	StatusDescription string                  `json:"status_description,omitempty"`
	Stop              bool                    `json:"stop,omitempty"`
	Version           uint64                  `json:"version"`
	SubmitTime        time.Time               `json:"submit_time,omitzero"`
	Summary           map[string]GroupSummary `json:"summary,omitempty"`
	CreateIndex       uint64                  `json:"create_index"`
	ModifyIndex       uint64                  `json:"modify_index"`
}

// Stub returns the job's list form.
func (j *Job) Stub(s *JobSummary) *JobStub {
	st := &JobStub{
		ID: j.ID, Name: j.Name, Type: j.Type, Priority: j.Priority, Account: j.Account,
		NodePool: j.NodePool, Status: j.Status, StatusDescription: j.StatusDescription,
		Stop: j.Stop, Version: j.Version, SubmitTime: j.SubmitTime,
		CreateIndex: j.CreateIndex, ModifyIndex: j.ModifyIndex,
	}
	if s != nil {
		st.Summary = s.Groups
	}
	return st
}

// Stub returns the allocation without its job, as lists show it.
func (a *Allocation) Stub() *Allocation {
	if a.Job == nil {
		return a
	}
	c := *a
	c.Job = nil
	return &c
}

// NodeRegisterRequest is the body of POST /v1/node/register.
type NodeRegisterRequest struct {
	Node *Node `json:"node"`
}

// NodeRegisterResponse answers a registration or heartbeat: how long the
// server waits for the next heartbeat.
type NodeRegisterResponse struct {
	NodeID       string   `json:"node_id"`
	HeartbeatTTL Duration `json:"heartbeat_ttl"`
	Index        uint64   `json:"index"`
	// Servers lists the HTTP addresses of every server, so agents learn
	// the whole cluster from one address.
	Servers []string `json:"servers,omitempty"`
}

// HeartbeatRequest is the body of POST /v1/node/{id}/heartbeat.
type HeartbeatRequest struct {
	// Status is the status the agent reports, normally "ready".
	Status string `json:"status,omitempty"`
}

// NodeDrainRequest is the body of POST /v1/node/{id}/drain. A null Drain
// cancels a drain; MarkEligible makes the node eligible again.
type NodeDrainRequest struct {
	Drain        *DrainStrategy `json:"drain"`
	MarkEligible bool           `json:"mark_eligible,omitempty"`
}

// NodeEligibilityRequest is the body of POST /v1/node/{id}/eligibility.
type NodeEligibilityRequest struct {
	Eligibility string `json:"eligibility"`
}

// AllocUpdateRequest is the body of POST /v1/node/{id}/allocations: an
// agent's batched allocation status updates.
type AllocUpdateRequest struct {
	Allocs []*AllocClientUpdate `json:"allocs"`
}

// IndexResponse answers a write with the Raft index it committed at.
type IndexResponse struct {
	Index uint64 `json:"index"`
}

// ServerMember is one server of the cluster.
type ServerMember struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
	// Status, Leader and Voter are filled in by reads from the Raft
	// configuration: alive or unknown.
	Leader bool   `json:"leader,omitempty"`
	Voter  bool   `json:"voter,omitempty"`
	Status string `json:"status,omitempty"`
}

// JoinRequest is the body of POST /v1/operator/raft/join, sent by a server
// that joins the cluster.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// Health is the body of GET /v1/health.
type Health struct {
	OK     bool   `json:"ok"`
	Leader string `json:"leader,omitempty"`
	Server string `json:"server,omitempty"`
	Agent  string `json:"agent,omitempty"`
	Index  uint64 `json:"index,omitempty"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
	// Fields lists validation problems by JSON path, when there are any.
	Fields []FieldError `json:"fields,omitempty"`
	// RequestID identifies the request in the server's logs.
	RequestID string `json:"request_id,omitempty"`
}

// Event is one change of state, as /v1/event/stream sends it.
type Event struct {
	Topic   string `json:"topic"`
	Type    string `json:"type"`
	Key     string `json:"key"`
	Index   uint64 `json:"index"`
	Payload any    `json:"payload,omitempty"`
}
