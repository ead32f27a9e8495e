package fsm

import (
	"bytes"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
	"github.com/hashicorp/raft"
)

// seedEntries are valid entries of every type, against the state that
// fuzzState builds.
func seedEntries(t testing.TB) [][]byte {
	up := &caravan.AllocClientUpdate{ID: uuid('b', 1), ClientStatus: caravan.AllocClientComplete,
		TaskStates: map[string]*caravan.TaskState{"server": {State: caravan.TaskStateComplete}}}
	return [][]byte{
		entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("", 1), Eval: testEval(9, "", caravan.EvalStatusPending)}),
		entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("web", 3)}),
		entry(t, JobStop, &JobStopRequest{Time: t0, JobID: "web", Purge: true}),
		entry(t, EvalUpsert, &EvalUpsertRequest{Time: t0, Evals: []*caravan.Evaluation{testEval(3, "web", caravan.EvalStatusBlocked)}}),
		entry(t, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(2)}),
		entry(t, NodeStatus, &NodeStatusRequest{Time: t0, NodeID: uuid('a', 1), Status: caravan.NodeStatusDown}),
		entry(t, NodeDrain, &NodeDrainRequest{Time: t0, NodeID: uuid('a', 1), Drain: &caravan.DrainStrategy{Deadline: 1e9}}),
		entry(t, NodeEligibility, &NodeEligibilityRequest{Time: t0, NodeID: uuid('a', 1), Eligibility: caravan.NodeIneligible}),
		entry(t, NodeDeregister, &NodeDeregisterRequest{Time: t0, NodeIDs: []string{uuid('a', 1)}}),
		entry(t, AllocClientUpdate, &AllocClientUpdateRequest{Time: t0, NodeID: uuid('a', 1), Updates: []*caravan.AllocClientUpdate{up}}),
		entry(t, PlanApply, &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{{
			Stops:  []*caravan.Allocation{{ID: uuid('b', 1), DesiredStatus: caravan.AllocDesiredStop}},
			Allocs: []*caravan.Allocation{testAlloc(5, "web", 1)}}}}),
		entry(t, PlanApplyCompact, &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{{EvalID: uuid('c', 9), JobID: "web",
			Stops:  []*caravan.Allocation{{ID: uuid('b', 1), JobID: "web", DesiredStatus: caravan.AllocDesiredStop}},
			Allocs: []*caravan.Allocation{testAlloc(6, "web", 1), testAlloc(7, "web", 2)}}}}),
		entry(t, JobRegisterBatch, &JobRegisterBatchRequest{Jobs: []JobRegisterRequest{{Time: t0, Job: testJob("", 1)},
			{Time: t0, Job: testJob("web", 2), Eval: testEval(8, "web", caravan.EvalStatusPending)}}}),
		entry(t, Reap, &ReapRequest{Time: t0, Reap: state.Reap{AllocIDs: []string{uuid('b', 1)}, JobIDs: []string{"web"},
			JobVersions: []state.JobVersionRef{{JobID: "web", Version: 0}}}}),
		entry(t, ServerMember, &ServerMemberRequest{Time: t0, Member: state.ServerMember{ID: "s1"}}),
	}
}

// fuzzState has a node, a job and an allocation for entries to act on.
func fuzzState(t testing.TB) *FSM {
	f, _ := newFSM(t)
	mustApply(t, f, 1, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(1)})
	mustApply(t, f, 2, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("web", 2)})
	mustApply(t, f, 3, PlanApply, &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(1, "web", 1)}}}})
	return f
}

// FuzzApply feeds arbitrary entries to Apply: it must return a *Response or
// an error, never panic, and whatever it wrote must survive a snapshot
// round trip.
func FuzzApply(f *testing.F) {
	for _, e := range seedEntries(f) {
		f.Add(e)
		f.Add(e[:len(e)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{255, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		fsm := fuzzState(t)
		switch v := fsm.Apply(&raft.Log{Index: 10, Type: raft.LogCommand, Data: data}).(type) {
		case *Response:
			if v.Index != 10 {
				t.Fatalf("response index %d", v.Index)
			}
		case error:
		default:
			t.Fatalf("Apply returned %T", v)
		}
		var buf bytes.Buffer
		if err := fsm.store.Snapshot().Persist(&buf); err != nil {
			t.Fatalf("persist after applying %q: %v", data, err)
		}
		again, _ := newFSM(t)
		if err := again.store.Restore(&buf); err != nil {
			t.Fatalf("restore after applying %q: %v", data, err)
		}
	})
}
