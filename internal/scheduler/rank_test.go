package scheduler

import (
	"fmt"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// fill adds an allocation of another job holding cpu and mem on node.
func fill(s *fakeState, node string, cpu int, mem caravan.MemoryMB) {
	id := fmt.Sprintf("fill-%s-%d", node, len(s.byID))
	s.addAlloc(&caravan.Allocation{
		ID: id, JobID: "other", TaskGroup: "x", NodeID: node,
		Resources:     caravan.AllocatedResources{CPU: cpu, Memory: mem},
		DesiredStatus: caravan.AllocDesiredRun, ClientStatus: caravan.AllocClientRunning,
	})
}

func TestRanking(t *testing.T) {
	type load struct {
		cpu int
		mem caravan.MemoryMB
	}
	tests := []struct {
		name        string
		algorithm   string // job's
		defaultAlgo string // options'
		jobType     string
		loads       map[string]load // per node n1..n4
		mine        []string        // nodes holding an allocation of the job already
		count       int
		want        []string // nodes of the new allocations, in index order
	}{
		{
			name:  "binpack picks the fullest node",
			loads: map[string]load{"n2": {2000, 4096}, "n3": {3000, 6144}},
			want:  []string{"n3"},
		},
		{
			name:  "binpack skips the fullest node when it does not fit",
			loads: map[string]load{"n2": {2000, 4096}, "n3": {3800, 6144}},
			want:  []string{"n2"},
		},
		{
			name:      "spread picks the emptiest node",
			algorithm: caravan.AlgorithmSpread,
			loads:     map[string]load{"n1": {1000, 1024}, "n2": {2000, 4096}, "n4": {500, 512}},
			want:      []string{"n3"},
		},
		{
			name:        "the options' default algorithm applies",
			defaultAlgo: caravan.AlgorithmSpread,
			loads:       map[string]load{"n1": {1000, 1024}, "n2": {2000, 4096}, "n4": {500, 512}},
			want:        []string{"n3"},
		},
		{
			name:        "the job's algorithm wins over the default",
			algorithm:   caravan.AlgorithmBinpack,
			defaultAlgo: caravan.AlgorithmSpread,
			loads:       map[string]load{"n1": {1000, 1024}, "n2": {2000, 4096}},
			want:        []string{"n2"},
		},
		{
			name:      "first-fit takes the first node in id order that fits",
			algorithm: caravan.AlgorithmFirstFit,
			loads:     map[string]load{"n1": {3800, 0}, "n3": {3000, 6000}},
			want:      []string{"n2"},
		},
		{
			name:      "most-free-memory ignores cpu",
			algorithm: caravan.AlgorithmMostFreeMemory,
			loads:     map[string]load{"n1": {0, 4096}, "n2": {3000, 0}, "n3": {0, 2048}, "n4": {0, 1024}},
			want:      []string{"n2"},
		},
		{
			name:  "service anti-affinity avoids nodes with the same group",
			loads: map[string]load{"n3": {3000, 6144}, "n1": {100, 128}},
			mine:  []string{"n3"},
			count: 2,
			want:  []string{"n1"},
		},
		{
			name:    "batch jobs pack without anti-affinity",
			jobType: caravan.JobTypeBatch,
			loads:   map[string]load{"n3": {3000, 6144}},
			mine:    []string{"n3"},
			count:   2,
			want:    []string{"n3"},
		},
		{
			name:  "binpack fills the node it placed on before opening another",
			loads: map[string]load{"n2": {100, 128}},
			count: 7,
			want:  []string{"n2", "n2", "n2", "n2", "n2", "n2", "n2"},
		},
	}
	for _, tt := range tests {
		for seed := int64(1); seed <= 5; seed++ {
			t.Run(fmt.Sprintf("%s/seed%d", tt.name, seed), func(t *testing.T) {
				s := newFakeState()
				for _, id := range []string{"n1", "n2", "n3", "n4"} {
					s.addNodes(testNode(id))
					if l, ok := tt.loads[id]; ok {
						fill(s, id, l.cpu, l.mem)
					}
				}
				count := max(tt.count, 1)
				jobType := tt.jobType
				if jobType == "" {
					jobType = caravan.JobTypeService
				}
				j := testJob("api", jobType, count)
				if tt.name == "binpack fills the node it placed on before opening another" {
					j.Type = caravan.JobTypeBatch
				}
				j.Algorithm = tt.algorithm
				s.addJob(j)
				for i, node := range tt.mine {
					s.addAlloc(testAlloc(fmt.Sprintf("mine-%d", i), j, node, i))
				}
				res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{
					Seed: seed, NewID: seqIDs(), CandidateLimit: 4, DefaultAlgorithm: tt.defaultAlgo,
				})
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, a := range byIndex(newAllocs(s, res.Plan)) {
					got = append(got, a.NodeID)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("nodes (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// byIndex orders allocations by index.
func byIndex(allocs []*caravan.Allocation) []*caravan.Allocation {
	out := make([]*caravan.Allocation, 0, len(allocs))
	for i := 0; len(out) < len(allocs) && i < 1_000_000; i++ {
		for _, a := range allocs {
			if a.Index == i {
				out = append(out, a)
			}
		}
	}
	return out
}

func TestCandidateLimit(t *testing.T) {
	tests := []struct{ opt, nodes, want int }{
		{0, 0, 2}, {0, 1, 2}, {0, 3, 2}, {0, 4, 2}, {0, 5, 3}, {0, 1000, 10}, {0, 1024, 10},
		{0, 1025, 11}, {0, 10000, 14}, {7, 10000, 7},
	}
	for _, tt := range tests {
		if got := candidateLimit(tt.opt, tt.nodes); got != tt.want {
			t.Errorf("candidateLimit(%d, %d) = %d, want %d", tt.opt, tt.nodes, got, tt.want)
		}
	}
}
