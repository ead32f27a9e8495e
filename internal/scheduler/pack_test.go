package scheduler

import (
	"fmt"
	"testing"

	"github.com/caravan-sched/caravan"
)

// TestBinpackPacksAcrossEvaluations places small jobs one evaluation at a
// time on a large cluster: each goes to a node already in use while one
// has room, and a node is opened only when none has. A sample of random
// candidates would open a node for nearly every job.
func TestBinpackPacksAcrossEvaluations(t *testing.T) {
	s := newFakeState()
	var nodes []*caravan.Node
	for i := range 200 {
		nodes = append(nodes, testNode(fmt.Sprintf("n%03d", i)))
	}
	s.addNodes(nodes...)
	// A node takes 8 of these jobs (4000 MHz / 500 MHz).
	const jobs = 40
	for i := range jobs {
		j := testJob(fmt.Sprintf("job-%02d", i), caravan.JobTypeService, 1)
		s.addJob(j)
		res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Seed: int64(i), NewID: prefixedIDs(j.ID)})
		if err != nil {
			t.Fatal(err)
		}
		if res.Placed != 1 {
			t.Fatalf("job %d: placed %d", i, res.Placed)
		}
		s.apply(res.Plan)
	}
	used := 0
	for _, u := range s.usage {
		if u.Allocs > 0 {
			used++
		}
	}
	if want := jobs / 8; used != want {
		t.Errorf("%d nodes in use, want %d", used, want)
	}
}

// TestBinpackOpensTheSameNode evaluates two small jobs on the same state,
// as two workers do at once, when no node in use has room: both open the
// same node, so the plan applier commits both and they share it.
func TestBinpackOpensTheSameNode(t *testing.T) {
	s := newFakeState()
	var nodes []*caravan.Node
	for i := range 100 {
		nodes = append(nodes, testNode(fmt.Sprintf("n%03d", i)))
	}
	s.addNodes(nodes...)
	fill(s, "n042", 4000, 1024) // in use, full
	var got []string
	for i := range 2 {
		j := testJob(fmt.Sprintf("job-%d", i), caravan.JobTypeService, 1)
		s.addJob(j)
		res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Seed: int64(i), NewID: prefixedIDs(j.ID)})
		if err != nil {
			t.Fatal(err)
		}
		for node := range res.Plan.NodeAllocation {
			got = append(got, node)
		}
	}
	if len(got) != 2 || got[0] != got[1] {
		t.Errorf("the two jobs went to %v, want one node for both", got)
	}
}
