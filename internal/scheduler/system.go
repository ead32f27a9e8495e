package scheduler

import (
	"slices"
	"strings"

	"github.com/caravan-sched/caravan"
)

// systemIndex is the index every allocation of a system job has: there is
// one per node, not count copies.
const systemIndex = 0

// reconcileSystem reconciles a system job: one allocation of each group on
// every ready node that passes the group's rules and has room, nodes that
// joined since included. Allocations on nodes that no longer qualify stop;
// nothing is rescheduled elsewhere. The whole job is reconciled whatever
// node the evaluation names.
func (c *evalCtx) reconcileSystem(allocs []*caravan.Allocation) error {
	sorted := sortedAllocs(allocs)
	if err := c.stopRemovedGroups(sorted); err != nil {
		return err
	}
	var work []*systemGroup
	for _, tg := range c.groupsToPlace() {
		s := &systemGroup{c: c, tg: tg, out: &groupOutcome{name: tg.Name}}
		if err := s.reconcile(groupAllocs(sorted, tg.Name)); err != nil {
			return err
		}
		c.groups = append(c.groups, s.out)
		work = append(work, s)
	}
	for _, s := range work {
		if err := s.place(); err != nil {
			return err
		}
	}
	return nil
}

// systemGroup reconciles one group of a system job.
type systemGroup struct {
	c    *evalCtx
	tg   *caravan.TaskGroup
	out  *groupOutcome
	feas *feasibility
	// destructive are live allocations of an older spec, with their node.
	destructive []systemAlloc
	inFlight    int
}

type systemAlloc struct {
	pos   int
	alloc *caravan.Allocation
}

func (s *systemGroup) reconcile(allocs []*caravan.Allocation) error {
	c := s.c
	s.feas = newFeasibility(&c.compiler, c.job, s.tg)
	// Both lists are sorted by node id: walk them side by side.
	byNode := slices.Clone(allocs)
	slices.SortStableFunc(byNode, func(a, b *caravan.Allocation) int { return strings.Compare(a.NodeID, b.NodeID) })
	j := 0
	for pos, n := range c.nodes {
		for ; j < len(byNode) && byNode[j].NodeID < n.ID; j++ {
			if err := s.gone(byNode[j]); err != nil {
				return err
			}
		}
		k := j
		for k < len(byNode) && byNode[k].NodeID == n.ID {
			k++
		}
		if err := s.node(pos, n, byNode[j:k]); err != nil {
			return err
		}
		j = k
	}
	for ; j < len(byNode); j++ {
		if err := s.gone(byNode[j]); err != nil {
			return err
		}
	}
	return s.rollingUpdate()
}

// gone stops an allocation whose node left the cluster.
func (s *systemGroup) gone(a *caravan.Allocation) error {
	if a.Terminal() {
		return nil
	}
	_, err := s.c.stop(a, caravan.AllocDesiredStop, descNodeGone)
	return err
}

// node reconciles the group on one node.
func (s *systemGroup) node(pos int, n *caravan.Node, allocs []*caravan.Allocation) error {
	c := s.c
	feasible, _ := s.feas.check(n)
	var live []*caravan.Allocation
	done := false
	for _, a := range allocs {
		switch {
		case !a.Terminal():
			live = append(live, a)
		case a.JobVersion == c.job.Version && !a.ServerTerminal() &&
			(a.ClientStatus == caravan.AllocClientFailed || a.ClientStatus == caravan.AllocClientComplete):
			done = true // ran here in this version: not placed again
		}
	}
	if len(live) == 0 {
		if n.Ready() && feasible && !done {
			s.out.places = append(s.out.places, &placement{index: systemIndex, nodePos: pos})
		}
		return nil
	}
	desc := ""
	switch {
	case n.Status == caravan.NodeStatusDown:
		desc = descNodeDown
	case n.Drain != nil && !n.Drain.IgnoreSystemJobs:
		desc = descDraining
	case !feasible:
		desc = descNotEligible
	}
	for k, a := range live {
		if desc != "" || k > 0 {
			d := desc
			if d == "" {
				d = descDuplicate
			}
			if _, err := c.stop(a, caravan.AllocDesiredStop, d); err != nil {
				return err
			}
			continue
		}
		s.keep(pos, n, a)
	}
	return nil
}

// keep handles the allocation that stays on a node: moved to the new
// version in place, or queued for a rolling replacement.
func (s *systemGroup) keep(pos int, n *caravan.Node, a *caravan.Allocation) {
	c := s.c
	switch {
	case a.JobVersion == c.job.Version:
		if a.ClientStatus != caravan.AllocClientRunning {
			s.inFlight++
		}
	case c.inPlace(a, s.tg):
		c.updateInPlace(a)
	case n.Ready():
		s.destructive = append(s.destructive, systemAlloc{pos, a})
	}
}

// rollingUpdate replaces allocations of an older spec on their own nodes,
// at most update.max_parallel in flight at a time.
func (s *systemGroup) rollingUpdate() error {
	budget := len(s.destructive)
	if maxPar := maxParallel(s.c.job); maxPar > 0 {
		budget = min(budget, max(maxPar-s.inFlight, 0))
	}
	for _, d := range s.destructive[:budget] {
		cp, err := s.c.stop(d.alloc, caravan.AllocDesiredStop, descUpdated)
		if err != nil {
			return err
		}
		s.out.places = append(s.out.places, &placement{index: systemIndex, prev: d.alloc, prevStop: cp, nodePos: d.pos})
	}
	return nil
}

// place puts each of the group's placements on its node. A node without
// room is a failed placement; the first one scans every node for the
// metrics, the others coalesce.
func (s *systemGroup) place() error {
	g := s.c.newGroupPlacer(s.tg, s.out, nil)
	for _, p := range s.out.places {
		n := s.c.nodes[p.nodePos]
		u, err := s.c.usage(n.ID)
		if err != nil {
			return err
		}
		if cpu, dim := g.ask.fit(n, &u); dim == "" {
			a, err := g.commit(p.nodePos, cpu, p)
			if err != nil {
				return err
			}
			if a != nil {
				p.alloc = a
				continue
			}
		}
		if s.out.metric != nil {
			s.out.metric.CoalescedFailures++
			s.out.failed++
			continue
		}
		if err := g.fail(); err != nil {
			return err
		}
	}
	return nil
}
