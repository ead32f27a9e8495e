package scheduler

import (
	"fmt"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// rackCluster has nodes in racks r0..r(racks-1) (meta.rack), perRack each,
// plus bare nodes without a rack.
func rackCluster(racks, perRack, bare int) *fakeState {
	s := newFakeState()
	var nodes []*caravan.Node
	for r := range racks {
		for i := range perRack {
			n := testNode(fmt.Sprintf("n-r%d-%02d", r, i))
			n.Meta = map[string]string{"rack": fmt.Sprintf("r%d", r)}
			nodes = append(nodes, n)
		}
	}
	for i := range bare {
		nodes = append(nodes, testNode(fmt.Sprintf("n-bare-%02d", i)))
	}
	s.addNodes(nodes...)
	return s
}

// countPerRack counts the job's live allocations per rack ("-" for none).
func countPerRack(s *fakeState, jobID string) map[string]int {
	out := map[string]int{}
	for _, a := range s.allocs[jobID] {
		if a.Terminal() {
			continue
		}
		rack := s.nodeByID[a.NodeID].Meta["rack"]
		if rack == "" {
			rack = "-"
		}
		out[rack]++
	}
	return out
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name      string
		count     int
		algorithm string
		existing  map[string]int // allocations already in a rack (on its first node)
		want      map[string]int
	}{
		{"even over racks", 40, "", nil, map[string]int{"r0": 10, "r1": 10, "r2": 10, "r3": 10}},
		{"uneven count differs by one at most", 42, "", nil, map[string]int{"r0": 11, "r1": 11, "r2": 10, "r3": 10}},
		{"existing skew is evened out first", 12, "", map[string]int{"r0": 6}, map[string]int{"r0": 6, "r1": 4, "r2": 4, "r3": 4}},
		{"with the spread algorithm", 20, caravan.AlgorithmSpread, nil, map[string]int{"r0": 5, "r1": 5, "r2": 5, "r3": 5}},
		{"with first-fit", 8, caravan.AlgorithmFirstFit, nil, map[string]int{"r0": 2, "r1": 2, "r2": 2, "r3": 2}},
		{"with most-free-memory", 8, caravan.AlgorithmMostFreeMemory, nil, map[string]int{"r0": 2, "r1": 2, "r2": 2, "r3": 2}},
		{"full racks overflow to nodes without a rack", 4*2*8 + 3, "", nil, map[string]int{"r0": 16, "r1": 16, "r2": 16, "r3": 16, "-": 3}},
	}
	for _, tt := range tests {
		for seed := int64(1); seed <= 3; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", tt.name, seed), func(t *testing.T) {
				s := rackCluster(4, 2, 2) // a node holds 8 copies (cpu)
				j := testJob("api", caravan.JobTypeService, tt.count)
				j.Algorithm = tt.algorithm
				j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 100}}
				s.addJob(j)
				index := tt.count
				for _, rack := range sortedKeys(tt.existing) {
					for range tt.existing[rack] {
						s.addAlloc(testAlloc(fmt.Sprintf("old-%d", index), j, fmt.Sprintf("n-%s-00", rack), index))
						index++
					}
				}
				j.TaskGroups[0].Count = ptr(index)
				res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Seed: seed, NewID: seqIDs()})
				if err != nil {
					t.Fatal(err)
				}
				s.apply(res.Plan)
				got := countPerRack(s, "api")
				if tt.name == "uneven count differs by one at most" {
					lo, hi := tt.count, 0
					for _, n := range got {
						lo, hi = min(lo, n), max(hi, n)
					}
					if hi-lo > 1 || len(got) != 4 {
						t.Errorf("per rack %v", got)
					}
					return
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("allocations per rack (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestSecondarySpreadLowersScores(t *testing.T) {
	s := rackCluster(2, 1, 0)
	for _, n := range s.nodes {
		n.Meta["zone"] = "z-" + n.Meta["rack"]
	}
	j := testJob("api", caravan.JobTypeBatch, 2)
	j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 80}, {Attribute: "${meta.zone}", Weight: 20}}
	s.addJob(j)
	res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Seed: 1, NewID: seqIDs()})
	if err != nil {
		t.Fatal(err)
	}
	s.apply(res.Plan)
	if got := countPerRack(s, "api"); got["r0"] != 1 || got["r1"] != 1 {
		t.Errorf("per rack %v, want one each", got)
	}
}

// countingState counts the node usage reads: one per node looked at for
// capacity.
type countingState struct {
	*fakeState
	usageReads int
}

func (c *countingState) NodeUsage(id string) (caravan.NodeUsage, error) {
	c.usageReads++
	return c.fakeState.NodeUsage(id)
}

// TestPlacementDoesNotScanTheCluster checks the scale rule: one placement
// looks at a few candidates, not every node; only a failure scans all.
func TestPlacementDoesNotScanTheCluster(t *testing.T) {
	tests := []struct {
		name     string
		spread   bool
		count    int
		maxReads int
	}{
		{"one allocation", false, 1, 2 * 14},
		{"one allocation with spread", true, 1, 2 * 14},
		{"a hundred allocations", false, 100, 100 * 2 * 15},
		{"a hundred allocations with spread", true, 100, 100 * 2 * 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &countingState{fakeState: rackCluster(25, 400, 0)} // 10,000 nodes
			j := testJob("api", caravan.JobTypeService, tt.count)
			if tt.spread {
				j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 100}}
			}
			s.addJob(j)
			res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Seed: 3, NewID: seqIDs()})
			if err != nil || res.Placed != tt.count {
				t.Fatalf("placed %d: %v", res.Placed, err)
			}
			if s.usageReads > tt.maxReads {
				t.Errorf("read the usage of %d nodes for %d placements, want at most %d", s.usageReads, tt.count, tt.maxReads)
			}
		})
	}
}
