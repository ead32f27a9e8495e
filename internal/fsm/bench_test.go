package fsm

import (
	"bytes"
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
)

// Benchmark sizes: 100,000 allocations of 1,000 jobs over 1,000 nodes,
// committed in plan entries of about 500 allocations.
const (
	benchNodes        = 1000
	benchJobs         = 1000
	benchAllocsPerJob = 100
	benchPlansPerEnt  = 5
)

// benchCluster registers the nodes and jobs of the benchmarks.
func benchCluster(b *testing.B, f *FSM, jobs int) uint64 {
	var index uint64
	for n := 0; n < benchNodes; n++ {
		index++
		mustApply(b, f, index, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(n)})
	}
	for j := 0; j < jobs; j++ {
		index++
		mustApply(b, f, index, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob(fmt.Sprintf("job-%d", j), benchAllocsPerJob)})
	}
	return index
}

// benchAlloc is a placement as the scheduler makes it.
func benchAlloc(job string, i, node int, evalID string) *caravan.Allocation {
	return &caravan.Allocation{
		ID: caravan.NewID(), EvalID: evalID, Name: caravan.AllocName(job, "web", i),
		JobID: job, TaskGroup: "web", Index: i,
		NodeID: uuid('a', node), NodeName: fmt.Sprintf("node-%d", node),
		Resources: caravan.AllocatedResources{CPU: 100, Memory: 64,
			Ports: []caravan.AllocatedPort{{Label: "http", Value: 20000 + i}}},
		DesiredStatus: caravan.AllocDesiredRun, ClientStatus: caravan.AllocClientPending,
	}
}

// planEntry encodes the plans of jobs [first, first+benchPlansPerEnt) as
// the plan applier does (PlanApplyCompact).
func planEntry(b *testing.B, first int) []byte {
	return planEntryOf(b, PlanApplyCompact, first)
}

// planEntryOf is planEntry in an entry of type mt.
func planEntryOf(b *testing.B, mt MessageType, first int) []byte {
	req := &PlanApplyRequest{Time: t0}
	for j := first; j < first+benchPlansPerEnt; j++ {
		job := fmt.Sprintf("job-%d", j)
		eval := testEval(j, job, caravan.EvalStatusComplete)
		p := state.PlanUpdate{EvalID: eval.ID, JobID: job, Evals: []*caravan.Evaluation{eval}}
		for i := 0; i < benchAllocsPerJob; i++ {
			p.Allocs = append(p.Allocs, benchAlloc(job, i, (j*benchAllocsPerJob+i)%benchNodes, eval.ID))
		}
		req.Plans = append(req.Plans, p)
	}
	return entry(b, mt, req)
}

// cpuTime returns the CPU time (user and system) the process has used. On
// a machine shared with other work it measures this process's own work,
// where wall time also counts waiting for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapAfterGC returns the heap in use (spans holding live objects, as the
// process holds it) and the bytes of live objects.
func heapAfterGC() (inuse, live uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.HeapAlloc
}

// BenchmarkHeapPerAllocation places 100,000 allocations through Apply and
// reports the heap they hold in state: HeapInuse after GC per allocation
// placed (B/alloc), and after every agent reported them running with a
// task state of two events (B/alloc-running); live-B/... count the live
// objects only (HeapAlloc), without the holes that copy-on-write garbage
// leaves in the heap's spans until new objects fill them.
func BenchmarkHeapPerAllocation(b *testing.B) {
	total := benchJobs * benchAllocsPerJob
	for range b.N {
		f, s := newFSM(b)
		index := benchCluster(b, f, benchJobs)
		base, baseLive := heapAfterGC()
		for j := 0; j < benchJobs; j += benchPlansPerEnt {
			index++
			if _, err := apply(f, index, planEntry(b, j)); err != nil {
				b.Fatal(err)
			}
		}
		placed, placedLive := heapAfterGC()
		for n := 0; n < benchNodes; n++ {
			index++
			if _, err := apply(f, index, runningEntry(b, s, n)); err != nil {
				b.Fatal(err)
			}
		}
		running, runningLive := heapAfterGC()
		b.ReportMetric(float64(placed-base)/float64(total), "B/alloc")
		b.ReportMetric(float64(placedLive-baseLive)/float64(total), "live-B/alloc")
		b.ReportMetric(float64(running-base)/float64(total), "B/alloc-running")
		b.ReportMetric(float64(runningLive-baseLive)/float64(total), "live-B/alloc-running")
		runtime.KeepAlive(s)
	}
}

// runningEntry reports every allocation of a node running, with the task
// state an agent sends: started, with two events.
func runningEntry(b *testing.B, s *state.Store, node int) []byte {
	allocs, err := s.Snapshot().AllocsByNode(uuid('a', node))
	if err != nil {
		b.Fatal(err)
	}
	req := &AllocClientUpdateRequest{Time: t0, NodeID: uuid('a', node)}
	for _, a := range allocs {
		req.Updates = append(req.Updates, &caravan.AllocClientUpdate{ID: a.ID, ClientStatus: caravan.AllocClientRunning,
			TaskStates: map[string]*caravan.TaskState{"server": {State: caravan.TaskStateRunning, StartedAt: t0,
				Events: []*caravan.TaskEvent{{Type: caravan.TaskEventReceived, Time: t0}, {Type: caravan.TaskEventStarted, Time: t0}}}}})
	}
	return entry(b, AllocClientUpdate, req)
}

// BenchmarkPlanApply measures placements committed per second through
// Apply, JSON decoding included, in entries of 500 allocations, of both
// types. The state starts again every 100,000 allocations.
func BenchmarkPlanApply(b *testing.B) {
	for _, mt := range []MessageType{PlanApply, PlanApplyCompact} {
		b.Run(mt.String(), func(b *testing.B) { benchPlanApply(b, mt) })
	}
}

func benchPlanApply(b *testing.B, mt MessageType) {
	entries := make([][]byte, 0, benchJobs/benchPlansPerEnt)
	for j := 0; j < benchJobs; j += benchPlansPerEnt {
		entries = append(entries, planEntryOf(b, mt, j))
	}
	var f *FSM
	var index uint64
	var cpu time.Duration
	next := len(entries)
	b.ResetTimer()
	for range b.N {
		if next == len(entries) {
			b.StopTimer()
			f, _ = newFSM(b)
			index, next = benchCluster(b, f, benchJobs), 0
			runtime.GC()
			b.StartTimer()
		}
		index++
		start := cpuTime()
		if _, err := apply(f, index, entries[next]); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - start
		next++
	}
	allocs := float64(b.N * benchPlansPerEnt * benchAllocsPerJob)
	b.ReportMetric(allocs/b.Elapsed().Seconds(), "allocs/s")
	b.ReportMetric(allocs/cpu.Seconds(), "allocs/cpu-s")
}

// restoreData persists a state of 100,000 jobs with one allocation each.
func restoreData(b *testing.B) []byte {
	const jobs = 100_000
	f, s := newFSM(b)
	index := benchCluster(b, f, 0)
	for j := 0; j < jobs; j++ {
		index++
		if _, err := s.RegisterJob(index, t0, testJob(fmt.Sprintf("job-%d", j), 1), nil, false); err != nil {
			b.Fatal(err)
		}
	}
	for j := 0; j < jobs; j += 500 {
		var plans []state.PlanUpdate
		for k := j; k < j+500; k++ {
			job := fmt.Sprintf("job-%d", k)
			plans = append(plans, state.PlanUpdate{JobID: job, Allocs: []*caravan.Allocation{benchAlloc(job, 0, k%benchNodes, uuid('c', k))}})
		}
		index++
		if err := s.ApplyPlans(index, t0, plans); err != nil {
			b.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkRestore restores 100,000 jobs and their 100,000 allocations.
func BenchmarkRestore(b *testing.B) {
	data := restoreData(b)
	runtime.GC()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		f, _ := newFSM(b)
		if err := f.store.Restore(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((cpuTime()-start).Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(len(data))/(1<<20), "MB")
}

// BenchmarkPersist writes the state of BenchmarkRestore.
func BenchmarkPersist(b *testing.B) {
	data := restoreData(b)
	f, _ := newFSM(b)
	if err := f.store.Restore(bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		var buf bytes.Buffer
		buf.Grow(len(data))
		if err := f.store.Snapshot().Persist(&buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJobRegister measures new jobs registered per second through
// Apply, one entry per job with its evaluation (as POST /v1/jobs writes
// them), JSON decoding included. The state starts again every 10,000 jobs.
func BenchmarkJobRegister(b *testing.B) {
	const perState = 10_000
	entries := make([][]byte, perState)
	for i := range entries {
		j := testJob(fmt.Sprintf("bench-%05d", i), 1)
		j.Canonicalize()
		j.SubmitTime = t0
		e := testEval(i, j.ID, caravan.EvalStatusPending)
		entries[i] = entry(b, JobRegister, &JobRegisterRequest{Time: t0, Job: j, Eval: e})
	}
	var f *FSM
	var index uint64
	var cpu time.Duration
	next := len(entries)
	b.ResetTimer()
	for range b.N {
		if next == len(entries) {
			b.StopTimer()
			f, _ = newFSM(b)
			index, next = benchCluster(b, f, 0), 0
			runtime.GC()
			b.StartTimer()
		}
		index++
		start := cpuTime()
		if _, err := apply(f, index, entries[next]); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - start
		next++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64(b.N)/cpu.Seconds(), "jobs/cpu-s")
}

// BenchmarkSmallPlans measures jobs of one allocation committed per
// second through Apply, as the plan applier batches them for many small
// jobs: PlanApplyCompact entries of 16 plans, each placing one allocation
// and completing its evaluation. The state starts again every 10,000 jobs.
func BenchmarkSmallPlans(b *testing.B) {
	const jobs, perEntry = 10_000, 16
	var entries [][]byte
	for j := 0; j < jobs; j += perEntry {
		req := &PlanApplyRequest{Time: t0}
		for k := j; k < j+perEntry; k++ {
			job := fmt.Sprintf("job-%d", k)
			eval := testEval(k, job, caravan.EvalStatusComplete)
			p := state.PlanUpdate{EvalID: eval.ID, JobID: job, Evals: []*caravan.Evaluation{eval},
				Allocs: []*caravan.Allocation{benchAlloc(job, 0, k%benchNodes, eval.ID)}}
			req.Plans = append(req.Plans, p)
		}
		entries = append(entries, entry(b, PlanApplyCompact, req))
	}
	var f *FSM
	var index uint64
	var cpu time.Duration
	next := len(entries)
	b.ResetTimer()
	for range b.N {
		if next == len(entries) {
			b.StopTimer()
			f, _ = newFSM(b)
			index, next = benchCluster(b, f, 0), 0
			regs := &JobRegisterBatchRequest{}
			for k := 0; k < jobs; k++ {
				job := fmt.Sprintf("job-%d", k)
				regs.Jobs = append(regs.Jobs, JobRegisterRequest{Time: t0, Job: testJob(job, 1), Eval: testEval(k, job, caravan.EvalStatusPending)})
			}
			index++
			mustApply(b, f, index, JobRegisterBatch, regs)
			runtime.GC()
			b.StartTimer()
		}
		index++
		start := cpuTime()
		if _, err := apply(f, index, entries[next]); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - start
		next++
	}
	b.ReportMetric(float64(b.N*perEntry)/b.Elapsed().Seconds(), "jobs/s")
	b.ReportMetric(float64(b.N*perEntry)/cpu.Seconds(), "jobs/cpu-s")
}
