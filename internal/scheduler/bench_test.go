package scheduler

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
)

// Benchmark clusters: nodes of 8 cores × 1000 MHz and 32 GB, in 25 racks
// (meta.rack); every allocation asks 500 MHz and 1 GB, so a node takes 16.
const (
	benchRacks       = 25
	benchPerNode     = 16
	benchPlacements  = 10_000
	benchAskCPU      = 500
	benchAskMemoryMB = 1024
)

func benchCluster(nodes int) *fakeState {
	s := newFakeState()
	list := make([]*caravan.Node, 0, nodes)
	for i := range nodes {
		n := testNode(fmt.Sprintf("node-%05d", i))
		n.Resources.CPU = 8000
		n.Resources.Memory = 32768
		n.Resources.Cores = []int{0, 1, 2, 3, 4, 5, 6, 7}
		n.Meta = map[string]string{"rack": fmt.Sprintf("r%02d", i%benchRacks)}
		list = append(list, n)
	}
	s.addNodes(list...)
	return s
}

func benchJob(id string, count int, spread bool) *caravan.Job {
	j := testJob(id, caravan.JobTypeService, count)
	j.TaskGroups[0].Tasks[0].Resources = caravan.Resources{CPU: benchAskCPU, Memory: benchAskMemoryMB}
	if spread {
		j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 100}}
	}
	return j
}

// BenchmarkPlace places 10,000 allocations, either as one job of count
// 10,000 (one evaluation) or as 10,000 jobs of count 1 (one evaluation
// each, against a state that holds the earlier placements), on 1,000 and
// 10,000 nodes, with binpack and with a spread over 25 racks.
//
// Reported: placements/s (time in Compute only), B/placement (all memory
// allocated, folding plans into the fake state included), and placement
// quality: binpack's nodes used over the minimum possible, spread's
// max − min allocations per rack.
func BenchmarkPlace(b *testing.B) {
	for _, nodes := range []int{1000, 10000} {
		for _, mode := range []string{"binpack", "spread-racks"} {
			for _, shape := range []string{"one-job", "many-jobs"} {
				name := fmt.Sprintf("nodes=%d/%s/%s", nodes, mode, shape)
				b.Run(name, func(b *testing.B) {
					benchPlace(b, nodes, mode == "spread-racks", shape == "many-jobs")
				})
			}
		}
	}
}

func benchPlace(b *testing.B, nodes int, spread, many bool) {
	var computeTime time.Duration
	var allocated uint64
	placed := 0
	var quality float64
	for range b.N {
		b.StopTimer()
		s := benchCluster(nodes)
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		b.StartTimer()
		var n int
		var d time.Duration
		if many {
			n, d = benchManyJobs(b, s, spread)
		} else {
			n, d = benchOneJob(b, s, spread)
		}
		b.StopTimer()
		runtime.ReadMemStats(&ms)
		allocated += ms.TotalAlloc - before
		placed += n
		computeTime += d
		quality = placementQuality(s, spread)
		b.StartTimer()
	}
	if placed != b.N*benchPlacements {
		b.Fatalf("placed %d of %d", placed, b.N*benchPlacements)
	}
	b.ReportMetric(float64(placed)/computeTime.Seconds(), "placements/s")
	b.ReportMetric(float64(allocated)/float64(placed), "B/placement")
	if spread {
		b.ReportMetric(quality, "rack-spread(max-min)")
	} else {
		b.ReportMetric(quality, "nodes-used/min")
	}
}

func benchOneJob(b *testing.B, s *fakeState, spread bool) (int, time.Duration) {
	j := benchJob("big", benchPlacements, spread)
	s.addJob(j)
	start := time.Now()
	res, err := Compute(s, testEval(j, caravan.TriggerJobRegister), Options{Seed: 1})
	d := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	s.apply(res.Plan)
	return res.Placed, d
}

func benchManyJobs(b *testing.B, s *fakeState, spread bool) (int, time.Duration) {
	placed := 0
	var d time.Duration
	for i := range benchPlacements {
		j := benchJob(fmt.Sprintf("job-%05d", i), 1, spread)
		s.addJob(j)
		eval := testEval(j, caravan.TriggerJobRegister)
		eval.ID = j.ID
		start := time.Now()
		res, err := Compute(s, eval, Options{Seed: int64(i)})
		d += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		s.apply(res.Plan)
		placed += res.Placed
	}
	return placed, d
}

// placementQuality is, for binpack, the nodes used over the fewest that
// could hold the allocations; for spread, max − min allocations per rack.
func placementQuality(s *fakeState, spread bool) float64 {
	perNode := map[string]int{}
	perRack := map[string]int{}
	total := 0
	for _, allocs := range s.allocs {
		for _, a := range allocs {
			perNode[a.NodeID]++
			perRack[s.nodeByID[a.NodeID].Meta["rack"]]++
			total++
		}
	}
	if !spread {
		minNodes := (total + benchPerNode - 1) / benchPerNode
		return float64(len(perNode)) / float64(max(minNodes, 1))
	}
	lo, hi := total, 0
	for r := range benchRacks {
		n := perRack[fmt.Sprintf("r%02d", r)]
		lo, hi = min(lo, n), max(hi, n)
	}
	return float64(hi - lo)
}

// BenchmarkComputeOneAlloc is one evaluation of a count-1 job against a
// cluster half full: the scheduler's cost per evaluation alone (the state
// does not change between iterations).
func BenchmarkComputeOneAlloc(b *testing.B) {
	for _, nodes := range []int{1000, 10000} {
		for _, spread := range []bool{false, true} {
			b.Run(fmt.Sprintf("nodes=%d/spread=%v", nodes, spread), func(b *testing.B) {
				s := benchCluster(nodes)
				for i := range nodes * benchPerNode / 2 {
					fill(s, s.nodes[i%nodes].ID, benchAskCPU, benchAskMemoryMB)
				}
				j := benchJob("one", 1, spread)
				s.addJob(j)
				eval := testEval(j, caravan.TriggerJobRegister)
				b.ReportAllocs()
				seed := int64(0)
				for b.Loop() {
					seed++
					res, err := Compute(s, eval, Options{Seed: seed})
					if err != nil || res.Placed != 1 {
						b.Fatalf("placed %v: %v", res, err)
					}
				}
			})
		}
	}
}

// BenchmarkSystemNodeJoin is the evaluation a system job gets when one node
// joins a cluster where every other node already runs it: the whole job is
// reconciled, one allocation placed.
func BenchmarkSystemNodeJoin(b *testing.B) {
	for _, nodes := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			s := benchCluster(nodes)
			j := testJob("logs", caravan.JobTypeSystem, 1)
			s.addJob(j)
			for i, n := range s.nodes[1:] {
				s.addAlloc(testAlloc(fmt.Sprintf("a%05d", i), j, n.ID, 0))
			}
			eval := testEval(j, caravan.TriggerNodeUpdate)
			eval.NodeID = s.nodes[0].ID
			b.ReportAllocs()
			for b.Loop() {
				res, err := Compute(s, eval, Options{})
				if err != nil || res.Placed != 1 {
					b.Fatalf("placed %v: %v", res, err)
				}
			}
		})
	}
}
