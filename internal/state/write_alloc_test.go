package state

import (
	"errors"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// allocFixture has a node, a job of the given type with two allocations
// and an evaluation that completed.
func allocFixture(t *testing.T, jobType string) *Store {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, s.RegisterNode(2, at(0), testNode(2), nil))
	mustOK(t, errOf(s.RegisterJob(3, at(0), testJob("web", jobType, 2), testEval(1, "", caravan.EvalStatusPending), false)))
	done := testEval(1, "web", caravan.EvalStatusComplete)
	mustOK(t, s.ApplyPlans(4, at(1), []PlanUpdate{{EvalID: evalID(1), JobID: "web",
		Allocs: []*caravan.Allocation{testAlloc(1, "web", 0, 1), testAlloc(2, "web", 0, 1)},
		Evals:  []*caravan.Evaluation{done}}}))
	return s
}

func update(id int, status string, tasks map[string]string) *caravan.AllocClientUpdate {
	u := &caravan.AllocClientUpdate{ID: allocID(id), ClientStatus: status, ClientDescription: "agent says " + status}
	if caravan.TaskStateTerminal(status) || status == caravan.AllocClientComplete {
		u.TerminalReason = caravan.TaskStateComplete
	}
	for name, st := range tasks {
		if u.TaskStates == nil {
			u.TaskStates = map[string]*caravan.TaskState{}
		}
		u.TaskStates[name] = &caravan.TaskState{State: st}
	}
	return u
}

func TestClientUpdateMergeRules(t *testing.T) {
	tests := []struct {
		name       string
		first      *caravan.AllocClientUpdate
		second     *caravan.AllocClientUpdate
		wantStatus string
		wantReason string
		wantTasks  map[string]string
	}{
		{"running", update(1, "running", map[string]string{"server": "running"}), nil,
			"running", "", map[string]string{"server": "running"}},
		{"complete", update(1, "running", nil), update(1, "complete", map[string]string{"server": "complete"}),
			"complete", "complete", map[string]string{"server": "complete"}},
		{"never back from terminal", update(1, "failed", map[string]string{"server": "failed"}), update(1, "running", map[string]string{"server": "running", "extra": "running"}),
			"failed", "complete", map[string]string{"server": "failed", "extra": "running"}},
		{"terminal to another terminal", update(1, "complete", nil), update(1, "failed", nil),
			"failed", "complete", map[string]string{}},
		{"lost stays lost", update(1, "lost", nil), update(1, "complete", nil),
			"lost", "complete", map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := allocFixture(t, caravan.JobTypeService)
			mustOK(t, s.UpdateAllocsFromClient(5, at(2), nodeID(1), []*caravan.AllocClientUpdate{tt.first}, nil))
			if tt.second != nil {
				mustOK(t, s.UpdateAllocsFromClient(6, at(3), nodeID(1), []*caravan.AllocClientUpdate{tt.second}, nil))
			}
			a := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(1)))
			tasks := map[string]string{}
			for name, ts := range a.TaskStates {
				tasks[name] = ts.State
			}
			got := []any{a.ClientStatus, a.TerminalReason, tasks, a.AllocModifyIndex}
			want := []any{tt.wantStatus, tt.wantReason, tt.wantTasks, uint64(4)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("allocation (-want +got):\n%s", diff)
			}
			if tt.second != nil && a.ModifyIndex != 6 || tt.second == nil && a.ModifyIndex != 5 {
				t.Errorf("modify index = %d", a.ModifyIndex)
			}
			checkDerived(t, s)
		})
	}
}

func TestClientUpdateIgnoresForeignAllocations(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	err := s.UpdateAllocsFromClient(5, at(2), nodeID(2), []*caravan.AllocClientUpdate{update(1, "running", nil), update(99, "running", nil)}, nil)
	mustOK(t, err)
	if a := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(1))); a.ClientStatus != caravan.AllocClientPending {
		t.Errorf("allocation on another node was updated: %q", a.ClientStatus)
	}
}

func TestClientUpdateBadInput(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	tests := []struct {
		name    string
		updates []*caravan.AllocClientUpdate
	}{
		{"null update", []*caravan.AllocClientUpdate{nil}},
		{"unknown status", []*caravan.AllocClientUpdate{{ID: allocID(1), ClientStatus: "dancing"}}},
		{"bad id", []*caravan.AllocClientUpdate{{ID: "x", ClientStatus: "running"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.UpdateAllocsFromClient(5, at(2), nodeID(1), tt.updates, nil)
			if !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("error = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestJobStatusFollowsAllocationsAndEvals(t *testing.T) {
	type step struct {
		updates []*caravan.AllocClientUpdate
		want    string
	}
	tests := []struct {
		name    string
		jobType string
		steps   []step
	}{
		{"batch completes", caravan.JobTypeBatch, []step{
			{nil, caravan.JobStatusRunning},
			{[]*caravan.AllocClientUpdate{update(1, "complete", nil)}, caravan.JobStatusRunning},
			{[]*caravan.AllocClientUpdate{update(2, "complete", nil)}, caravan.JobStatusComplete},
		}},
		{"batch fails", caravan.JobTypeBatch, []step{
			{[]*caravan.AllocClientUpdate{update(1, "complete", nil), update(2, "failed", nil)}, caravan.JobStatusFailed},
		}},
		{"service keeps running", caravan.JobTypeService, []step{
			{[]*caravan.AllocClientUpdate{update(1, "running", nil), update(2, "running", nil)}, caravan.JobStatusRunning},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := allocFixture(t, tt.jobType)
			for i, st := range tt.steps {
				if st.updates != nil {
					mustOK(t, s.UpdateAllocsFromClient(uint64(10+i), at(10+i), nodeID(1), st.updates, nil))
				}
				j := must[*caravan.Job](t)(s.Snapshot().JobByID("web"))
				if j.Status != st.want {
					t.Errorf("step %d: status %q, want %q", i, j.Status, st.want)
				}
			}
			checkDerived(t, s)
		})
	}
}

func TestOpenEvaluationKeepsJobPending(t *testing.T) {
	s := newStore(t)
	mustOK(t, errOf(s.RegisterJob(1, at(0), testJob("b", caravan.JobTypeBatch, 1), nil, false)))
	steps := []struct {
		status string
		want   string
	}{
		{caravan.EvalStatusPending, caravan.JobStatusPending},
		{caravan.EvalStatusBlocked, caravan.JobStatusPending},
		{caravan.EvalStatusComplete, caravan.JobStatusPending}, // batch with nothing placed
	}
	for i, st := range steps {
		mustOK(t, s.UpsertEvals(uint64(2+i), at(i), []*caravan.Evaluation{testEval(1, "b", st.status)}))
		if j := must[*caravan.Job](t)(s.Snapshot().JobByID("b")); j.Status != st.want {
			t.Errorf("eval %s: job status %q, want %q", st.status, j.Status, st.want)
		}
	}
	e := must[*caravan.Evaluation](t)(s.Snapshot().EvalByID(evalID(1)))
	if e.CreateIndex != 2 || e.ModifyIndex != 4 || !e.CreateTime.Equal(at(0)) || !e.ModifyTime.Equal(at(2)) {
		t.Errorf("eval indexes %d/%d times %v/%v", e.CreateIndex, e.ModifyIndex, e.CreateTime, e.ModifyTime)
	}
	mustOK(t, errOf(s.RegisterJob(10, at(0), testJob("s", caravan.JobTypeService, 0), nil, false)))
	if j := must[*caravan.Job](t)(s.Snapshot().JobByID("s")); j.Status != caravan.JobStatusRunning {
		t.Errorf("service with nothing to run: status %q, want running", j.Status)
	}
	checkDerived(t, s)
}

func TestPlanApplyPlacesAndSharesTheJob(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	snap := s.Snapshot()
	version := must[*caravan.Job](t)(snap.JobVersion("web", 0))
	for _, a := range must[[]*caravan.Allocation](t)(snap.AllocsByJob("web")) {
		if a.Job != version {
			t.Errorf("allocation %s has its own job copy", a.ID)
		}
		if a.CreateIndex != 4 || a.ModifyIndex != 4 || a.AllocModifyIndex != 4 || !a.CreateTime.Equal(at(1)) || !a.ModifyTime.Equal(at(1)) {
			t.Errorf("allocation %s indexes/times: %d %d %d %v %v", a.ID, a.CreateIndex, a.ModifyIndex, a.AllocModifyIndex, a.CreateTime, a.ModifyTime)
		}
	}
	if got := must[[]*caravan.Allocation](t)(snap.AllocsByEval(evalID(1))); len(got) != 2 {
		t.Errorf("allocations of the eval = %d, want 2", len(got))
	}
	if e := must[*caravan.Evaluation](t)(snap.EvalByID(evalID(1))); e.Status != caravan.EvalStatusComplete {
		t.Errorf("eval status %q", e.Status)
	}
	if j := must[*caravan.Job](t)(snap.JobByID("web")); j.Status != caravan.JobStatusRunning {
		t.Errorf("job status %q, want running", j.Status)
	}
}

func TestPlanApplyMergesOnlyServerFields(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	mustOK(t, s.UpdateAllocsFromClient(5, at(2), nodeID(1), []*caravan.AllocClientUpdate{update(1, "running", map[string]string{"server": "running"})}, nil))
	// The scheduler worked from a snapshot before the client update.
	stale := testAlloc(1, "web", 0, 1)
	stale.DesiredStatus = caravan.AllocDesiredStop
	stale.DesiredDescription = "rescheduled"
	stale.NextAllocation = allocID(3)
	stale.FollowupEvalID = evalID(7)
	stale.RescheduleTracker = &caravan.RescheduleTracker{Events: []caravan.RescheduleEvent{{PrevAllocID: allocID(0)}}}
	mustOK(t, s.ApplyPlans(6, at(3), []PlanUpdate{{Allocs: []*caravan.Allocation{stale}}}))
	a := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(1)))
	got := []any{a.ClientStatus, a.TaskStates["server"].State, a.DesiredStatus, a.DesiredDescription, a.NextAllocation, a.FollowupEvalID,
		len(a.RescheduleTracker.Events), a.CreateIndex, a.AllocModifyIndex, a.ModifyIndex}
	want := []any{caravan.AllocClientRunning, caravan.TaskStateRunning, caravan.AllocDesiredStop, "rescheduled", allocID(3), evalID(7),
		1, uint64(4), uint64(6), uint64(6)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("merged allocation (-want +got):\n%s", diff)
	}
	checkDerived(t, s)
}

func TestPlanApplyStopsAndInPlaceUpdates(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	changed := testJob("web", caravan.JobTypeService, 2)
	changed.Meta = map[string]string{"v": "2"}
	mustOK(t, errOf(s.RegisterJob(5, at(2), changed, nil, false)))
	stop := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(1))).ShallowCopy()
	stop.DesiredStatus, stop.DesiredDescription = caravan.AllocDesiredStop, "job updated"
	unknown := testAlloc(50, "web", 0, 1)
	unknown.DesiredStatus = caravan.AllocDesiredStop
	inPlace := testAlloc(2, "web", 1, 1)
	gone := testAlloc(3, "web", 7, 2) // version 7 does not exist: skipped
	mustOK(t, s.ApplyPlans(6, at(3), []PlanUpdate{{Stops: []*caravan.Allocation{stop, unknown}, Allocs: []*caravan.Allocation{inPlace, gone}}}))
	snap := s.Snapshot()
	a1 := must[*caravan.Allocation](t)(snap.AllocByID(allocID(1)))
	if a1.DesiredStatus != caravan.AllocDesiredStop || a1.DesiredDescription != "job updated" {
		t.Errorf("stopped allocation: %q %q", a1.DesiredStatus, a1.DesiredDescription)
	}
	a2 := must[*caravan.Allocation](t)(snap.AllocByID(allocID(2)))
	if v1 := must[*caravan.Job](t)(snap.JobVersion("web", 1)); a2.JobVersion != 1 || a2.Job != v1 {
		t.Errorf("in-place update: version %d, shares version 1: %v", a2.JobVersion, a2.Job == v1)
	}
	for _, id := range []string{allocID(50), allocID(3)} {
		if _, err := snap.AllocByID(id); !errors.Is(err, caravan.ErrNotFound) {
			t.Errorf("allocation %s: %v, want not found", id, err)
		}
	}
	if u := must[caravan.NodeUsage](t)(snap.NodeUsage(nodeID(1))); u.Allocs != 1 {
		t.Errorf("usage after a stop = %+v, want one allocation", u)
	}
	checkDerived(t, s)
}

func TestPlanApplyBadInputWritesNothing(t *testing.T) {
	tests := []struct {
		name string
		plan PlanUpdate
	}{
		{"null allocation", PlanUpdate{Allocs: []*caravan.Allocation{nil}}},
		{"null stop", PlanUpdate{Stops: []*caravan.Allocation{nil}}},
		{"allocation without node", PlanUpdate{Allocs: []*caravan.Allocation{{ID: allocID(9), JobID: "web", TaskGroup: "web"}}}},
		{"evaluation without job", PlanUpdate{Allocs: []*caravan.Allocation{testAlloc(9, "web", 0, 1)}, Evals: []*caravan.Evaluation{{ID: evalID(9)}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := allocFixture(t, caravan.JobTypeService)
			before := s.LatestIndex()
			err := s.ApplyPlans(9, at(9), []PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(8, "web", 0, 1)}}, tt.plan})
			if !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("error = %v, want ErrInvalid", err)
			}
			if s.LatestIndex() != before {
				t.Errorf("a failed plan moved the index")
			}
			if _, err := s.Snapshot().AllocByID(allocID(8)); !errors.Is(err, caravan.ErrNotFound) {
				t.Errorf("the valid plan of a failed entry was written: %v", err)
			}
		})
	}
}

func TestNullTaskEventsAreDropped(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	u := update(1, "running", nil)
	u.TaskStates = map[string]*caravan.TaskState{"server": {State: caravan.TaskStateRunning,
		Events: []*caravan.TaskEvent{nil, {Type: caravan.TaskEventStarted, Time: at(2)}, nil}}}
	mustOK(t, s.UpdateAllocsFromClient(5, at(2), nodeID(1), []*caravan.AllocClientUpdate{u}, nil))
	placed := testAlloc(9, "web", 0, 1)
	placed.TaskStates = map[string]*caravan.TaskState{"server": {State: caravan.TaskStatePending, Events: []*caravan.TaskEvent{nil}}, "gone": nil}
	mustOK(t, s.ApplyPlans(6, at(3), []PlanUpdate{{Allocs: []*caravan.Allocation{placed}}}))
	// Losing the node copies every task state: no null may be left.
	mustOK(t, s.UpdateNodeStatus(7, at(4), nodeID(1), caravan.NodeStatusDown, "", nil))
	a := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(1)))
	var types []string
	for _, e := range a.TaskStates["server"].Events {
		types = append(types, e.Type)
	}
	if diff := cmp.Diff([]string{caravan.TaskEventStarted, caravan.TaskEventLost}, types); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if a9 := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(9))); len(a9.TaskStates) != 1 {
		t.Errorf("placed task states = %v", a9.TaskStates)
	}
	checkDerived(t, s)
}
