package scheduler

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/caravan-sched/caravan"
)

// groupWork is one task group between reconciliation and placement.
type groupWork struct {
	tg   *caravan.TaskGroup
	out  *groupOutcome
	kept []*caravan.Allocation
}

// reconcileGeneric reconciles a service or batch job: every group is
// reconciled first (so every stop frees its node before any placement),
// then placed.
func (c *evalCtx) reconcileGeneric(allocs []*caravan.Allocation) error {
	for _, tg := range c.job.TaskGroups {
		if tg != nil && tg.GroupCount() > caravan.MaxGroupCount {
			c.failedDesc = fmt.Sprintf("task group %q: count %d is over the limit of %d", tg.Name, tg.GroupCount(), caravan.MaxGroupCount)
			return nil
		}
	}
	sorted := sortedAllocs(allocs)
	if err := c.stopRemovedGroups(sorted); err != nil {
		return err
	}
	var work []groupWork
	for _, tg := range c.groupsToPlace() {
		w := groupWork{tg: tg, out: &groupOutcome{name: tg.Name}}
		r := groupReconciler{c: c, tg: tg, out: w.out}
		if err := r.run(groupAllocs(sorted, tg.Name)); err != nil {
			return err
		}
		w.kept = r.kept
		c.groups = append(c.groups, w.out)
		work = append(work, w)
	}
	for _, w := range work {
		g := c.newGroupPlacer(w.tg, w.out, w.kept)
		if err := g.placeAll(w.out.places); err != nil {
			return err
		}
	}
	return nil
}

// groupsToPlace returns the job's task groups, without nil ones and
// without a second group of the same name (the first one wins).
func (c *evalCtx) groupsToPlace() []*caravan.TaskGroup {
	out := make([]*caravan.TaskGroup, 0, len(c.job.TaskGroups))
	for _, tg := range c.job.TaskGroups {
		if tg != nil && lookupGroup(c.job, tg.Name) == tg {
			out = append(out, tg)
		}
	}
	return out
}

// lookupGroup is Job.LookupTaskGroup, safe for nil groups.
func lookupGroup(j *caravan.Job, name string) *caravan.TaskGroup {
	for _, tg := range j.TaskGroups {
		if tg != nil && tg.Name == name {
			return tg
		}
	}
	return nil
}

// stopRemovedGroups stops the live allocations of groups the job no longer
// has.
func (c *evalCtx) stopRemovedGroups(sorted []*caravan.Allocation) error {
	for _, a := range sorted {
		if !a.Terminal() && lookupGroup(c.job, a.TaskGroup) == nil {
			if _, err := c.stop(a, caravan.AllocDesiredStop, descGroupRemoved); err != nil {
				return err
			}
		}
	}
	return nil
}

// sortedAllocs orders allocations by group and index; among those of one
// index the one to keep comes first: the newest job version, running over
// pending, then the oldest.
func sortedAllocs(allocs []*caravan.Allocation) []*caravan.Allocation {
	out := slices.Clone(allocs)
	out = slices.DeleteFunc(out, func(a *caravan.Allocation) bool { return a == nil })
	slices.SortFunc(out, func(a, b *caravan.Allocation) int {
		return cmp.Or(
			strings.Compare(a.TaskGroup, b.TaskGroup),
			cmp.Compare(a.Index, b.Index),
			-cmp.Compare(a.JobVersion, b.JobVersion),
			-cmp.Compare(runningRank(a), runningRank(b)),
			cmp.Compare(a.CreateIndex, b.CreateIndex),
			strings.Compare(a.ID, b.ID),
		)
	})
	return out
}

func runningRank(a *caravan.Allocation) int {
	if a.ClientStatus == caravan.AllocClientRunning {
		return 1
	}
	return 0
}

// groupAllocs returns the run of sorted allocations of one group.
func groupAllocs(sorted []*caravan.Allocation, group string) []*caravan.Allocation {
	i, _ := slices.BinarySearchFunc(sorted, group, func(a *caravan.Allocation, g string) int {
		return strings.Compare(a.TaskGroup, g)
	})
	j := i
	for j < len(sorted) && sorted[j].TaskGroup == group {
		j++
	}
	return sorted[i:j]
}

// groupReconciler decides, for one group of a service or batch job, what
// to stop, update and place.
type groupReconciler struct {
	c        *evalCtx
	tg       *caravan.TaskGroup
	out      *groupOutcome
	count    int
	occupied []bool
	// kept are the live allocations that stay.
	kept []*caravan.Allocation
	// destructive are live allocations of an older spec, by index.
	destructive []*caravan.Allocation
	// inFlight counts live allocations of the current version that do not
	// run yet.
	inFlight int
}

func (r *groupReconciler) run(allocs []*caravan.Allocation) error {
	r.count = max(r.tg.GroupCount(), 0)
	r.occupied = make([]bool, r.count)
	for _, a := range allocs {
		if !a.Terminal() {
			if err := r.live(a); err != nil {
				return err
			}
		}
	}
	if err := r.rollingUpdate(); err != nil {
		return err
	}
	for _, a := range allocs {
		if a.Terminal() {
			r.terminal(a)
		}
	}
	for i := range r.count {
		if !r.occupied[i] {
			r.out.places = append(r.out.places, &placement{index: i})
		}
	}
	slices.SortStableFunc(r.out.places, func(a, b *placement) int { return cmp.Compare(a.index, b.index) })
	return nil
}

// live handles an allocation that runs or is about to.
func (r *groupReconciler) live(a *caravan.Allocation) error {
	c := r.c
	i := a.Index
	if i < 0 || i >= r.count {
		_, err := c.stop(a, caravan.AllocDesiredStop, descScaledDown)
		return err
	}
	if r.occupied[i] {
		_, err := c.stop(a, caravan.AllocDesiredStop, descDuplicate)
		return err
	}
	r.occupied[i] = true
	n := c.nodeByID(a.NodeID)
	switch {
	case n == nil:
		return r.replaceLost(a, descNodeGone)
	case n.Status == caravan.NodeStatusDown:
		return r.replaceLost(a, descNodeDown)
	case n.Drain != nil:
		return r.migrate(a, n)
	case a.JobVersion != c.job.Version:
		if !c.inPlace(a, r.tg) {
			r.destructive = append(r.destructive, a)
			return nil
		}
		c.updateInPlace(a)
	}
	r.kept = append(r.kept, a)
	if a.ClientStatus != caravan.AllocClientRunning {
		r.inFlight++
	}
	return nil
}

// replaceLost stops an allocation whose node is gone or down and places
// its replacement at once.
func (r *groupReconciler) replaceLost(a *caravan.Allocation, desc string) error {
	cp, err := r.c.stop(a, caravan.AllocDesiredStop, desc)
	if err != nil {
		return err
	}
	r.out.places = append(r.out.places, &placement{index: a.Index, prev: a, prevStop: cp, carryTracker: true})
	return nil
}

// migrate moves an allocation off a draining node: the replacement is
// placed first and the old one evicted with it. Past the drain's deadline
// the old one is evicted regardless.
func (r *groupReconciler) migrate(a *caravan.Allocation, n *caravan.Node) error {
	p := &placement{index: a.Index, prev: a, carryTracker: true}
	d := n.Drain
	if d.Deadline < 0 || (!d.ForceDeadline.IsZero() && !r.c.opts.Now.Before(d.ForceDeadline)) {
		cp, err := r.c.stop(a, caravan.AllocDesiredEvict, descDraining)
		if err != nil {
			return err
		}
		p.prevStop = cp
	} else {
		p.evict = true
	}
	r.out.places = append(r.out.places, p)
	return nil
}

// rollingUpdate replaces allocations of an older spec, at most
// update.max_parallel in flight at a time (0: all at once).
func (r *groupReconciler) rollingUpdate() error {
	budget := len(r.destructive)
	if maxPar := maxParallel(r.c.job); maxPar > 0 {
		budget = min(budget, max(maxPar-r.inFlight, 0))
	}
	for k, a := range r.destructive {
		if k >= budget {
			r.kept = append(r.kept, a)
			continue
		}
		cp, err := r.c.stop(a, caravan.AllocDesiredStop, descUpdated)
		if err != nil {
			return err
		}
		r.out.places = append(r.out.places, &placement{index: a.Index, prev: a, prevStop: cp})
	}
	return nil
}

func maxParallel(j *caravan.Job) int {
	if j.Update == nil || j.Update.MaxParallel < 0 {
		return 1
	}
	return j.Update.MaxParallel
}

// terminal handles an allocation that finished or was stopped: lost ones
// are replaced at once, failed ones per the reschedule policy, complete
// batch ones hold their index for good.
func (r *groupReconciler) terminal(a *caravan.Allocation) {
	i := a.Index
	if a.NextAllocation != "" || i < 0 || i >= r.count || r.occupied[i] {
		return
	}
	batch := r.c.job.Type == caravan.JobTypeBatch
	switch {
	case a.ClientStatus == caravan.AllocClientLost:
		r.occupied[i] = true
		r.out.places = append(r.out.places, &placement{index: i, prev: a, link: true, carryTracker: true})
	case batch && a.ClientStatus == caravan.AllocClientComplete:
		r.occupied[i] = true
	case a.ServerTerminal():
		// Stopped by the server: not rescheduled; the index is free.
	case a.ClientStatus == caravan.AllocClientFailed, a.ClientStatus == caravan.AllocClientComplete:
		r.occupied[i] = true
		r.reschedule(a)
	}
}

// reschedule replaces a failed allocation (or a service allocation that
// ended) now, later through a delayed evaluation, or never.
func (r *groupReconciler) reschedule(a *caravan.Allocation) {
	c := r.c
	policy := r.tg.Reschedule
	if policy == nil {
		policy = caravan.DefaultReschedulePolicy(c.job.Type)
	}
	d := decideReschedule(policy, a, c.opts.Now)
	switch d.kind {
	case rescheduleNow:
		r.out.places = append(r.out.places, &placement{
			index: a.Index, prev: a, link: true, carryTracker: true,
			event: &caravan.RescheduleEvent{Time: c.opts.Now, PrevAllocID: a.ID, PrevNodeID: a.NodeID, Delay: caravan.Duration(d.delay)},
		})
	case rescheduleLater:
		// A follow-up is already waiting, unless this evaluation is it
		// and came early.
		if a.FollowupEvalID != "" && a.FollowupEvalID != c.eval.ID {
			return
		}
		e := c.delayedEval(d.at)
		c.update(a, func(cp *caravan.Allocation) {
			cp.FollowupEvalID = e.ID
			cp.EvalID = c.eval.ID
		})
	}
}
