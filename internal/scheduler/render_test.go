package scheduler

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caravan-sched/caravan"
)

// renderPlan writes a plan as readable text: stops, then allocations
// (new ones and updates of stored ones), then evaluations, nodes in id
// order and entries in plan order.
func renderPlan(s *fakeState, p *caravan.Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan job=%s version=%d priority=%d snapshot=%d", p.JobID, p.JobVersion, p.Priority, p.SnapshotIndex)
	if p.AllAtOnce {
		b.WriteString(" all_at_once")
	}
	b.WriteString("\n")
	for _, node := range sortedKeys(p.NodeUpdate) {
		for _, a := range p.NodeUpdate[node] {
			fmt.Fprintf(&b, "stop   %s %s %s %s %q", node, a.ID, groupIndex(a), a.DesiredStatus, a.DesiredDescription)
			if a.NextAllocation != "" {
				fmt.Fprintf(&b, " next=%s", a.NextAllocation)
			}
			b.WriteString("\n")
		}
	}
	for _, node := range sortedKeys(p.NodeAllocation) {
		for _, a := range p.NodeAllocation[node] {
			if _, stored := s.byID[a.ID]; stored {
				b.WriteString(renderUpdate(node, a))
			} else {
				b.WriteString(renderNew(node, a))
			}
		}
	}
	for _, e := range p.Evals {
		b.WriteString(renderEval(e))
	}
	return b.String()
}

func groupIndex(a *caravan.Allocation) string {
	return fmt.Sprintf("%s[%d]", a.TaskGroup, a.Index)
}

func renderNew(node string, a *caravan.Allocation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "place  %s %s %s v%d cpu=%d mem=%d", node, a.ID, groupIndex(a), a.JobVersion, a.Resources.CPU, a.Resources.Memory)
	if len(a.Resources.Cores) > 0 {
		fmt.Fprintf(&b, " cores=%v", a.Resources.Cores)
	}
	for _, p := range a.Resources.Ports {
		fmt.Fprintf(&b, " port=%s:%d>%d", p.Label, p.Value, p.To)
	}
	if a.PreviousAllocation != "" {
		fmt.Fprintf(&b, " prev=%s", a.PreviousAllocation)
	}
	if t := a.RescheduleTracker; t != nil {
		fmt.Fprintf(&b, " reschedules=%d", len(t.Events))
		if n := len(t.Events); n > 0 {
			fmt.Fprintf(&b, " last_delay=%s", t.Events[n-1].Delay)
		}
	}
	if a.Name != caravan.AllocName(a.JobID, a.TaskGroup, a.Index) {
		fmt.Fprintf(&b, " BAD-NAME=%q", a.Name)
	}
	b.WriteString("\n")
	return b.String()
}

func renderUpdate(node string, a *caravan.Allocation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "update %s %s %s v%d %s", node, a.ID, groupIndex(a), a.JobVersion, a.DesiredStatus)
	if a.NextAllocation != "" {
		fmt.Fprintf(&b, " next=%s", a.NextAllocation)
	}
	if a.FollowupEvalID != "" {
		fmt.Fprintf(&b, " followup=%s", a.FollowupEvalID)
	}
	b.WriteString("\n")
	return b.String()
}

func renderEval(e *caravan.Evaluation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "eval   %s %s %s", e.ID, e.Status, e.TriggeredBy)
	if e.StatusDescription != "" {
		fmt.Fprintf(&b, " %q", e.StatusDescription)
	}
	if e.PreviousEval != "" {
		fmt.Fprintf(&b, " prev=%s", e.PreviousEval)
	}
	if e.BlockedEval != "" {
		fmt.Fprintf(&b, " blocked=%s", e.BlockedEval)
	}
	if !e.WaitUntil.IsZero() {
		fmt.Fprintf(&b, " wait_until=%s", e.WaitUntil.UTC().Format(time.RFC3339))
	}
	if len(e.QueuedAllocations) > 0 {
		fmt.Fprintf(&b, " queued=%s", renderCounts(e.QueuedAllocations))
	}
	b.WriteString("\n")
	for _, g := range sortedKeys(e.FailedTGAllocs) {
		m := e.FailedTGAllocs[g]
		fmt.Fprintf(&b, "  failed %s: evaluated=%d filtered=%d exhausted=%d in_pool=%d coalesced=%d",
			g, m.NodesEvaluated, m.NodesFiltered, m.NodesExhausted, m.NodesInPool, m.CoalescedFailures)
		if len(m.ConstraintFiltered) > 0 {
			fmt.Fprintf(&b, " filters=%s", renderCounts(m.ConstraintFiltered))
		}
		if len(m.DimensionExhausted) > 0 {
			fmt.Fprintf(&b, " dimensions=%s", renderCounts(m.DimensionExhausted))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func renderCounts(m map[string]int) string {
	keys := sortedKeys(m)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%q:%d", k, m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// planAllocs lists the plan's allocations (new and updated) in render
// order.
func planAllocs(p *caravan.Plan) []*caravan.Allocation {
	var out []*caravan.Allocation
	for _, node := range sortedKeys(p.NodeAllocation) {
		out = append(out, p.NodeAllocation[node]...)
	}
	return out
}

// planStops lists the plan's stops in render order.
func planStops(p *caravan.Plan) []*caravan.Allocation {
	var out []*caravan.Allocation
	for _, node := range sortedKeys(p.NodeUpdate) {
		out = append(out, p.NodeUpdate[node]...)
	}
	return out
}

// newAllocs lists only the plan's new allocations.
func newAllocs(s *fakeState, p *caravan.Plan) []*caravan.Allocation {
	return slices.DeleteFunc(planAllocs(p), func(a *caravan.Allocation) bool {
		_, stored := s.byID[a.ID]
		return stored
	})
}
