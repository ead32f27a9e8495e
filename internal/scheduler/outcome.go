package scheduler

import (
	"github.com/caravan-sched/caravan"
)

// Desired descriptions the scheduler writes on allocations it stops.
const (
	descJobStopped    = "job stopped"
	descScaledDown    = "count reduced"
	descDuplicate     = "another allocation holds the same index"
	descGroupRemoved  = "task group removed from the job"
	descNodeGone      = "alloc lost: node gone"
	descNodeDown      = "alloc lost: node down"
	descDraining      = "node draining"
	descUpdated       = "replaced by a new job version"
	descNotEligible   = "node no longer eligible for the job"
	descBlocked       = "waiting for capacity to place the remaining allocations"
	descRescheduleEvl = "delayed reschedule of failed allocations"
)

// groupOutcome collects what happened to one task group.
type groupOutcome struct {
	name   string
	places []*placement
	// metric explains the failed placements; nil when all were placed.
	metric *caravan.AllocMetric
	failed int
}

// placement is one allocation to place: a missing index, or the replacement
// of prev.
type placement struct {
	index int
	// prev is the allocation replaced, if any.
	prev *caravan.Allocation
	// prevStop is prev's stop already in the plan; it gets NextAllocation.
	prevStop *caravan.Allocation
	// link adds an update of prev with NextAllocation once placed
	// (rescheduled or lost allocations, already terminal).
	link bool
	// evict stops prev once the replacement is placed (migrations).
	evict bool
	// event, when set, is added to the carried reschedule tracker.
	event *caravan.RescheduleEvent
	// carryTracker copies prev's reschedule tracker to the new allocation.
	carryTracker bool
	// nodePos is the node a system job's placement goes to (the position
	// in the node list); service and batch placements choose their own.
	nodePos int
	// alloc is the new allocation, nil until placed.
	alloc *caravan.Allocation
}

// stop adds a stop (or evict) of a to the plan and frees what it held in
// this plan's view of the node. It returns the copy in the plan.
func (c *evalCtx) stop(a *caravan.Allocation, desired, desc string) (*caravan.Allocation, error) {
	cp := c.appendStop(a, desired, desc)
	if a.Terminal() {
		return cp, nil
	}
	u, err := c.usage(a.NodeID)
	if err != nil {
		return nil, err
	}
	c.setUsage(a.NodeID, u.Remove(&a.Resources))
	return cp, nil
}

// update adds a copy of a (server-side fields changed by fn) to the plan's
// allocations under a's node.
func (c *evalCtx) update(a *caravan.Allocation, fn func(*caravan.Allocation)) {
	cp := a.ShallowCopy()
	fn(cp)
	c.plan.AppendAlloc(cp)
}

// result writes the placements into the plan and the evaluations that go
// with it.
func (c *evalCtx) result() *Result {
	res := &Result{Plan: c.plan}
	failed := false
	for _, g := range c.groups {
		failed = failed || g.failed > 0
	}
	dropAll := failed && c.job != nil && c.job.AllAtOnce
	queued := map[string]int{}
	for _, g := range c.groups {
		queued[g.name] += 0
		for _, p := range g.places {
			if p.alloc == nil || dropAll {
				queued[g.name]++
				continue
			}
			c.emit(p)
			res.Placed++
		}
		res.Failed += g.failed
	}
	if c.job == nil || len(c.groups) == 0 {
		queued = nil
	}
	c.plan.Evals = c.evals(queued, failed)
	return res
}

// emit writes a placed allocation and what goes with it.
func (c *evalCtx) emit(p *placement) {
	c.plan.AppendAlloc(p.alloc)
	if p.prev == nil {
		return
	}
	if p.prevStop != nil {
		p.prevStop.NextAllocation = p.alloc.ID
	}
	next := p.alloc.ID
	if p.link {
		c.update(p.prev, func(a *caravan.Allocation) {
			a.NextAllocation = next
			a.EvalID = c.eval.ID
		})
	}
	if p.evict {
		c.appendStop(p.prev, caravan.AllocDesiredEvict, descDraining).NextAllocation = next
	}
}

// appendStop adds a stop of a to the plan, and returns the copy in the
// plan. The node's usage is left as it is.
func (c *evalCtx) appendStop(a *caravan.Allocation, desired, desc string) *caravan.Allocation {
	cp := a.ShallowCopy()
	cp.DesiredStatus = desired
	cp.DesiredDescription = desc
	if c.plan.NodeUpdate == nil {
		c.plan.NodeUpdate = map[string][]*caravan.Allocation{}
	}
	c.plan.NodeUpdate[a.NodeID] = append(c.plan.NodeUpdate[a.NodeID], cp)
	return cp
}

// evals returns the evaluation's update, a blocked evaluation when
// something did not fit, and the delayed reschedule evaluations.
func (c *evalCtx) evals(queued map[string]int, failed bool) []*caravan.Evaluation {
	up := c.eval.Copy()
	up.Status = caravan.EvalStatusComplete
	up.StatusDescription = ""
	up.SnapshotIndex = c.plan.SnapshotIndex
	up.QueuedAllocations = queued
	up.FailedTGAllocs = nil
	up.ModifyTime = c.opts.Now
	if c.failedDesc != "" {
		up.Status = caravan.EvalStatusFailed
		up.StatusDescription = c.failedDesc
	}
	for _, g := range c.groups {
		if g.metric != nil {
			if up.FailedTGAllocs == nil {
				up.FailedTGAllocs = map[string]*caravan.AllocMetric{}
			}
			up.FailedTGAllocs[g.name] = g.metric
		}
	}
	out := []*caravan.Evaluation{up}
	if failed {
		b := c.newEval(caravan.EvalStatusBlocked, caravan.TriggerQueuedAllocs)
		b.StatusDescription = descBlocked
		b.SubmitTime = c.eval.SubmitTime
		// The blocked set wakes it on capacity changes after this index.
		b.SnapshotIndex = c.plan.SnapshotIndex
		up.BlockedEval = b.ID
		out = append(out, b)
	}
	return append(out, c.delayed...)
}

// newEval makes a follow-up evaluation of the same job.
func (c *evalCtx) newEval(status, trigger string) *caravan.Evaluation {
	e := &caravan.Evaluation{
		ID:           c.newID(),
		Priority:     c.eval.Priority,
		Type:         c.eval.Type,
		TriggeredBy:  trigger,
		JobID:        c.eval.JobID,
		NodePool:     c.eval.NodePool,
		Status:       status,
		PreviousEval: c.eval.ID,
		CreateTime:   c.opts.Now,
		ModifyTime:   c.opts.Now,
	}
	if j := c.job; j != nil {
		e.Priority = j.Priority
		e.Type = j.Type
		e.JobModifyIndex = j.JobModifyIndex
		e.NodePool = j.NodePool
	}
	return e
}
