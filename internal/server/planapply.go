package server

import (
	"context"
	"errors"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/broker"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// maxPlanBatch bounds the plans committed in one Raft entry.
const maxPlanBatch = 512

// runPlanApplier takes every plan waiting, checks them one after another
// against the newest state plus what this batch already accepted, and
// commits the batch in one Raft entry. Batching is what lets thousands of
// small jobs be placed with a few hundred Raft writes.
func (s *Server) runPlanApplier(ctx context.Context) error {
	for {
		batch, err := s.planQueue.DequeueBatch(ctx, maxPlanBatch)
		if ctx.Err() != nil || errors.Is(err, broker.ErrDisabled) {
			return nil
		}
		if err != nil {
			s.logger.Warn("dequeue plans", "error", err)
			continue
		}
		s.applyPlanBatch(ctx, batch)
	}
}

func (s *Server) applyPlanBatch(ctx context.Context, batch []*broker.PendingPlan) {
	ov := newPlanOverlay(s.store.Snapshot())
	req := &fsm.PlanApplyRequest{Time: time.Now()}
	type answer struct {
		p       *broker.PendingPlan
		res     *caravan.PlanResult
		partial bool
	}
	answers := make([]answer, 0, len(batch))
	placed := 0
	for _, p := range batch {
		// A plan from a delivery that timed out (and went to another
		// worker) must not be committed twice.
		if err := s.evalBroker.OutstandingReset(p.Plan.EvalID, p.Plan.EvalToken); err != nil {
			p.Respond(nil, err)
			continue
		}
		res, update, partial := ov.evaluate(p.Plan)
		if update != nil {
			req.Plans = append(req.Plans, *update)
			placed += len(update.Allocs)
		}
		answers = append(answers, answer{p: p, res: res, partial: partial})
	}
	var index uint64
	if len(req.Plans) > 0 {
		resp, err := s.apply(ctx, fsm.PlanApplyCompact, req)
		if err != nil {
			for _, a := range answers {
				a.p.Respond(nil, err)
			}
			return
		}
		index = resp.Index
		s.counters.planBatches.Observe(float64(len(req.Plans)))
		s.counters.placements.Add(float64(placed))
	}
	if index == 0 {
		index = s.store.LatestIndex()
	}
	for _, a := range answers {
		a.res.AllocIndex = index
		if a.partial {
			a.res.RefreshIndex = index
		}
		a.p.Respond(a.res, nil)
	}
}

// planOverlay is the newest state plus the plans accepted so far in a
// batch: per node, the usage they leave.
type planOverlay struct {
	snap  *state.Snapshot
	usage map[string]caravan.NodeUsage
}

func newPlanOverlay(snap *state.Snapshot) *planOverlay {
	return &planOverlay{snap: snap, usage: map[string]caravan.NodeUsage{}}
}

func (o *planOverlay) nodeUsage(nodeID string) caravan.NodeUsage {
	if u, ok := o.usage[nodeID]; ok {
		return u
	}
	u, _ := o.snap.NodeUsage(nodeID)
	return u
}

// evaluate checks a plan node by node. Placements on a node that no longer
// fits them (or is gone, down, draining or ineligible) are refused as a
// whole; stops and updates of existing allocations always pass. The
// evaluations ride along only when everything passed. An AllAtOnce plan
// passes whole or not at all.
func (o *planOverlay) evaluate(plan *caravan.Plan) (*caravan.PlanResult, *state.PlanUpdate, bool) {
	res := &caravan.PlanResult{NodeUpdate: plan.NodeUpdate, NodeAllocation: map[string][]*caravan.Allocation{}}
	accepted := map[string]caravan.NodeUsage{}
	rejectedAllocs := map[string]bool{}
	var updates []*caravan.Allocation
	for nodeID, allocs := range plan.NodeAllocation {
		var placements []*caravan.Allocation
		for _, a := range allocs {
			if o.snap.AllocExists(a.ID) {
				updates = append(updates, a) // an update of an existing allocation
			} else {
				placements = append(placements, a)
			}
		}
		if len(placements) == 0 {
			continue
		}
		usage, ok := o.fit(nodeID, plan.NodeUpdate[nodeID], placements)
		if !ok {
			res.RejectedNodes = append(res.RejectedNodes, nodeID)
			for _, a := range placements {
				rejectedAllocs[a.ID] = true
			}
			continue
		}
		accepted[nodeID] = usage
		res.NodeAllocation[nodeID] = placements
	}
	partial := len(res.RejectedNodes) > 0
	if partial && plan.AllAtOnce {
		return &caravan.PlanResult{RejectedNodes: res.RejectedNodes}, nil, true
	}
	for nodeID, u := range accepted {
		o.usage[nodeID] = u
	}
	update := &state.PlanUpdate{EvalID: plan.EvalID, JobID: plan.JobID}
	for _, stops := range plan.NodeUpdate {
		update.Stops = append(update.Stops, stops...)
		for _, a := range stops {
			if _, done := accepted[a.NodeID]; !done {
				o.release(a)
			}
		}
	}
	n := len(updates)
	for _, placements := range res.NodeAllocation {
		n += len(placements)
	}
	update.Allocs = make([]*caravan.Allocation, 0, n)
	for _, placements := range res.NodeAllocation {
		update.Allocs = append(update.Allocs, placements...)
	}
	for _, a := range updates {
		// An old allocation pointing at a replacement that was refused
		// must not look replaced.
		if a.NextAllocation != "" && rejectedAllocs[a.NextAllocation] {
			continue
		}
		update.Allocs = append(update.Allocs, a)
		res.NodeAllocation[a.NodeID] = append(res.NodeAllocation[a.NodeID], a)
	}
	if !partial {
		update.Evals = plan.Evals
	}
	if len(update.Stops) == 0 && len(update.Allocs) == 0 && len(update.Evals) == 0 {
		return res, nil, partial
	}
	return res, update, partial
}

// fit returns the node's usage after the plan's stops and placements on it,
// and whether the placements fit.
func (o *planOverlay) fit(nodeID string, stops, placements []*caravan.Allocation) (caravan.NodeUsage, bool) {
	node, err := o.snap.Node(nodeID)
	if err != nil || !node.Ready() {
		return caravan.NodeUsage{}, false
	}
	usage := o.nodeUsage(nodeID)
	for _, a := range stops {
		if cur, err := o.snap.AllocByID(a.ID); err == nil && !cur.Terminal() {
			usage = usage.Remove(&cur.Resources)
		}
	}
	for _, a := range placements {
		if ok, _ := node.Fits(usage, &a.Resources); !ok {
			return caravan.NodeUsage{}, false
		}
		usage = usage.Add(&a.Resources)
	}
	return usage, true
}

// release frees a stopped allocation's resources in the overlay, for nodes
// the plan placed nothing on.
func (o *planOverlay) release(a *caravan.Allocation) {
	cur, err := o.snap.AllocByID(a.ID)
	if err != nil || cur.Terminal() {
		return
	}
	o.usage[a.NodeID] = o.nodeUsage(a.NodeID).Remove(&cur.Resources)
}
