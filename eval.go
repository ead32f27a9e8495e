package caravan

import "time"

// Evaluation statuses.
//
//	created (pending) ──dequeued by a worker──▶ plan submitted ──▶ complete
//	      ▲                        │
//	      │                        ├── not everything fits ──▶ complete, plus a new
//	      │                        │       blocked evaluation for the rest
//	      │                        └── scheduler error, out of attempts ──▶ failed
//	 blocked ◀─────────────────────┘
//	      └── capacity changed (node ready, allocation stopped) ──▶ pending again
//
// A pending evaluation with WaitUntil in the future (a delayed reschedule)
// is held back by the broker until then. Cancelled evaluations were made
// moot by a newer one for the same job.
const (
	EvalStatusPending   = "pending"
	EvalStatusBlocked   = "blocked"
	EvalStatusComplete  = "complete"
	EvalStatusFailed    = "failed"
	EvalStatusCancelled = "cancelled"
)

// What triggered an evaluation.
const (
	TriggerJobRegister   = "job-register"
	TriggerJobDeregister = "job-deregister"
	TriggerForce         = "force"
	TriggerNodeUpdate    = "node-update"
	TriggerNodeDrain     = "node-drain"
	TriggerAllocStop     = "alloc-stop"
	TriggerAllocFailure  = "alloc-failure"
	TriggerAllocUpdate   = "alloc-update" // a rolling update may go on
	TriggerReschedule    = "reschedule"   // a delayed reschedule is due
	TriggerQueuedAllocs  = "queued-allocs"
	TriggerMaxPlans      = "max-plan-attempts"
	TriggerRetryFailed   = "failed-follow-up"
)

// Evaluation is a request to reconcile one job with the cluster.
type Evaluation struct {
	ID       string `json:"id"`
	Priority int    `json:"priority"`
	// Type is the job's type; it picks the scheduler.
	Type           string `json:"type"`
	TriggeredBy    string `json:"triggered_by"`
	JobID          string `json:"job_id"`
	JobModifyIndex uint64 `json:"job_modify_index,omitempty"`
	NodeID         string `json:"node_id,omitempty"`
	NodePool       string `json:"node_pool,omitempty"`

	Status            string `json:"status"`
	StatusDescription string `json:"status_description,omitempty"`
	// WaitUntil holds a pending evaluation back until then.
	WaitUntil time.Time `json:"wait_until,omitzero"`
	// NextEval, PreviousEval and BlockedEval link evaluations that follow
	// one another.
	NextEval     string `json:"next_eval,omitempty"`
	PreviousEval string `json:"previous_eval,omitempty"`
	BlockedEval  string `json:"blocked_eval,omitempty"`
	// FailedTGAllocs explains, per task group, why allocations could not
	// be placed.
	FailedTGAllocs map[string]*AllocMetric `json:"failed_tg_allocs,omitempty"`
	// QueuedAllocations counts, per task group, allocations still waiting
	// for placement.
	QueuedAllocations map[string]int `json:"queued_allocations,omitempty"`
	// SubmitTime orders waiting work of equal priority: the submit time of
	// the job version that first asked for the work.
	SubmitTime time.Time `json:"submit_time,omitzero"`
	// SnapshotIndex is the state index the scheduler worked from.
	SnapshotIndex uint64    `json:"snapshot_index,omitempty"`
	CreateIndex   uint64    `json:"create_index,omitempty"`
	ModifyIndex   uint64    `json:"modify_index,omitempty"`
	CreateTime    time.Time `json:"create_time,omitzero"`
	ModifyTime    time.Time `json:"modify_time,omitzero"`
}

// Terminal reports whether the evaluation needs no more work.
func (e *Evaluation) Terminal() bool {
	switch e.Status {
	case EvalStatusComplete, EvalStatusFailed, EvalStatusCancelled:
		return true
	}
	return false
}

// Copy returns a deep copy.
func (e *Evaluation) Copy() *Evaluation {
	if e == nil {
		return nil
	}
	c := *e
	if e.FailedTGAllocs != nil {
		c.FailedTGAllocs = make(map[string]*AllocMetric, len(e.FailedTGAllocs))
		for k, m := range e.FailedTGAllocs {
			c.FailedTGAllocs[k] = m.Copy()
		}
	}
	if e.QueuedAllocations != nil {
		c.QueuedAllocations = make(map[string]int, len(e.QueuedAllocations))
		for k, n := range e.QueuedAllocations {
			c.QueuedAllocations[k] = n
		}
	}
	return &c
}

// AllocMetric explains a placement: how many nodes were looked at, and why
// those that were passed over were.
type AllocMetric struct {
	// NodesEvaluated were looked at; NodesFiltered failed a constraint,
	// the pool, the datacenter or a driver; NodesExhausted had too little
	// of some resource.
	NodesEvaluated int `json:"nodes_evaluated"`
	NodesFiltered  int `json:"nodes_filtered"`
	NodesExhausted int `json:"nodes_exhausted"`
	// NodesInPool is the number of ready nodes in the job's pool and
	// datacenters.
	NodesInPool int `json:"nodes_in_pool"`
	// ConstraintFiltered counts nodes per reason they were filtered, such
	// as "${attr.os} = linux", "missing driver docker".
	ConstraintFiltered map[string]int `json:"constraint_filtered,omitempty"`
	// DimensionExhausted counts nodes per exhausted resource: cpu, memory,
	// cores, ports.
	DimensionExhausted map[string]int `json:"dimension_exhausted,omitempty"`
	// CoalescedFailures counts further allocations of the group that failed
	// for the same reasons.
	CoalescedFailures int `json:"coalesced_failures,omitempty"`
}

// Copy returns a deep copy.
func (m *AllocMetric) Copy() *AllocMetric {
	if m == nil {
		return nil
	}
	c := *m
	c.ConstraintFiltered = copyCounts(m.ConstraintFiltered)
	c.DimensionExhausted = copyCounts(m.DimensionExhausted)
	return &c
}

func copyCounts(m map[string]int) map[string]int {
	if m == nil {
		return nil
	}
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// FilterNode counts a node filtered for reason.
func (m *AllocMetric) FilterNode(reason string) {
	m.NodesFiltered++
	if m.ConstraintFiltered == nil {
		m.ConstraintFiltered = map[string]int{}
	}
	m.ConstraintFiltered[reason]++
}

// ExhaustNode counts a node with too little of dimension.
func (m *AllocMetric) ExhaustNode(dimension string) {
	m.NodesExhausted++
	if m.DimensionExhausted == nil {
		m.DimensionExhausted = map[string]int{}
	}
	m.DimensionExhausted[dimension]++
}
