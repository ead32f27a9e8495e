package scheduler

import (
	"errors"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestComputeErrors(t *testing.T) {
	j := testJob("api", caravan.JobTypeService, 1)
	if _, err := Compute(nil, testEval(j, ""), Options{}); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("nil state: %v", err)
	}
	if _, err := Compute(newFakeState(), nil, Options{}); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("nil evaluation: %v", err)
	}
	s := newFakeState()
	s.addJob(j)
	s.failNodes = true
	if _, err := Compute(s, testEval(j, ""), Options{}); !errors.Is(err, caravan.ErrUnavailable) {
		t.Errorf("failing state: %v, want it wrapped", err)
	}
}

func TestEvaluationOutcome(t *testing.T) {
	s := newFakeState()
	s.index = 4242
	s.addNodes(testNode("n1"))
	j := testJob("api", caravan.JobTypeBatch, 20) // 8 fit (cpu)
	j.Priority = 70
	j.Version = 3
	j.JobModifyIndex = 99
	j.AllAtOnce = false
	s.addJob(j)
	eval := testEval(j, caravan.TriggerJobRegister)
	eval.SubmitTime = time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC)
	eval.NodePool = caravan.DefaultNodePool
	res, err := Compute(s, eval, Options{Now: testNow, NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Plan
	if p.SnapshotIndex != 4242 || p.Priority != 70 || p.JobID != "api" || p.JobVersion != 3 || p.EvalID != eval.ID {
		t.Errorf("plan header: %+v", p)
	}
	if res.Placed != 8 || res.Failed != 12 {
		t.Errorf("placed %d, failed %d; want 8 and 12", res.Placed, res.Failed)
	}
	if len(p.Evals) != 2 {
		t.Fatalf("got %d evaluations, want the update and a blocked one", len(p.Evals))
	}
	up, blocked := p.Evals[0], p.Evals[1]
	wantUp := eval.Copy()
	wantUp.Status = caravan.EvalStatusComplete
	wantUp.SnapshotIndex = 4242
	wantUp.QueuedAllocations = map[string]int{"web": 12}
	wantUp.BlockedEval = blocked.ID
	wantUp.ModifyTime = testNow
	wantUp.FailedTGAllocs = map[string]*caravan.AllocMetric{"web": {
		NodesEvaluated: 1, NodesExhausted: 1, NodesInPool: 1,
		DimensionExhausted: map[string]int{"cpu": 1}, CoalescedFailures: 11,
	}}
	if diff := cmp.Diff(wantUp, up); diff != "" {
		t.Errorf("evaluation update (-want +got):\n%s", diff)
	}
	wantBlocked := &caravan.Evaluation{
		Priority: 70, Type: caravan.JobTypeBatch, TriggeredBy: caravan.TriggerQueuedAllocs,
		JobID: "api", JobModifyIndex: 99, NodePool: caravan.DefaultNodePool,
		Status: caravan.EvalStatusBlocked, StatusDescription: descBlocked,
		PreviousEval: eval.ID, SubmitTime: eval.SubmitTime, CreateTime: testNow, ModifyTime: testNow,
		SnapshotIndex: 4242, // the blocked set wakes it on capacity changes after this
	}
	if diff := cmp.Diff(wantBlocked, blocked, cmpopts.IgnoreFields(caravan.Evaluation{}, "ID")); diff != "" {
		t.Errorf("blocked evaluation (-want +got):\n%s", diff)
	}
	if eval.Status != caravan.EvalStatusPending || eval.BlockedEval != "" {
		t.Errorf("the input evaluation was modified: %+v", eval)
	}
}

func TestBadInputNeverPanics(t *testing.T) {
	odd := func(mut func(j *caravan.Job, s *fakeState)) func() (*caravan.Job, *fakeState) {
		return func() (*caravan.Job, *fakeState) {
			s := newFakeState()
			s.addNodes(testNode("n1"), testNode("n2"))
			j := testJob("api", caravan.JobTypeService, 2)
			mut(j, s)
			s.addJob(j)
			return j, s
		}
	}
	tests := []struct {
		name       string
		make       func() (*caravan.Job, *fakeState)
		wantStatus string
	}{
		{"unknown job type", odd(func(j *caravan.Job, _ *fakeState) { j.Type = "sysbatch" }), caravan.EvalStatusFailed},
		{"unknown algorithm", odd(func(j *caravan.Job, _ *fakeState) { j.Algorithm = "magic" }), caravan.EvalStatusFailed},
		{"nil group and task", odd(func(j *caravan.Job, s *fakeState) {
			j.TaskGroups = append([]*caravan.TaskGroup{nil}, j.TaskGroups...)
			gone := testAlloc("g", j, "n1", 0)
			gone.TaskGroup = "removed"
			s.addAlloc(gone)
			j.TaskGroups[1].Tasks = append(j.TaskGroups[1].Tasks, nil)
		}), caravan.EvalStatusComplete},
		{"two groups of one name", odd(func(j *caravan.Job, _ *fakeState) {
			dup := *j.TaskGroups[0]
			j.TaskGroups = append(j.TaskGroups, &dup)
		}), caravan.EvalStatusComplete},
		{"huge count", odd(func(j *caravan.Job, _ *fakeState) { j.TaskGroups[0].Count = ptr(1 << 50) }), caravan.EvalStatusFailed},
		{"negative count", odd(func(j *caravan.Job, _ *fakeState) { j.TaskGroups[0].Count = ptr(-3) }), caravan.EvalStatusComplete},
		{"negative resources", odd(func(j *caravan.Job, _ *fakeState) {
			j.TaskGroups[0].Tasks[0].Resources = caravan.Resources{CPU: -5, Cores: -2, Memory: -1}
		}), caravan.EvalStatusComplete},
		{"group without tasks", odd(func(j *caravan.Job, _ *fakeState) { j.TaskGroups[0].Tasks = nil }), caravan.EvalStatusComplete},
		{"odd constraints", odd(func(j *caravan.Job, _ *fakeState) {
			j.Constraints = []caravan.Constraint{
				{Attribute: "${", Operator: "regexp", Value: "[["},
				{Attribute: "${attr.}", Operator: "version", Value: ""},
				{Attribute: "", Operator: "set_contains", Value: ",,,"},
				{Attribute: "${meta.x}", Operator: "<", Value: ""},
			}
		}), caravan.EvalStatusComplete},
		{"odd spreads", odd(func(j *caravan.Job, _ *fakeState) {
			j.Spreads = []caravan.Spread{{Attribute: ""}, {Attribute: "${node.nothing}", Weight: -4}}
		}), caravan.EvalStatusComplete},
		{"port asked twice and out of range", odd(func(j *caravan.Job, _ *fakeState) {
			j.TaskGroups[0].Tasks[0].Resources.Ports = []caravan.Port{{Label: "a", Value: 80}, {Label: "b", Value: 80}, {Label: "c", Value: 70000}}
		}), caravan.EvalStatusComplete},
		{"node with no resources", odd(func(_ *caravan.Job, s *fakeState) {
			for _, n := range s.nodes {
				n.Resources = caravan.NodeResources{}
			}
		}), caravan.EvalStatusComplete},
		{"node with an empty dynamic range", odd(func(j *caravan.Job, s *fakeState) {
			j.TaskGroups[0].Tasks[0].Resources.Ports = []caravan.Port{{Label: "a"}}
			for _, n := range s.nodes {
				n.Resources.MinDynamicPort, n.Resources.MaxDynamicPort = 9000, 8000
			}
		}), caravan.EvalStatusComplete},
		{"no nodes at all", odd(func(_ *caravan.Job, s *fakeState) { s.nodes = nil }), caravan.EvalStatusComplete},
		{"allocation without job version on a gone node", odd(func(j *caravan.Job, s *fakeState) {
			a := testAlloc("x", j, "nowhere", 0)
			a.Job, a.JobVersion = nil, 7
			s.addAlloc(a)
		}), caravan.EvalStatusComplete},
		{"terminal allocation with a huge index", odd(func(j *caravan.Job, s *fakeState) {
			s.addAlloc(failedAt(testAlloc("x", j, "n1", 1<<40), testNow))
		}), caravan.EvalStatusComplete},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, s := tt.make()
			res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Now: testNow, NewID: seqIDs()})
			if err != nil {
				t.Fatal(err)
			}
			if got := res.Plan.Evals[0]; got.Status != tt.wantStatus {
				t.Errorf("evaluation status %q (%s), want %q", got.Status, got.StatusDescription, tt.wantStatus)
			}
		})
	}
}
