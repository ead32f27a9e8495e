package integration_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/agent"
	"github.com/caravan-sched/caravan/internal/testcluster"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// Sizes of the benchmarks; CARAVAN_BENCH_JOBS and CARAVAN_BENCH_STOPS
// override them.
const (
	benchJobs       = 1000
	benchStops      = 200
	benchSequential = 100
	// benchSubmitters submit (or stop) jobs in parallel, as many users
	// would.
	benchSubmitters = 8
)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// benchAgent starts one server and one agent with the real exec driver
// whose supervisor is the built caravan binary, and waits for the node.
func benchAgent(b *testing.B) (*api.Client, *agent.Agent) {
	b.Helper()
	cluster := testcluster.Start(b, testcluster.Options{})
	a := startAgentWith(b, cluster.Addrs(), agent.Config{
		SupervisorCommand: []string{testenv.CaravanBinary(b), "supervise"},
	})
	c := cluster.Client()
	testcluster.WaitFor(b, 30*time.Second, "the node ready", func() bool {
		n, _, err := c.Node(context.Background(), a.NodeID(), nil)
		return err == nil && n.Status == caravan.NodeStatusReady && n.Drivers["exec"].Healthy
	})
	return c, a
}

// benchJob is a job of one small exec task: small enough that a thousand
// fit on one node at once, so that no job waits for capacity.
func benchJob(id, typ, command string, args ...string) *caravan.Job {
	one := 1
	return &caravan.Job{ID: id, Type: typ, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Count: &one,
		Tasks: []*caravan.Task{{Name: "t", Driver: caravan.DriverExec,
			Config:      caravan.TaskConfig{Command: command, Args: args},
			Resources:   caravan.Resources{CPU: 4, Memory: 16},
			KillTimeout: caravan.Duration(5 * time.Second)}},
	}}}
}

// parallel runs fn for every index in [0, n) on benchSubmitters goroutines.
func parallel(b *testing.B, n int, fn func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, benchSubmitters)
	next := make(chan int)
	for range benchSubmitters {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	go func() {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case err := <-errs:
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// nodeAllocs returns the node's allocations by job id, once every one of
// the jobs has one in a client status that done accepts.
func nodeAllocs(b *testing.B, c *api.Client, nodeID string, jobs int, timeout time.Duration, done func(*caravan.Allocation) bool) map[string]*caravan.Allocation {
	b.Helper()
	var byJob map[string]*caravan.Allocation
	testcluster.WaitFor(b, timeout, fmt.Sprintf("%d jobs' allocations", jobs), func() bool {
		allocs, _, err := c.Allocations(context.Background(), &api.QueryOptions{Params: map[string]string{"node_id": nodeID}})
		if err != nil {
			return false
		}
		byJob = map[string]*caravan.Allocation{}
		for _, al := range allocs {
			if done(al) {
				byJob[al.JobID] = al
			}
		}
		return len(byJob) >= jobs
	})
	return byJob
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func reportLatency(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(ms(percentile(ds, 50)), name+"-p50-ms")
	b.ReportMetric(ms(percentile(ds, 99)), name+"-p99-ms")
	b.Logf("%s: n %d, p50 %v, p90 %v, p99 %v, max %v", name, len(ds),
		percentile(ds, 50), percentile(ds, 90), percentile(ds, 99), percentile(ds, 100))
}

func taskEvents(ts *caravan.TaskState) string {
	if ts == nil {
		return "none"
	}
	var out []string
	for _, e := range ts.Events {
		out = append(out, e.Type+": "+e.Message)
	}
	return strings.Join(out, "; ")
}

// loadAverage reads the 1-minute load average, for the log.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return string(b[:len(b)-1])
}

// BenchmarkBatchJobs submits CARAVAN_BENCH_JOBS (1,000) batch jobs of
// /bin/true at once from 8 clients to one server and one real agent on this
// machine, and waits for all to complete. It reports the total time (first
// submit to the server's record of the last completion), and submit →
// running: from the client's submit call to the task's start as the agent
// records it. Compare with BenchmarkForkExecLoop, the same number of
// /bin/true processes without caravan.
//
//	go test -run '^$' -bench BenchmarkBatchJobs -benchtime 1x ./internal/agent/integration/
func BenchmarkBatchJobs(b *testing.B) {
	n := envInt("CARAVAN_BENCH_JOBS", benchJobs)
	c, a := benchAgent(b)
	ctx := context.Background()
	round := 0
	for b.Loop() {
		round++
		submitted := make([]time.Time, n)
		b.Logf("load average before: %s", loadAverage())
		start := time.Now()
		parallel(b, n, func(i int) error {
			submitted[i] = time.Now()
			_, err := c.RegisterJob(ctx, benchJob(fmt.Sprintf("true-%d-%d", round, i), caravan.JobTypeBatch, "/bin/true"))
			return err
		})
		submitTook := time.Since(start)
		byJob := nodeAllocs(b, c, a.NodeID(), n*round, 10*time.Minute, func(al *caravan.Allocation) bool { return al.ClientTerminal() })
		var toRunning, placedToRunning []time.Duration
		var last time.Time
		failed := 0
		for i := range n {
			al := byJob[fmt.Sprintf("true-%d-%d", round, i)]
			if al == nil {
				b.Fatalf("job %d has no finished allocation", i)
			}
			if al.ClientStatus != caravan.AllocClientComplete {
				if failed++; failed <= 3 {
					b.Logf("job %d: %s: %s; task %s", i, al.ClientStatus, al.ClientDescription, taskEvents(al.TaskStates["t"]))
				}
			}
			if ts := al.TaskStates["t"]; ts != nil && !ts.StartedAt.IsZero() {
				toRunning = append(toRunning, ts.StartedAt.Sub(submitted[i]))
				placedToRunning = append(placedToRunning, ts.StartedAt.Sub(al.CreateTime))
			}
			if al.ModifyTime.After(last) {
				last = al.ModifyTime
			}
		}
		if failed > 0 {
			b.Errorf("%d of %d allocations did not complete", failed, n)
		}
		total := last.Sub(start)
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(submitTook.Seconds(), "submit-s")
		reportLatency(b, "submit-running", toRunning)
		reportLatency(b, "placed-running", placedToRunning)
		b.Logf("%d jobs: submitted in %v, all complete after %v; load average after: %s", n, submitTook, total, loadAverage())
	}
}

// BenchmarkSequentialJobs submits CARAVAN_BENCH_SEQUENTIAL (100) batch jobs
// of /bin/true one at a time, each once the previous one completed: submit
// → running on an idle node.
func BenchmarkSequentialJobs(b *testing.B) {
	n := envInt("CARAVAN_BENCH_SEQUENTIAL", benchSequential)
	c, a := benchAgent(b)
	ctx := context.Background()
	round := 0
	for b.Loop() {
		round++
		var toRunning, toPlaced, placedToRunning []time.Duration
		for i := range n {
			id := fmt.Sprintf("seq-%d-%d", round, i)
			submitted := time.Now()
			if _, err := c.RegisterJob(ctx, benchJob(id, caravan.JobTypeBatch, "/bin/true")); err != nil {
				b.Fatal(err)
			}
			var al *caravan.Allocation
			testcluster.WaitFor(b, time.Minute, id+" complete", func() bool {
				allocs, _, err := c.JobAllocations(ctx, id, nil)
				if err != nil || len(allocs) == 0 || !allocs[0].ClientTerminal() {
					time.Sleep(5 * time.Millisecond)
					return false
				}
				al = allocs[0]
				return true
			})
			if ts := al.TaskStates["t"]; ts != nil && !ts.StartedAt.IsZero() {
				toRunning = append(toRunning, ts.StartedAt.Sub(submitted))
				toPlaced = append(toPlaced, al.CreateTime.Sub(submitted))
				placedToRunning = append(placedToRunning, ts.StartedAt.Sub(al.CreateTime))
			}
		}
		_ = a
		reportLatency(b, "submit-running", toRunning)
		// The servers' part (the allocation written) and the agent's.
		reportLatency(b, "submit-placed", toPlaced)
		reportLatency(b, "placed-running", placedToRunning)
		b.Logf("load average: %s", loadAverage())
	}
}

// BenchmarkStopJobs starts CARAVAN_BENCH_STOPS (200) service jobs of
// `sleep 3600`, waits until all run, then stops them all at once from 8
// clients. It reports stop → process gone: from the client's stop call to
// the end of the task's process as its supervisor records it.
func BenchmarkStopJobs(b *testing.B) {
	n := envInt("CARAVAN_BENCH_STOPS", benchStops)
	c, a := benchAgent(b)
	ctx := context.Background()
	round := 0
	for b.Loop() {
		round++
		id := func(i int) string { return fmt.Sprintf("sleep-%d-%d", round, i) }
		parallel(b, n, func(i int) error {
			_, err := c.RegisterJob(ctx, benchJob(id(i), caravan.JobTypeService, "sleep", "3600"))
			return err
		})
		nodeAllocs(b, c, a.NodeID(), n, 10*time.Minute, func(al *caravan.Allocation) bool {
			return al.ClientStatus == caravan.AllocClientRunning && strings.HasPrefix(al.JobID, "sleep-")
		})
		b.Logf("load average before: %s", loadAverage())
		stopped := make([]time.Time, n)
		parallel(b, n, func(i int) error {
			stopped[i] = time.Now()
			_, err := c.StopJob(ctx, id(i), false)
			return err
		})
		byJob := nodeAllocs(b, c, a.NodeID(), n*round, 5*time.Minute, func(al *caravan.Allocation) bool {
			return al.ClientTerminal() && strings.HasPrefix(al.JobID, "sleep-")
		})
		var toGone []time.Duration
		for i := range n {
			al := byJob[id(i)]
			if al == nil {
				b.Fatalf("job %s has no finished allocation", id(i))
			}
			if ts := al.TaskStates["t"]; ts != nil && !ts.FinishedAt.IsZero() {
				toGone = append(toGone, ts.FinishedAt.Sub(stopped[i]))
			}
		}
		reportLatency(b, "stop-gone", toGone)
		b.Logf("load average after: %s", loadAverage())
	}
}

// BenchmarkForkExecLoop is the physical limit beside BenchmarkBatchJobs: a
// plain loop that fork-execs /bin/true CARAVAN_BENCH_JOBS (1,000) times
// and waits for each.
func BenchmarkForkExecLoop(b *testing.B) {
	n := envInt("CARAVAN_BENCH_JOBS", benchJobs)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}}
	for b.Loop() {
		start := time.Now()
		for range n {
			pid, err := syscall.ForkExec("/bin/true", []string{"true"}, attr)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := syscall.Wait4(pid, nil, 0, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(time.Since(start).Seconds(), "total-s")
	}
	b.Logf("load average: %s", loadAverage())
}
