package testcluster

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/caravan-sched/caravan/internal/state"
	"github.com/prometheus/client_golang/prometheus"
)

type configConfig = config.Config

// placementCounter counts the allocations the leader's state store
// creates, from its event stream: no polling of the state, and the time of
// the commit that completes the count is known to the event.
type placementCounter struct {
	sub *events.Subscription
	n   int
}

func countPlacements(b *testing.B, broker *events.Broker) *placementCounter {
	b.Helper()
	sub, err := broker.Subscribe(events.SubscribeRequest{
		Filter:     events.Filter{events.TopicAllocation: nil},
		BufferSize: 1 << 24,
	})
	if err != nil {
		b.Fatalf("subscribe to events: %v", err)
	}
	b.Cleanup(sub.Close)
	return &placementCounter{sub: sub}
}

// wait returns once want allocations were created, or fails the benchmark
// after timeout.
func (c *placementCounter) wait(b *testing.B, want int, timeout time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for c.n < want {
		evs, err := c.sub.Next(ctx)
		if err != nil {
			b.Fatalf("only %d of %d placed: %v", c.n, want, err)
		}
		for i := range evs {
			if evs[i].Type == events.AllocationCreated {
				c.n++
			}
		}
	}
}

// cpuTime returns the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// profileTimed writes a CPU profile of the timed part of a benchmark to
// the file CARAVAN_BENCH_CPUPROFILE names (with the sub-benchmark's name
// appended), and heap profiles at its start and end to the files
// CARAVAN_BENCH_MEMPROFILE names (with .start and .end appended: compare
// them with pprof -base), when set. It returns the function that stops
// them.
func profileTimed(b *testing.B) func() {
	stop := func() {}
	if path := os.Getenv("CARAVAN_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path + "." + sanitize(b.Name()))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		stop = func() {
			pprof.StopCPUProfile()
			f.Close()
		}
	}
	if path := os.Getenv("CARAVAN_BENCH_MEMPROFILE"); path != "" {
		path += "." + sanitize(b.Name())
		writeHeapProfile(b, path+".start")
		stopCPU := stop
		stop = func() {
			stopCPU()
			writeHeapProfile(b, path+".end")
		}
	}
	return stop
}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

func sanitize(name string) string {
	out := []byte(name)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			out[i] = '_'
		}
	}
	return string(out)
}

// reportQuality reports how well placements packed (binpack: nodes used) or
// spread (largest minus smallest allocation count per rack).
func reportQuality(b *testing.B, snap *state.Snapshot, algo string) {
	nodes, err := snap.Nodes()
	if err != nil {
		return
	}
	used := 0
	perRack := map[string]int{}
	for _, n := range nodes {
		u, _ := snap.NodeUsage(n.ID)
		if u.Allocs > 0 {
			used++
		}
		perRack[n.Meta["rack"]] += u.Allocs
	}
	if algo == caravan.AlgorithmBinpack {
		b.ReportMetric(float64(used), "nodes-used")
		return
	}
	lo, hi := -1, 0
	for _, c := range perRack {
		if lo < 0 || c < lo {
			lo = c
		}
		hi = max(hi, c)
	}
	b.ReportMetric(float64(hi-lo), "rack-max-min")
}

// printServerStats prints, when CARAVAN_BENCH_STATS is set, what the
// leader's metrics say about the run: Raft applies by command (count and
// mean time to commit and apply), plan batches, evaluations, rejections.
func printServerStats(b *testing.B, reg *prometheus.Registry) {
	if os.Getenv("CARAVAN_BENCH_STATS") == "" {
		return
	}
	mfs, err := reg.Gather()
	if err != nil {
		b.Logf("gather metrics: %v", err)
		return
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "caravan_raft_apply_seconds":
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				fmt.Printf("  raft apply %s: %d, mean %.2fms\n", m.GetLabel()[0].GetValue(), h.GetSampleCount(),
					1000*h.GetSampleSum()/float64(max(h.GetSampleCount(), 1)))
			}
		case "caravan_plan_batch_size":
			for _, m := range mf.GetMetric() {
				h := m.GetHistogram()
				fmt.Printf("  plan batches: %d, mean %.1f plans\n", h.GetSampleCount(), h.GetSampleSum()/float64(max(h.GetSampleCount(), 1)))
			}
		case "caravan_evaluations_processed_total", "caravan_plan_node_rejections_total":
			for _, m := range mf.GetMetric() {
				fmt.Printf("  %s%v: %v\n", mf.GetName(), m.GetLabel(), m.GetCounter().GetValue())
			}
		}
	}
}
