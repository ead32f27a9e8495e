package caravan

// Plan is what a scheduler wants changed for one evaluation: allocations to
// stop and allocations to place or update, per node, and the evaluations to
// write with it. The plan applier on the leader checks every placement
// against the newest state and commits what still fits, in one Raft entry
// with the evaluation updates.
type Plan struct {
	EvalID string `json:"eval_id"`
	// EvalToken is the broker's delivery token; a plan from a delivery that
	// timed out is refused.
	EvalToken string `json:"eval_token,omitempty"`
	Priority  int    `json:"priority"`
	// JobID is the job the plan is for.
	JobID string `json:"job_id"`
	// JobVersion of the placements.
	JobVersion uint64 `json:"job_version"`
	// AllAtOnce commits the plan whole or not at all.
	AllAtOnce bool `json:"all_at_once,omitempty"`
	// NodeUpdate holds allocations to stop or evict, or whose server-side
	// fields change: copies of the stored allocations with the new desired
	// status and description.
	NodeUpdate map[string][]*Allocation `json:"node_update,omitempty"`
	// NodeAllocation holds new allocations, per node.
	NodeAllocation map[string][]*Allocation `json:"node_allocation,omitempty"`
	// Evals are written with the plan when it is committed whole: the
	// evaluation's own final status, follow-ups, blocked evaluations.
	Evals []*Evaluation `json:"evals,omitempty"`
	// SnapshotIndex is the state index the scheduler worked from.
	SnapshotIndex uint64 `json:"snapshot_index"`
}

// AppendStop adds a stop (or evict) of alloc to the plan.
func (p *Plan) AppendStop(alloc *Allocation, desired, description string) {
	c := alloc.ShallowCopy()
	c.DesiredStatus = desired
	c.DesiredDescription = description
	if p.NodeUpdate == nil {
		p.NodeUpdate = map[string][]*Allocation{}
	}
	p.NodeUpdate[alloc.NodeID] = append(p.NodeUpdate[alloc.NodeID], c)
}

// AppendAlloc adds a new or updated allocation to the plan.
func (p *Plan) AppendAlloc(alloc *Allocation) {
	if p.NodeAllocation == nil {
		p.NodeAllocation = map[string][]*Allocation{}
	}
	p.NodeAllocation[alloc.NodeID] = append(p.NodeAllocation[alloc.NodeID], alloc)
}

// IsNoOp reports whether the plan changes no allocation.
func (p *Plan) IsNoOp() bool {
	return len(p.NodeUpdate) == 0 && len(p.NodeAllocation) == 0
}

// PlanResult is what the applier committed of a plan.
type PlanResult struct {
	NodeUpdate     map[string][]*Allocation `json:"node_update,omitempty"`
	NodeAllocation map[string][]*Allocation `json:"node_allocation,omitempty"`
	// RefreshIndex, when not 0, says the plan was only partly committed:
	// the scheduler must work again from a snapshot at least this new.
	RefreshIndex uint64 `json:"refresh_index,omitempty"`
	// AllocIndex is the Raft index of the commit.
	AllocIndex uint64 `json:"alloc_index"`
	// RejectedNodes lists nodes whose placements did not fit any more.
	RejectedNodes []string `json:"rejected_nodes,omitempty"`
}

// FullCommit reports whether all of plan was committed, and how many
// placements were asked for and committed.
func (r *PlanResult) FullCommit(plan *Plan) (bool, int, int) {
	expected, actual := 0, 0
	for node, allocs := range plan.NodeAllocation {
		expected += len(allocs)
		actual += len(r.NodeAllocation[node])
	}
	return expected == actual && len(r.RejectedNodes) == 0, expected, actual
}
