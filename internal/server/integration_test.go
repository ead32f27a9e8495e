package server_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/testcluster"
)

func intp(i int) *int { return &i }

// job builds a one-group, one-task job.
func job(id, typ string, count int, cpu int) *caravan.Job {
	return &caravan.Job{
		ID: id, Type: typ,
		TaskGroups: []*caravan.TaskGroup{{
			Name: "g", Count: intp(count),
			Reschedule: &caravan.ReschedulePolicy{Unlimited: true, Delay: caravan.Duration(100 * time.Millisecond), DelayFunction: caravan.DelayConstant},
			Tasks: []*caravan.Task{{
				Name: "t", Config: caravan.TaskConfig{Command: "sleep 1000"},
				Resources: caravan.Resources{CPU: cpu, Memory: 64},
			}},
		}},
	}
}

func allocsOf(t *testing.T, c *api.Client, jobID string) []*caravan.Allocation {
	t.Helper()
	allocs, _, err := c.JobAllocations(context.Background(), jobID, nil)
	if err != nil {
		t.Fatalf("job allocations: %v", err)
	}
	return allocs
}

func countStatus(allocs []*caravan.Allocation, status string) int {
	n := 0
	for _, a := range allocs {
		if a.ClientStatus == status && !a.ServerTerminal() {
			n++
		}
	}
	return n
}

func jobStatus(t *testing.T, c *api.Client, id string) string {
	t.Helper()
	j, _, err := c.Job(context.Background(), id, nil)
	if err != nil {
		t.Fatalf("job %s: %v", id, err)
	}
	return j.Status
}

func register(t *testing.T, c *api.Client, j *caravan.Job) *caravan.JobRegisterResponse {
	t.Helper()
	resp, err := c.RegisterJob(context.Background(), j)
	if err != nil {
		t.Fatalf("register %s: %v", j.ID, err)
	}
	return resp
}

func TestServiceFailedAllocationIsReplaced(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	var failed atomic.Int32
	c.AddSimNodes(2, func(a *caravan.Allocation) testcluster.Outcome {
		if a.Index == 0 && a.PreviousAllocation == "" && failed.Add(1) == 1 {
			return testcluster.Outcome{RunFor: 200 * time.Millisecond, ExitCode: 3}
		}
		return testcluster.Outcome{}
	}, nil)
	cl := c.Client()
	register(t, cl, job("web", caravan.JobTypeService, 3, 100))
	testcluster.WaitFor(t, 15*time.Second, "3 running after a replacement", func() bool {
		allocs := allocsOf(t, cl, "web")
		return countStatus(allocs, caravan.AllocClientRunning) == 3 && len(allocs) == 4
	})
	var failedAlloc, replacement *caravan.Allocation
	for _, a := range allocsOf(t, cl, "web") {
		if a.ClientStatus == caravan.AllocClientFailed {
			failedAlloc = a
		}
		if a.PreviousAllocation != "" {
			replacement = a
		}
	}
	if failedAlloc == nil || replacement == nil || failedAlloc.NextAllocation != replacement.ID || replacement.PreviousAllocation != failedAlloc.ID {
		t.Fatalf("failed %+v / replacement %+v not linked", failedAlloc, replacement)
	}
	if replacement.Index != 0 || replacement.RescheduleTracker == nil || len(replacement.RescheduleTracker.Events) != 1 {
		t.Errorf("replacement index %d tracker %+v", replacement.Index, replacement.RescheduleTracker)
	}
	if s := jobStatus(t, cl, "web"); s != caravan.JobStatusRunning {
		t.Errorf("job status %q", s)
	}
}

func TestBatchRunsToCompletionOnce(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	c.AddSimNodes(2, func(*caravan.Allocation) testcluster.Outcome {
		return testcluster.Outcome{RunFor: 150 * time.Millisecond}
	}, nil)
	cl := c.Client()
	register(t, cl, job("crunch", caravan.JobTypeBatch, 4, 100))
	testcluster.WaitFor(t, 15*time.Second, "batch job complete", func() bool {
		return jobStatus(t, cl, "crunch") == caravan.JobStatusComplete
	})
	// Re-evaluating never reruns completed work.
	if _, err := cl.EvaluateJob(context.Background(), "crunch"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	allocs := allocsOf(t, cl, "crunch")
	if len(allocs) != 4 || countStatus(allocs, caravan.AllocClientComplete) != 4 {
		t.Fatalf("want 4 complete allocations, got %d: %v", len(allocs), statuses(allocs))
	}
}

func TestBatchFailureRetriedThenFailed(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	c.AddSimNodes(1, func(a *caravan.Allocation) testcluster.Outcome {
		if a.JobID == "flaky" && a.PreviousAllocation != "" {
			return testcluster.Outcome{RunFor: 100 * time.Millisecond} // the retry works
		}
		return testcluster.Outcome{RunFor: 100 * time.Millisecond, ExitCode: 1}
	}, nil)
	cl := c.Client()
	for _, id := range []string{"flaky", "broken"} {
		j := job(id, caravan.JobTypeBatch, 1, 100)
		j.TaskGroups[0].Reschedule = &caravan.ReschedulePolicy{Attempts: 1, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(100 * time.Millisecond), DelayFunction: caravan.DelayConstant}
		register(t, cl, j)
	}
	testcluster.WaitFor(t, 15*time.Second, "flaky complete, broken failed", func() bool {
		return jobStatus(t, cl, "flaky") == caravan.JobStatusComplete && jobStatus(t, cl, "broken") == caravan.JobStatusFailed
	})
	if n := len(allocsOf(t, cl, "broken")); n != 2 {
		t.Errorf("broken: %d allocations, want 2 (one retry)", n)
	}
}

func TestLostNodeAllocationsAreRescheduled(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	nodes := c.AddSimNodes(2, nil, nil)
	cl := c.Client()
	register(t, cl, job("svc", caravan.JobTypeService, 4, 100))
	testcluster.WaitFor(t, 10*time.Second, "4 running", func() bool {
		return countStatus(allocsOf(t, cl, "svc"), caravan.AllocClientRunning) == 4
	})
	// The victim is a node that runs some of the job; the survivor is the
	// other one.
	perNode := map[string]int{}
	for _, a := range allocsOf(t, cl, "svc") {
		perNode[a.NodeID]++
	}
	victim, survivor := nodes[0], nodes[1]
	if perNode[victim.Node.ID] == 0 {
		victim, survivor = survivor, victim
	}
	onVictim := perNode[victim.Node.ID]
	victim.Stop()
	testcluster.WaitFor(t, 20*time.Second, "node down, allocations lost and replaced", func() bool {
		n, _, err := cl.Node(context.Background(), victim.Node.ID, nil)
		if err != nil || n.Status != caravan.NodeStatusDown {
			return false
		}
		allocs := allocsOf(t, cl, "svc")
		lost := 0
		running := 0
		for _, a := range allocs {
			if a.ClientStatus == caravan.AllocClientLost {
				lost++
				if a.TerminalReason != caravan.TaskStateLost {
					t.Errorf("lost allocation with terminal reason %q", a.TerminalReason)
				}
			}
			if a.ClientStatus == caravan.AllocClientRunning && !a.ServerTerminal() && a.NodeID == survivor.Node.ID {
				running++
			}
		}
		return lost == onVictim && running == 4
	})
}

func TestBlockedEvaluationUnblocksOnNewCapacity(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	c.AddSimNodes(1, nil, nil) // 4000 MHz
	cl := c.Client()
	resp := register(t, cl, job("big", caravan.JobTypeService, 2, 3000))
	var blocked *caravan.Evaluation
	testcluster.WaitFor(t, 10*time.Second, "a blocked evaluation", func() bool {
		evals, _, err := cl.JobEvaluations(context.Background(), "big", nil)
		if err != nil {
			return false
		}
		for _, e := range evals {
			if e.Status == caravan.EvalStatusBlocked {
				blocked = e
			}
		}
		return blocked != nil
	})
	first, _, err := cl.Evaluation(context.Background(), resp.EvalID, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := first.FailedTGAllocs["g"]
	if m == nil || m.DimensionExhausted[caravan.DimensionCPU] != 1 || m.NodesEvaluated != 1 {
		t.Fatalf("placement failure summary = %+v", m)
	}
	if first.BlockedEval != blocked.ID {
		t.Errorf("eval %s blocked_eval %q, want %s", first.ID, first.BlockedEval, blocked.ID)
	}
	c.AddSimNodes(1, nil, func(_ int, s *testcluster.SimNodeSpec) { s.Node.Name = "late" })
	testcluster.WaitFor(t, 10*time.Second, "both placed after the new node", func() bool {
		return countStatus(allocsOf(t, cl, "big"), caravan.AllocClientRunning) == 2
	})
}

func TestRollingUpdateHonoursMaxParallel(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	c.AddSimNodes(3, func(*caravan.Allocation) testcluster.Outcome {
		return testcluster.Outcome{StartAfter: 300 * time.Millisecond}
	}, nil)
	cl := c.Client()
	j := job("roll", caravan.JobTypeService, 4, 100)
	register(t, cl, j)
	testcluster.WaitFor(t, 10*time.Second, "4 running", func() bool {
		return countStatus(allocsOf(t, cl, "roll"), caravan.AllocClientRunning) == 4
	})
	j.TaskGroups[0].Tasks[0].Env = map[string]string{"V": "2"}
	resp := register(t, cl, j)
	if resp.JobVersion != 1 {
		t.Fatalf("version %d, want 1", resp.JobVersion)
	}
	maxInFlight := 0
	testcluster.WaitFor(t, 30*time.Second, "4 running at version 1", func() bool {
		allocs := allocsOf(t, cl, "roll")
		inFlight, newRunning := 0, 0
		for _, a := range allocs {
			if a.JobVersion == 1 && !a.Terminal() && a.ClientStatus == caravan.AllocClientPending {
				inFlight++
			}
			if a.JobVersion == 1 && a.ClientStatus == caravan.AllocClientRunning && !a.ServerTerminal() {
				newRunning++
			}
		}
		maxInFlight = max(maxInFlight, inFlight)
		return newRunning == 4
	})
	if maxInFlight > 1 {
		t.Errorf("up to %d replacements in flight at once, max_parallel is 1", maxInFlight)
	}
	for _, a := range allocsOf(t, cl, "roll") {
		if a.JobVersion == 0 && !a.ServerTerminal() {
			t.Errorf("old allocation %s still wanted", a.ID)
		}
	}
}

func TestSystemJobRunsOnJoiningNode(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	c.AddSimNodes(2, nil, nil)
	cl := c.Client()
	register(t, cl, job("agentd", caravan.JobTypeSystem, 1, 100))
	testcluster.WaitFor(t, 10*time.Second, "one per node", func() bool {
		return countStatus(allocsOf(t, cl, "agentd"), caravan.AllocClientRunning) == 2
	})
	late := c.AddSimNodes(1, nil, nil)[0]
	testcluster.WaitFor(t, 10*time.Second, "the joining node runs it too", func() bool {
		for _, a := range allocsOf(t, cl, "agentd") {
			if a.NodeID == late.Node.ID && a.ClientStatus == caravan.AllocClientRunning {
				return true
			}
		}
		return false
	})
}

func TestDrainMigratesAndEnds(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	nodes := c.AddSimNodes(2, nil, nil)
	cl := c.Client()
	register(t, cl, job("mig", caravan.JobTypeService, 4, 100))
	testcluster.WaitFor(t, 10*time.Second, "4 running", func() bool {
		return countStatus(allocsOf(t, cl, "mig"), caravan.AllocClientRunning) == 4
	})
	ctx := context.Background()
	if _, err := cl.DrainNode(ctx, nodes[0].Node.ID, &caravan.DrainStrategy{Deadline: caravan.Duration(time.Minute)}, false); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 20*time.Second, "drained and ineligible", func() bool {
		n, _, err := cl.Node(ctx, nodes[0].Node.ID, nil)
		if err != nil || n.Drain != nil || n.SchedulingEligibility != caravan.NodeIneligible {
			return false
		}
		running := 0
		for _, a := range allocsOf(t, cl, "mig") {
			if a.ClientStatus == caravan.AllocClientRunning && !a.ServerTerminal() {
				if a.NodeID == nodes[0].Node.ID {
					return false
				}
				running++
			}
		}
		return running == 4
	})
}

func TestGarbageCollection(t *testing.T) {
	c := testcluster.Start(t, testcluster.Options{})
	c.AddSimNodes(1, func(*caravan.Allocation) testcluster.Outcome {
		return testcluster.Outcome{RunFor: 50 * time.Millisecond}
	}, nil)
	cl := c.Client()
	register(t, cl, job("done", caravan.JobTypeBatch, 2, 100))
	register(t, cl, job("alive", caravan.JobTypeService, 1, 100))
	testcluster.WaitFor(t, 10*time.Second, "batch complete", func() bool {
		return jobStatus(t, cl, "done") == caravan.JobStatusComplete
	})
	testcluster.WaitFor(t, 10*time.Second, "service running", func() bool {
		return countStatus(allocsOf(t, cl, "alive"), caravan.AllocClientRunning) == 1
	})
	res, err := c.Leader().Server().CollectGarbage(context.Background(), true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Jobs != 1 {
		t.Errorf("gc removed %d jobs, want 1: %+v", res.Jobs, res)
	}
	if _, _, err := cl.Job(context.Background(), "done", nil); err == nil {
		t.Error("finished batch job still there after GC")
	}
	if s := jobStatus(t, cl, "alive"); s != caravan.JobStatusRunning {
		t.Errorf("running job touched by GC: %s", s)
	}
	if n := countStatus(allocsOf(t, cl, "alive"), caravan.AllocClientRunning); n != 1 {
		t.Errorf("running allocation collected: %d left", n)
	}
}

func statuses(allocs []*caravan.Allocation) []string {
	var out []string
	for _, a := range allocs {
		out = append(out, fmt.Sprintf("%s/%s", a.ClientStatus, a.DesiredStatus))
	}
	return out
}
