package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// compactScenario is a state with two nodes, two versions of a job and
// allocations with agents' reports, and a batch of plans that uses every
// part of the compact form: placements of two groups with cores, ports and
// a name of their own, an in-place update, a reschedule, stops and evicts
// with different descriptions, a stop with a follow-up evaluation, a plan
// of another job, an allocation whose job is set.
func compactScenario(t *testing.T) (setup [][]byte, req *PlanApplyRequest) {
	job := testJob("web", 4)
	job.TaskGroups = append(job.TaskGroups, &caravan.TaskGroup{Name: "db", Count: job.TaskGroups[0].Count,
		Tasks: []*caravan.Task{{Name: "db", Driver: "exec", Config: caravan.TaskConfig{Command: "/bin/true"}}}})
	setup = [][]byte{
		entry(t, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(1)}),
		entry(t, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(2)}),
		entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: job}),
		entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("api", 1)}),
		entry(t, PlanApply, &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{{EvalID: uuid('c', 1), JobID: "web",
			Allocs: []*caravan.Allocation{testAlloc(1, "web", 1), testAlloc(2, "web", 1), testAlloc(3, "web", 2), testAlloc(4, "web", 2)}}}}),
		entry(t, AllocClientUpdate, &AllocClientUpdateRequest{Time: t0, NodeID: uuid('a', 1), Updates: []*caravan.AllocClientUpdate{
			{ID: uuid('b', 1), ClientStatus: caravan.AllocClientRunning},
			{ID: uuid('b', 2), ClientStatus: caravan.AllocClientFailed, TaskStates: map[string]*caravan.TaskState{"server": {State: caravan.TaskStateFailed}}}}}),
		entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("web", 4), ForceNewVersion: true}),
	}
	eval := uuid('c', 2)
	place := func(n int, group string, node int) *caravan.Allocation {
		a := testAlloc(n, "web", node)
		a.EvalID, a.JobVersion, a.TaskGroup = eval, 1, group
		a.Name = caravan.AllocName("web", group, n)
		a.CreateTime, a.ModifyTime = t0, t0
		return a
	}
	withCores := place(20, "web", 1)
	withCores.Resources.Cores = []int{0, 1}
	withPorts := place(21, "web", 2)
	withPorts.Resources.Ports = []caravan.AllocatedPort{{Label: "http", Value: 20001, To: 80}}
	otherGroup := place(22, "db", 2)
	otherGroup.Resources = caravan.AllocatedResources{CPU: 300, Memory: 256}
	ownName := place(23, "web", 1)
	ownName.Name = "custom"
	withJob := place(24, "web", 2)
	withJob.Job = testJob("web", 4)
	resched := place(25, "web", 1)
	resched.PreviousAllocation = uuid('b', 2)
	resched.RescheduleTracker = &caravan.RescheduleTracker{Events: []caravan.RescheduleEvent{{Time: t0, PrevAllocID: uuid('b', 2), PrevNodeID: uuid('a', 1), Delay: caravan.Duration(time.Second)}}}
	update := testAlloc(2, "web", 1)
	update.NextAllocation = resched.ID
	inPlace := testAlloc(1, "web", 1)
	inPlace.JobVersion = 1
	otherNodeName := place(26, "web", 1)
	otherNodeName.NodeName = "renamed"

	stop := func(n, node int, desired, desc string) *caravan.Allocation {
		a := testAlloc(n, "web", node)
		a.DesiredStatus, a.DesiredDescription = desired, desc
		return a
	}
	followup := stop(4, 2, caravan.AllocDesiredStop, "rescheduled later")
	followup.FollowupEvalID = uuid('c', 9)
	req = &PlanApplyRequest{Time: t0.Add(time.Minute), Plans: []state.PlanUpdate{
		{EvalID: eval, JobID: "web",
			Stops: []*caravan.Allocation{stop(3, 2, caravan.AllocDesiredStop, "scaled down"), stop(99, 2, caravan.AllocDesiredStop, "scaled down"),
				stop(3, 2, caravan.AllocDesiredEvict, "node draining"), followup, stop(1, 1, caravan.AllocDesiredStop, "")},
			Allocs: []*caravan.Allocation{place(10, "web", 1), place(11, "web", 1), withCores, withPorts, otherGroup, ownName,
				withJob, resched, update, inPlace, place(12, "web", 2), otherNodeName},
			Evals: []*caravan.Evaluation{testEval(2, "web", caravan.EvalStatusComplete)}},
		{EvalID: uuid('c', 3), JobID: "api", Allocs: []*caravan.Allocation{testAlloc(30, "api", 2)}},
		{EvalID: uuid('c', 4), JobID: "api"},
	}}
	return setup, req
}

// TestPlanApplyCompactAppliesLikePlanApply applies the same plans as a
// PlanApply and as a PlanApplyCompact entry: the states must persist to
// the same bytes.
func TestPlanApplyCompactAppliesLikePlanApply(t *testing.T) {
	setup, req := compactScenario(t)
	var persisted [2][]byte
	for k, mt := range []MessageType{PlanApply, PlanApplyCompact} {
		f, s := newFSM(t)
		for i, e := range append(setup, entry(t, mt, req)) {
			if _, err := apply(f, uint64(i+1), e); err != nil {
				t.Fatalf("%s: entry %d: %v", mt, i, err)
			}
		}
		var buf bytes.Buffer
		if err := s.Snapshot().Persist(&buf); err != nil {
			t.Fatal(err)
		}
		persisted[k] = buf.Bytes()
	}
	if !bytes.Equal(persisted[0], persisted[1]) {
		t.Errorf("PlanApply and PlanApplyCompact entries of the same plans give different states")
	}
}

// TestCompactRoundTrip checks that a compact entry decodes to the plans
// encoded, but for the fields the store sets on placement.
func TestCompactRoundTrip(t *testing.T) {
	_, req := compactScenario(t)
	data := entry(t, PlanApplyCompact, req)
	var cr compactRequest
	if err := json.Unmarshal(data[1:], &cr); err != nil {
		t.Fatal(err)
	}
	got, err := cr.expand()
	if err != nil {
		t.Fatal(err)
	}
	want := withoutJobs(req)
	// Compare what the store reads: of placements, all but the fields it
	// sets; of stops, the fields it merges.
	for _, r := range []*PlanApplyRequest{want, got} {
		for _, p := range r.Plans {
			for _, a := range p.Allocs {
				a.CreateTime, a.ModifyTime = time.Time{}, time.Time{}
			}
			for i, a := range p.Stops {
				p.Stops[i] = &caravan.Allocation{ID: a.ID, JobID: a.JobID, JobVersion: a.JobVersion,
					DesiredStatus: a.DesiredStatus, DesiredDescription: a.DesiredDescription,
					NextAllocation: a.NextAllocation, FollowupEvalID: a.FollowupEvalID, RescheduleTracker: a.RescheduleTracker}
			}
		}
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
}

func TestCompactBadEntries(t *testing.T) {
	for _, body := range []string{
		`{"plans":[{"allocs":[{"i":"x"}]}]}`,
		`{"plans":[{"template":{"id":""},"allocs":[{"i":"x","n":3}]}]}`,
		`{"plans":[{"template":{"id":""},"allocs":[{"n":0}],"nodes":[{"i":"n"}]}]}`,
		`{"plans":[{"stops":[{"i":"x"}]}]}`,
		`{"plans":[{"stop":{"d":"stop"},"stops":[{"v":1}]}]}`,
	} {
		f, _ := newFSM(t)
		if _, err := apply(f, 1, append([]byte{byte(PlanApplyCompact)}, body...)); err == nil {
			t.Errorf("%s: applied", body)
		}
	}
}

// BenchmarkPlanEntry encodes and decodes an entry of one plan of 10,000
// placements over 1,000 nodes, in the full and the compact form.
func BenchmarkPlanEntry(b *testing.B) {
	p := state.PlanUpdate{EvalID: uuid('c', 1), JobID: "job"}
	for i := range 10_000 {
		p.Allocs = append(p.Allocs, benchAlloc("job", i, i%1000, p.EvalID))
	}
	req := &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{p}}
	for _, mt := range []MessageType{PlanApply, PlanApplyCompact} {
		b.Run(fmt.Sprintf("encode/%s", mt), func(b *testing.B) {
			for b.Loop() {
				if _, err := Encode(mt, req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(entry(b, mt, req))), "bytes")
		})
		b.Run(fmt.Sprintf("decode/%s", mt), func(b *testing.B) {
			data := entry(b, mt, req)
			for b.Loop() {
				if _, err := decodePlans(mt, data[1:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// decodePlans decodes a PlanApply or PlanApplyCompact payload as Apply
// does.
func decodePlans(mt MessageType, payload []byte) (*PlanApplyRequest, error) {
	if mt == PlanApplyCompact {
		var cr compactRequest
		if err := jsonv2.Unmarshal(payload, &cr); err != nil {
			return nil, err
		}
		return cr.expand()
	}
	var r PlanApplyRequest
	return &r, jsonv2.Unmarshal(payload, &r)
}
