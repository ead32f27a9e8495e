package server

import (
	"context"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// drainInterval is how often the leader checks draining nodes.
const drainInterval = time.Second

// runDrainer finishes drains: a draining node with no live allocations left
// (system ones aside when the drain ignores them) stops draining and stays
// ineligible; at the force deadline, whatever is still there is stopped.
// The migrations themselves are the scheduler's work, triggered when the
// drain started.
func (s *Server) runDrainer(ctx context.Context) error {
	t := time.NewTicker(drainInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.checkDrains(ctx, time.Now()); err != nil && ctx.Err() == nil {
				s.logger.Warn("check drains", "error", err)
			}
		}
	}
}

func (s *Server) checkDrains(ctx context.Context, now time.Time) error {
	snap := s.store.Snapshot()
	nodes, err := snap.Nodes()
	if err != nil {
		return err
	}
	for _, node := range nodes {
		if node.Drain == nil {
			continue
		}
		remaining := drainRemaining(snap, node)
		switch {
		case len(remaining) == 0:
			_, err = s.apply(ctx, fsm.NodeDrain, &fsm.NodeDrainRequest{Time: now, NodeID: node.ID, Eligibility: caravan.NodeIneligible})
			if err == nil {
				s.logger.Info("drain complete", "node", node.ID, "name", node.Name)
			}
		case node.Drain.Deadline < 0 || (!node.Drain.ForceDeadline.IsZero() && now.After(node.Drain.ForceDeadline)):
			err = s.forceDrain(ctx, snap, node, remaining, now)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// drainRemaining lists the live allocations a drain still waits for.
func drainRemaining(snap *state.Snapshot, node *caravan.Node) []*caravan.Allocation {
	allocs, err := snap.AllocsByNode(node.ID)
	if err != nil {
		return nil
	}
	var out []*caravan.Allocation
	for _, a := range allocs {
		if a.Terminal() {
			continue
		}
		if node.Drain.IgnoreSystemJobs && a.Job != nil && a.Job.Type == caravan.JobTypeSystem {
			continue
		}
		out = append(out, a)
	}
	return out
}

// forceDrain stops what is left on a node at its drain deadline and
// evaluates the jobs so they are placed elsewhere.
func (s *Server) forceDrain(ctx context.Context, snap *state.Snapshot, node *caravan.Node, remaining []*caravan.Allocation, now time.Time) error {
	byJob := map[string]*state.PlanUpdate{}
	var plans []state.PlanUpdate
	for _, a := range remaining {
		p, ok := byJob[a.JobID]
		if !ok {
			p = &state.PlanUpdate{JobID: a.JobID}
			if job, err := snap.JobByID(a.JobID); err == nil {
				e := s.evalFor(job, caravan.TriggerNodeDrain, now)
				p.EvalID, p.Evals = e.ID, []*caravan.Evaluation{e}
			}
			byJob[a.JobID] = p
		}
		stop := a.ShallowCopy()
		stop.Job = nil
		stop.DesiredStatus = caravan.AllocDesiredEvict
		stop.DesiredDescription = "node drain deadline reached"
		p.Stops = append(p.Stops, stop)
	}
	for _, p := range byJob {
		plans = append(plans, *p)
	}
	_, err := s.apply(ctx, fsm.PlanApply, &fsm.PlanApplyRequest{Time: now, Plans: plans})
	if err == nil {
		s.logger.Info("drain deadline reached; stopped what was left", "node", node.ID, "allocations", len(remaining))
	}
	return err
}
