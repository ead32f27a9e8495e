package state

import (
	"fmt"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/scheduler"
)

// benchStore holds nodes like the API placement benchmark's: 16 GHz,
// 32 GB, 8 cores, in 25 racks (meta.rack).
func benchStore(b *testing.B, nodes int) (*Store, uint64) {
	b.Helper()
	s := newStore(b)
	var index uint64
	for i := range nodes {
		n := testNode(i)
		n.Resources = caravan.NodeResources{CPU: 16000, Memory: 32768, Cores: []int{0, 1, 2, 3, 4, 5, 6, 7}}
		n.Meta = map[string]string{"rack": fmt.Sprintf("r%02d", i%25)}
		n.Attributes = map[string]string{"os": "linux", "arch": "amd64"}
		n.Drivers = map[string]caravan.DriverInfo{"exec": {Detected: true, Healthy: true}}
		index++
		if err := s.RegisterNode(index, t0, n, nil); err != nil {
			b.Fatal(err)
		}
	}
	return s, index
}

func benchJob(id string, count int, spread bool) *caravan.Job {
	j := testJob(id, caravan.JobTypeService, count)
	j.TaskGroups[0].Tasks[0].Resources = caravan.Resources{CPU: 100, Memory: 128}
	if spread {
		j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 100}}
	}
	j.Canonicalize()
	return j
}

// BenchmarkComputeOnSnapshot runs the scheduler on the store's snapshots
// (the state reads the cluster's scheduler workers make): one job of
// 10,000 in one evaluation, or jobs of one placement each, every plan
// committed before the next evaluation. The time counted is Compute's.
func BenchmarkComputeOnSnapshot(b *testing.B) {
	for _, nodes := range []int{1000, 10000} {
		for _, spread := range []bool{false, true} {
			for _, many := range []bool{false, true} {
				name := fmt.Sprintf("nodes=%d/spread=%v/many=%v", nodes, spread, many)
				b.Run(name, func(b *testing.B) { benchCompute(b, nodes, spread, many) })
			}
		}
	}
}

func benchCompute(b *testing.B, nodes int, spread, many bool) {
	var compute time.Duration
	placed := 0
	for range b.N {
		b.StopTimer()
		s, index := benchStore(b, nodes)
		jobs, count := 1, 10_000
		if many {
			jobs, count = 2_000, 1
		}
		for j := range jobs {
			index++
			if _, err := s.RegisterJob(index, t0, benchJob(fmt.Sprintf("job-%05d", j), count, spread), nil, false); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for j := range jobs {
			eval := &caravan.Evaluation{ID: caravan.NewID(), JobID: fmt.Sprintf("job-%05d", j), Type: caravan.JobTypeService,
				Priority: 50, TriggeredBy: caravan.TriggerJobRegister, Status: caravan.EvalStatusPending}
			start := time.Now()
			res, err := scheduler.Compute(s.Snapshot(), eval, scheduler.Options{Now: t0, Seed: int64(j)})
			compute += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			placed += res.Placed
			b.StopTimer()
			update := PlanUpdate{EvalID: eval.ID, JobID: eval.JobID}
			for _, allocs := range res.Plan.NodeAllocation {
				update.Allocs = append(update.Allocs, allocs...)
			}
			index++
			if err := s.ApplyPlans(index, t0, []PlanUpdate{update}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	}
	b.ReportMetric(float64(placed)/compute.Seconds(), "placements/s")
}
