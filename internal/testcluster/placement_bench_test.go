package testcluster

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// BenchmarkAPIPlacement measures placements per second through the whole
// control plane: HTTP API, Raft, evaluation broker, scheduler workers, the
// batching plan applier and the FSM. Nodes register over the API and do not
// run anything (the agent is not under test). The clock runs from the first
// job submission until every allocation is committed in state.
//
//	go test -run '^$' -bench APIPlacement -benchtime 1x ./internal/testcluster
//
// placements/cpu-s counts the CPU time of the whole process (the API
// clients included): on a machine shared with other work it says what a
// placement costs, where placements/s also says how much CPU was free.
//
// CARAVAN_BENCH_CPUPROFILE=file writes a CPU profile of each timed part
// (file.<benchmark name>); CARAVAN_BENCH_MEMPROFILE=file heap profiles at
// its start and end; CARAVAN_BENCH_STATS=1 prints the leader's Raft and
// plan figures after each run; CARAVAN_BENCH_WORKERS=n runs n scheduler
// workers instead of the default.
func BenchmarkAPIPlacement(b *testing.B) {
	for _, nodes := range []int{1000, 10000} {
		for _, algo := range []string{caravan.AlgorithmBinpack, "spread-rack"} {
			for _, shape := range []struct {
				name       string
				jobs, each int
			}{{"1job-x10000", 1, 10000}, {"10000jobs-x1", 10000, 1}} {
				b.Run(fmt.Sprintf("nodes=%d/%s/%s", nodes, algo, shape.name), func(b *testing.B) {
					for i := 0; i < b.N; i++ {
						benchPlacement(b, nodes, algo, shape.jobs, shape.each)
					}
				})
			}
		}
	}
}

func benchPlacement(b *testing.B, nodes int, algo string, jobs, each int) {
	b.StopTimer()
	c := Start(b, Options{Configure: func(_ int, cfg *caravanConfig) {
		cfg.Server.GCInterval = "1h"
		// The nodes do not heartbeat: they must not expire (and lose their
		// allocations) during the run.
		cfg.Server.MinHeartbeatTTL = "1h"
		if n := os.Getenv("CARAVAN_BENCH_WORKERS"); n != "" {
			cfg.Server.NumSchedulers, _ = strconv.Atoi(n)
		}
	}})
	cl := c.Client()
	registerNodes(b, cl, nodes)
	specs := make([]*caravan.Job, jobs)
	for i := range specs {
		specs[i] = benchJob(fmt.Sprintf("bench-%05d", i), each, algo)
	}
	leader := c.Leader().Server()
	placed := countPlacements(b, leader.Events())
	want := jobs * each

	stopProfile := profileTimed(b)
	b.StartTimer()
	start, startCPU := time.Now(), cpuTime()
	submitAll(b, cl, specs)
	submitted := time.Since(start)
	placed.wait(b, want, 5*time.Minute)
	elapsed, cpu := time.Since(start), cpuTime()-startCPU
	b.StopTimer()
	stopProfile()
	b.ReportMetric(float64(want)/elapsed.Seconds(), "placements/s")
	b.ReportMetric(float64(want)/cpu.Seconds(), "placements/cpu-s")
	b.ReportMetric(submitted.Seconds(), "submit-s")
	b.ReportMetric(elapsed.Seconds(), "total-s")
	reportQuality(b, leader.State().Snapshot(), algo)
	printServerStats(b, leader.Metrics())
}

type caravanConfig = configConfig

func benchJob(id string, count int, algo string) *caravan.Job {
	j := &caravan.Job{
		ID: id, Type: caravan.JobTypeService,
		TaskGroups: []*caravan.TaskGroup{{
			Name: "g", Count: &count,
			Tasks: []*caravan.Task{{Name: "t", Config: caravan.TaskConfig{Command: "sleep 1000"}, Resources: caravan.Resources{CPU: 100, Memory: 128}}},
		}},
	}
	if algo == "spread-rack" {
		j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 100}}
	} else {
		j.Algorithm = algo
	}
	return j
}

// registerNodes registers n nodes in 25 racks over the API, 32 at a time.
func registerNodes(b *testing.B, cl *api.Client, n int) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				node := NewSimNode(fmt.Sprintf("bench-%05d", i), nil, map[string]string{"rack": fmt.Sprintf("r%02d", i%25)})
				node.Resources = caravan.NodeResources{CPU: 16000, Memory: 32768, Cores: []int{0, 1, 2, 3, 4, 5, 6, 7}}
				if _, err := cl.RegisterNode(context.Background(), node); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("register nodes: %v", err)
	}
}

// submitAll registers the jobs over the API, 64 at a time.
func submitAll(b *testing.B, cl *api.Client, jobs []*caravan.Job) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := 0; w < min(64, len(jobs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(jobs) {
					return
				}
				if _, err := cl.RegisterJob(context.Background(), jobs[i]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("submit: %v", err)
	}
}

// BenchmarkServerRestart measures how long a server that holds 100,000
// jobs, each with an allocation placed on one of 1,000 nodes, takes to
// restart from a Raft snapshot and a log tail of 2,000 more jobs: from
// server.New until it leads with every entry applied (restore-s: server.New
// alone, which restores the snapshot). The jobs are registered and placed
// through the server's own API, without HTTP, before the clock starts.
//
//	go test -run '^$' -bench ServerRestart -benchtime 1x ./internal/testcluster
func BenchmarkServerRestart(b *testing.B) {
	const jobs, tail = 100_000, 2_000
	c := Start(b, Options{Configure: func(_ int, cfg *caravanConfig) {
		cfg.Server.GCInterval = "1h"
		cfg.Server.MinHeartbeatTTL = "1h"
	}})
	m := c.Leader()
	registerNodes(b, c.Client(), 1000)
	placed := countPlacements(b, m.Server().Events())
	registerDirect(b, m, 0, jobs)
	placed.wait(b, jobs, 10*time.Minute)
	if err := m.Server().Snapshot(); err != nil {
		b.Fatal(err)
	}
	registerDirect(b, m, jobs, tail)
	placed.wait(b, jobs+tail, 5*time.Minute)
	last := m.Server().State().LatestIndex()

	var restore, total time.Duration
	stopProfile := profileTimed(b)
	defer stopProfile()
	for range b.N {
		m.Stop()
		runtime.GC()
		start := time.Now()
		if err := m.Start(); err != nil {
			b.Fatal(err)
		}
		restore += time.Since(start) // Start returns once Run listens, after New
		for {
			s := m.Server()
			if s.IsLeader() && s.State().LatestIndex() >= last {
				break
			}
			if time.Since(start) > 5*time.Minute {
				b.Fatalf("not caught up with index %d after 5 minutes", last)
			}
			time.Sleep(time.Millisecond)
		}
		total += time.Since(start)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "restart-s")
	b.ReportMetric(restore.Seconds()/float64(b.N), "restore-s")
	if _, err := m.Server().State().Snapshot().JobByID(fmt.Sprintf("bench-%06d", jobs+tail-1)); err != nil {
		b.Errorf("the last job of the log tail: %v", err)
	}
}

// registerDirect registers jobs first..first+n of one allocation each on
// the member's server, 64 at a time, without HTTP.
func registerDirect(b *testing.B, m *Member, first, n int) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				job := benchJob(fmt.Sprintf("bench-%06d", first+i), 1, caravan.AlgorithmBinpack)
				if _, err := m.Server().RegisterJob(context.Background(), job, false); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("register: %v", err)
	}
}
