package state

import (
	"errors"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestRegisterNodeKeepsAdministration(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, s.UpdateNodeDrain(2, at(1), nodeID(1), &caravan.DrainStrategy{Deadline: caravan.Duration(time.Hour)}, caravan.NodeIneligible, nil))
	again := testNode(1)
	again.Name = "renamed"
	again.Status = caravan.NodeStatusInitializing
	mustOK(t, s.RegisterNode(3, at(2), again, []*caravan.Evaluation{testEval(1, "web", caravan.EvalStatusPending)}))
	n := must[*caravan.Node](t)(s.Snapshot().NodeByID(nodeID(1)))
	got := []any{n.Name, n.Status, n.CreateIndex, n.ModifyIndex, n.SchedulingEligibility, n.Drain != nil, n.StatusUpdatedAt}
	want := []any{"renamed", caravan.NodeStatusInitializing, uint64(1), uint64(3), caravan.NodeIneligible, true, at(2)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("node (-want +got):\n%s", diff)
	}
	if _, err := s.Snapshot().EvalByID(evalID(1)); err != nil {
		t.Errorf("evaluation of the registration: %v", err)
	}
	if err := s.RegisterNode(4, at(3), &caravan.Node{}, nil); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("node without id: %v", err)
	}
}

func TestNodeDrainAndEligibility(t *testing.T) {
	tests := []struct {
		name        string
		drain       *caravan.DrainStrategy
		eligibility string
		wantDrain   *caravan.DrainStrategy
		wantElig    string
	}{
		{"drain with deadline", &caravan.DrainStrategy{Deadline: caravan.Duration(time.Minute)}, caravan.NodeIneligible,
			&caravan.DrainStrategy{Deadline: caravan.Duration(time.Minute), StartedAt: at(10), ForceDeadline: at(70)}, caravan.NodeIneligible},
		{"drain without deadline keeps eligibility", &caravan.DrainStrategy{IgnoreSystemJobs: true}, "",
			&caravan.DrainStrategy{IgnoreSystemJobs: true, StartedAt: at(10)}, caravan.NodeEligible},
		{"cancel", nil, caravan.NodeEligible, nil, caravan.NodeEligible},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
			mustOK(t, s.UpdateNodeDrain(2, at(10), nodeID(1), tt.drain, tt.eligibility, nil))
			n := must[*caravan.Node](t)(s.Snapshot().NodeByID(nodeID(1)))
			if diff := cmp.Diff(tt.wantDrain, n.Drain); diff != "" {
				t.Errorf("drain (-want +got):\n%s", diff)
			}
			if n.SchedulingEligibility != tt.wantElig || n.ModifyIndex != 2 {
				t.Errorf("eligibility %q modify index %d, want %q 2", n.SchedulingEligibility, n.ModifyIndex, tt.wantElig)
			}
		})
	}
}

func TestNodeUpdateFailures(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"status of unknown node", s.UpdateNodeStatus(2, at(1), nodeID(9), caravan.NodeStatusDown, "", nil), caravan.ErrNotFound},
		{"unknown status", s.UpdateNodeStatus(2, at(1), nodeID(1), "sleepy", "", nil), caravan.ErrInvalid},
		{"drain of unknown node", s.UpdateNodeDrain(2, at(1), nodeID(9), nil, "", nil), caravan.ErrNotFound},
		{"drain with bad eligibility", s.UpdateNodeDrain(2, at(1), nodeID(1), nil, "maybe", nil), caravan.ErrInvalid},
		{"eligibility of unknown node", s.UpdateNodeEligibility(2, at(1), nodeID(9), caravan.NodeEligible, nil), caravan.ErrNotFound},
		{"empty eligibility", s.UpdateNodeEligibility(2, at(1), nodeID(1), "", nil), caravan.ErrInvalid},
		{"deregister unknown node", s.DeregisterNodes(2, []string{nodeID(1), nodeID(9)}), caravan.ErrNotFound},
		{"bad evaluation", s.UpdateNodeEligibility(2, at(1), nodeID(1), caravan.NodeIneligible, []*caravan.Evaluation{nil}), caravan.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, tt.want) {
				t.Errorf("error = %v, want %v", tt.err, tt.want)
			}
		})
	}
	n := must[*caravan.Node](t)(s.Snapshot().NodeByID(nodeID(1)))
	if n.ModifyIndex != 1 || n.SchedulingEligibility != caravan.NodeEligible {
		t.Errorf("failed writes changed the node: %+v", n)
	}
}

func TestDeregisterNodes(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, s.RegisterNode(2, at(0), testNode(2), nil))
	mustOK(t, s.DeregisterNodes(3, []string{nodeID(1)}))
	nodes := must[[]*caravan.Node](t)(s.Snapshot().Nodes())
	if len(nodes) != 1 || nodes[0].ID != nodeID(2) {
		t.Errorf("nodes after deregister = %v", nodes)
	}
	if _, err := s.Snapshot().NodeUsage(nodeID(1)); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("usage of a deregistered node: %v", err)
	}
	if got := s.Snapshot().TableIndex(TableNodes); got != 3 {
		t.Errorf("nodes index = %d, want 3", got)
	}
}

// lostFixture has a node with a running allocation (two tasks, one
// finished), a complete one, and one the server stopped.
func lostFixture(t *testing.T) *Store {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, errOf(s.RegisterJob(2, at(0), testJob("web", caravan.JobTypeService, 3), nil, false)))
	mustOK(t, s.ApplyPlans(3, at(1), []PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(1, "web", 0, 1), testAlloc(2, "web", 0, 1), testAlloc(3, "web", 0, 1)}}}))
	mustOK(t, s.UpdateAllocsFromClient(4, at(2), nodeID(1), []*caravan.AllocClientUpdate{
		{ID: allocID(1), ClientStatus: caravan.AllocClientRunning, TaskStates: map[string]*caravan.TaskState{
			"server":  {State: caravan.TaskStateRunning, StartedAt: at(2)},
			"sidecar": {State: caravan.TaskStateComplete, FinishedAt: at(2)},
		}},
		{ID: allocID(2), ClientStatus: caravan.AllocClientComplete, TerminalReason: caravan.TaskStateComplete},
		{ID: allocID(3), ClientStatus: caravan.AllocClientRunning},
	}, nil))
	stop := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(3))).ShallowCopy()
	stop.DesiredStatus = caravan.AllocDesiredStop
	mustOK(t, s.ApplyPlans(5, at(3), []PlanUpdate{{Stops: []*caravan.Allocation{stop}}}))
	return s
}

func TestNodeDownLosesAllocations(t *testing.T) {
	s := lostFixture(t)
	if u := must[caravan.NodeUsage](t)(s.Snapshot().NodeUsage(nodeID(1))); u.Allocs != 1 {
		t.Fatalf("usage before = %+v, want one allocation", u)
	}
	evals := []*caravan.Evaluation{testEval(5, "web", caravan.EvalStatusPending)}
	mustOK(t, s.UpdateNodeStatus(6, at(4), nodeID(1), caravan.NodeStatusDown, "missed heartbeats", evals))
	snap := s.Snapshot()
	n := must[*caravan.Node](t)(snap.NodeByID(nodeID(1)))
	if n.Status != caravan.NodeStatusDown || n.StatusDescription != "missed heartbeats" || !n.StatusUpdatedAt.Equal(at(4)) {
		t.Errorf("node = status %q %q at %v", n.Status, n.StatusDescription, n.StatusUpdatedAt)
	}
	type view struct {
		Client, Desired, Reason string
		AllocModifyIndex        uint64
		Tasks                   map[string]string
	}
	got := map[string]view{}
	for _, a := range must[[]*caravan.Allocation](t)(snap.AllocsByNode(nodeID(1))) {
		v := view{a.ClientStatus, a.DesiredStatus, a.TerminalReason, a.AllocModifyIndex, map[string]string{}}
		for name, ts := range a.TaskStates {
			v.Tasks[name] = ts.State
		}
		got[a.ID] = v
	}
	want := map[string]view{
		allocID(1): {caravan.AllocClientLost, caravan.AllocDesiredStop, caravan.TaskStateLost, 6,
			map[string]string{"server": caravan.TaskStateLost, "sidecar": caravan.TaskStateComplete}},
		allocID(2): {caravan.AllocClientComplete, caravan.AllocDesiredRun, caravan.TaskStateComplete, 3, map[string]string{}},
		allocID(3): {caravan.AllocClientLost, caravan.AllocDesiredStop, caravan.TaskStateLost, 6, map[string]string{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("allocations (-want +got):\n%s", diff)
	}
	a1 := must[*caravan.Allocation](t)(snap.AllocByID(allocID(1)))
	if ev := a1.TaskStates["server"].Events; len(ev) != 1 || ev[0].Type != caravan.TaskEventLost || ev[0].Message == "" {
		t.Errorf("lost task events = %+v", ev)
	}
	if a1.ClientDescription == "" || a1.DesiredDescription == "" {
		t.Errorf("lost allocation has no description")
	}
	if u := must[caravan.NodeUsage](t)(snap.NodeUsage(nodeID(1))); u.Allocs != 0 {
		t.Errorf("usage after node down = %+v, want none", u)
	}
	sum := must[*caravan.JobSummary](t)(snap.JobSummary("web"))
	if diff := cmp.Diff(caravan.GroupSummary{Complete: 1, Lost: 2}, sum.Groups["web"]); diff != "" {
		t.Errorf("summary (-want +got):\n%s", diff)
	}
	checkDerived(t, s)
}

func TestNodeUsageFollowsAllocations(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, errOf(s.RegisterJob(2, at(0), testJob("web", caravan.JobTypeService, 2), nil, false)))
	a1, a2 := testAlloc(1, "web", 0, 1), testAlloc(2, "web", 0, 1)
	a2.Resources.Cores = []int{3}
	mustOK(t, s.ApplyPlans(3, at(1), []PlanUpdate{{Allocs: []*caravan.Allocation{a1, a2}}}))
	want := caravan.NodeUsage{CPU: 200, Memory: 128, Cores: []int{3}, Ports: []int{20001, 20002}, Allocs: 2}
	if diff := cmp.Diff(want, must[caravan.NodeUsage](t)(s.Snapshot().NodeUsage(nodeID(1)))); diff != "" {
		t.Errorf("usage (-want +got):\n%s", diff)
	}
	mustOK(t, s.UpdateAllocsFromClient(4, at(2), nodeID(1), []*caravan.AllocClientUpdate{{ID: allocID(2), ClientStatus: caravan.AllocClientFailed}}, nil))
	want = caravan.NodeUsage{CPU: 100, Memory: 64, Ports: []int{20001}, Allocs: 1}
	if diff := cmp.Diff(want, must[caravan.NodeUsage](t)(s.Snapshot().NodeUsage(nodeID(1))), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("usage after a failure (-want +got):\n%s", diff)
	}
	if got := s.Snapshot().TableIndex(TableNodeUsage); got != 4 {
		t.Errorf("node_usage index = %d, want 4", got)
	}
	checkDerived(t, s)
}
