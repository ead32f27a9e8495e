package scheduler

import (
	"fmt"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// liveByNode lists, per node, the live allocations of the job.
func liveByNode(s *fakeState, jobID string) map[string]int {
	out := map[string]int{}
	for _, a := range s.allocs[jobID] {
		if !a.Terminal() {
			out[a.NodeID]++
		}
	}
	return out
}

func TestSystemJobFollowsNodes(t *testing.T) {
	s := newFakeState()
	s.addNodes(testNode("n1"), testNode("n2"), testNode("n3"))
	j := testJob("logs", caravan.JobTypeSystem, 1)
	s.addJob(j)
	ids := seqIDs()
	run := func(step string, eval *caravan.Evaluation, wantPlaced int) {
		t.Helper()
		res, err := Compute(s, eval, Options{Seed: 1, NewID: ids})
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if res.Placed != wantPlaced {
			t.Errorf("%s: placed %d, want %d", step, res.Placed, wantPlaced)
		}
		for _, a := range newAllocs(s, res.Plan) {
			if a.Name != "logs.web[0]" || a.Index != 0 {
				t.Errorf("%s: system allocation named %s index %d", step, a.Name, a.Index)
			}
		}
		s.apply(res.Plan)
	}
	run("register", testEval(j, caravan.TriggerJobRegister), 3)
	run("again", testEval(j, caravan.TriggerJobRegister), 0)

	s.addNodes(testNode("n4"))
	joined := testEval(j, caravan.TriggerNodeUpdate)
	joined.NodeID = "n4"
	run("n4 joins", joined, 1)

	s.nodeByID["n2"].Drain = &caravan.DrainStrategy{}
	s.nodeByID["n3"].Attributes["os"] = "windows"
	j.Constraints = []caravan.Constraint{{Attribute: "${attr.os}", Value: "linux"}}
	run("n2 drains, n3 stops qualifying", testEval(j, caravan.TriggerNodeUpdate), 0)
	want := map[string]int{"n1": 1, "n4": 1}
	if diff := cmp.Diff(want, liveByNode(s, "logs")); diff != "" {
		t.Errorf("live allocations per node (-want +got):\n%s", diff)
	}
}

func TestSystemJobNoRescheduleElsewhere(t *testing.T) {
	s := newFakeState()
	s.addNodes(testNode("n1"), testNode("n2"))
	j := testJob("logs", caravan.JobTypeSystem, 1)
	s.addJob(j)
	failed := failedAt(testAlloc("f1", j, "n1", 0), testNow)
	s.addAlloc(failed)
	s.addAlloc(testAlloc("ok2", j, "n2", 0))
	dup := testAlloc("dup2", j, "n2", 0)
	dup.CreateIndex = 9
	s.addAlloc(dup)
	res, err := Compute(s, testEval(j, caravan.TriggerAllocFailure), Options{Now: testNow, NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"stop dup2 stop another allocation holds the same index"}
	if diff := cmp.Diff(want, summarize(s, res.Plan)); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
}

func TestSystemRollingUpdate(t *testing.T) {
	s := newFakeState()
	for i := range 5 {
		s.addNodes(testNode(fmt.Sprintf("n%d", i)))
	}
	v0 := testJob("logs", caravan.JobTypeSystem, 1)
	for i := range 5 {
		s.addAlloc(testAlloc(fmt.Sprintf("a%d", i), v0, fmt.Sprintf("n%d", i), 0))
	}
	v1 := newVersion(v0, changedCommand)
	v1.Update = &caravan.UpdateStrategy{MaxParallel: 2}
	s.addJob(v1)
	res, err := Compute(s, testEval(v1, caravan.TriggerJobRegister), Options{NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	placed := newAllocs(s, res.Plan)
	if len(placed) != 2 || len(planStops(res.Plan)) != 2 {
		t.Fatalf("placed %d, stopped %d; want 2 and 2", len(placed), len(planStops(res.Plan)))
	}
	for _, a := range placed {
		prev := s.byID[a.PreviousAllocation]
		if prev == nil || prev.NodeID != a.NodeID {
			t.Errorf("replacement %s on %s does not replace an allocation of its node", a.ID, a.NodeID)
		}
	}
	// In place: only the count changed (system jobs ignore it).
	v2 := newVersion(v0, func(j *caravan.Job) { j.TaskGroups[0].Count = ptr(7) })
	v2.Version = 5
	s.addJob(v2)
	res, err = Compute(s, testEval(v2, caravan.TriggerJobRegister), Options{NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(planAllocs(res.Plan)); got != 5 || len(planStops(res.Plan)) != 0 || res.Placed != 0 {
		t.Errorf("in-place update: %d allocations, %d stops, %d placed; want 5, 0, 0", got, len(planStops(res.Plan)), res.Placed)
	}
}
