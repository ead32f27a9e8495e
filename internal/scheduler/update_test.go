package scheduler

import (
	"fmt"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// changedCommand is a destructive change: the task's command.
func changedCommand(j *caravan.Job) { j.TaskGroups[0].Tasks[0].Config.Command = "/bin/v2" }

func TestRollingUpdateMaxParallel(t *testing.T) {
	tests := []struct {
		name        string
		update      *caravan.UpdateStrategy
		firstStatus string // client status of index 0, already on the new version ("" = old)
		want        int    // old allocations replaced
	}{
		{"all at once", &caravan.UpdateStrategy{MaxParallel: 0}, "", 4},
		{"one at a time", &caravan.UpdateStrategy{MaxParallel: 1}, "", 1},
		{"no strategy means one at a time", nil, "", 1},
		{"two at a time", &caravan.UpdateStrategy{MaxParallel: 2}, "", 2},
		{"one in flight leaves room for one", &caravan.UpdateStrategy{MaxParallel: 2}, caravan.AllocClientPending, 1},
		{"a running replacement is done", &caravan.UpdateStrategy{MaxParallel: 2}, caravan.AllocClientRunning, 2},
		{"full: wait for the one in flight", &caravan.UpdateStrategy{MaxParallel: 1}, caravan.AllocClientPending, 0},
		{"more room than old allocations", &caravan.UpdateStrategy{MaxParallel: 10}, caravan.AllocClientRunning, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFakeState()
			s.addNodes(testNode("n1"), testNode("n2"))
			v0 := testJob("api", caravan.JobTypeService, 4)
			v1 := newVersion(v0, changedCommand)
			v1.Update = tt.update
			s.addJob(v1)
			for i := range 4 {
				a := testAlloc(fmt.Sprintf("a%d", i), v0, "n1", i)
				if i == 0 && tt.firstStatus != "" {
					a.Job, a.JobVersion, a.ClientStatus = v1, v1.Version, tt.firstStatus
				}
				s.addAlloc(a)
			}
			res, err := Compute(s, testEval(v1, caravan.TriggerAllocUpdate), Options{Seed: 1, NewID: seqIDs()})
			if err != nil {
				t.Fatal(err)
			}
			stops := planStops(res.Plan)
			placed := newAllocs(s, res.Plan)
			if len(stops) != tt.want || len(placed) != tt.want {
				t.Fatalf("got %d stops and %d placements, want %d each", len(stops), len(placed), tt.want)
			}
			for _, a := range placed {
				if a.JobVersion != v1.Version || a.PreviousAllocation == "" {
					t.Errorf("replacement %s: version %d, previous %q", a.ID, a.JobVersion, a.PreviousAllocation)
				}
			}
		})
	}
}

// TestRollingUpdateRunsToCompletion drives an update evaluation by
// evaluation, with the agent starting each placement before the next one:
// never more than max_parallel replacements are in flight, and every copy
// ends on the new version.
func TestRollingUpdateRunsToCompletion(t *testing.T) {
	s := newFakeState()
	s.addNodes(testNode("n1"), testNode("n2"), testNode("n3"))
	v0 := testJob("api", caravan.JobTypeService, 5)
	for i := range 5 {
		s.addAlloc(testAlloc(fmt.Sprintf("a%d", i), v0, fmt.Sprintf("n%d", i%3+1), i))
	}
	v1 := newVersion(v0, changedCommand)
	v1.Update = &caravan.UpdateStrategy{MaxParallel: 2}
	s.addJob(v1)
	ids := seqIDs()
	rounds := 0
	for ; rounds < 10; rounds++ {
		res, err := Compute(s, testEval(v1, caravan.TriggerAllocUpdate), Options{Seed: int64(rounds), NewID: ids})
		if err != nil {
			t.Fatal(err)
		}
		if res.Plan.IsNoOp() {
			break
		}
		if n := len(newAllocs(s, res.Plan)); n > 2 {
			t.Fatalf("round %d placed %d replacements, max_parallel is 2", rounds, n)
		}
		s.apply(res.Plan)
		for _, a := range s.allocs["api"] { // the agent starts them
			if a.ClientStatus == caravan.AllocClientPending {
				c := a.ShallowCopy()
				c.ClientStatus = caravan.AllocClientRunning
				s.replaceAlloc(c)
			}
		}
	}
	live := map[int]uint64{}
	for _, a := range s.allocs["api"] {
		if !a.Terminal() {
			if _, dup := live[a.Index]; dup {
				t.Errorf("index %d has two live allocations", a.Index)
			}
			live[a.Index] = a.JobVersion
		}
	}
	want := map[int]uint64{0: 1, 1: 1, 2: 1, 3: 1, 4: 1}
	if diff := cmp.Diff(want, live); diff != "" {
		t.Errorf("live versions by index after %d rounds (-want +got):\n%s", rounds, diff)
	}
	if rounds != 3 {
		t.Errorf("took %d rounds, want 3 (2+2+1)", rounds)
	}
}

func TestSpecComparison(t *testing.T) {
	base := testJob("api", caravan.JobTypeService, 2)
	tests := []struct {
		name    string
		mut     func(*caravan.Job)
		inPlace bool
	}{
		{"count", func(j *caravan.Job) { j.TaskGroups[0].Count = ptr(9) }, true},
		{"priority", func(j *caravan.Job) { j.Priority = 90 }, true},
		{"spreads", func(j *caravan.Job) { j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}"}} }, true},
		{"algorithm", func(j *caravan.Job) { j.Algorithm = caravan.AlgorithmSpread }, true},
		{"command", changedCommand, false},
		{"memory", func(j *caravan.Job) { j.TaskGroups[0].Tasks[0].Resources.Memory = 999 }, false},
		{"env", func(j *caravan.Job) { j.TaskGroups[0].Tasks[0].Env = map[string]string{"A": "b"} }, false},
		{"group meta", func(j *caravan.Job) { j.TaskGroups[0].Meta = map[string]string{"A": "b"} }, false},
		{"job meta", func(j *caravan.Job) { j.Meta = map[string]string{"A": "b"} }, false},
		{"datacenters", func(j *caravan.Job) { j.Datacenters = []string{"dc9"} }, false},
		{"pool", func(j *caravan.Job) { j.NodePool = "gpu" }, false},
		{"job constraint", func(j *caravan.Job) { j.Constraints = []caravan.Constraint{{Attribute: "a", Value: "b"}} }, false},
		{"group renamed", func(j *caravan.Job) { j.TaskGroups[0].Name = "other" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newVersion(base, tt.mut)
			if got := groupSpecEqual(base, n, n.TaskGroups[0]); got != tt.inPlace {
				t.Errorf("groupSpecEqual = %v, want %v", got, tt.inPlace)
			}
		})
	}
}
