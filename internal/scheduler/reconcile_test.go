package scheduler

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

var testNow = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// summarize lists a plan's actions without node choices or new ids:
// "stop ID DESIRED DESC", "place GROUP[I] prev=ID", "update ID vN next
// followup", "eval STATUS TRIGGER", and "queued N" when something waits.
// Stops and allocations are sorted.
func summarize(s *fakeState, p *caravan.Plan) []string {
	var out, allocs []string
	for _, a := range planStops(p) {
		out = append(out, fmt.Sprintf("stop %s %s %s", a.ID, a.DesiredStatus, a.DesiredDescription))
	}
	slices.Sort(out)
	for _, a := range planAllocs(p) {
		if _, stored := s.byID[a.ID]; !stored {
			allocs = append(allocs, fmt.Sprintf("place %s[%d] prev=%s", a.TaskGroup, a.Index, a.PreviousAllocation))
			continue
		}
		line := fmt.Sprintf("update %s v%d", a.ID, a.JobVersion)
		if a.NextAllocation != "" {
			line += " next"
		}
		if a.FollowupEvalID != "" {
			line += " followup"
		}
		allocs = append(allocs, line)
	}
	slices.Sort(allocs)
	out = append(out, allocs...)
	for i, e := range p.Evals {
		if i == 0 {
			n := 0
			for _, q := range e.QueuedAllocations {
				n += q
			}
			if n > 0 {
				out = append(out, fmt.Sprintf("queued %d", n))
			}
			if e.Status != caravan.EvalStatusComplete {
				out = append(out, "eval "+e.Status+" "+e.StatusDescription)
			}
			continue
		}
		out = append(out, "eval "+e.Status+" "+e.TriggeredBy)
	}
	return out
}

// failedAt marks an allocation failed at t.
func failedAt(a *caravan.Allocation, t time.Time) *caravan.Allocation {
	a.ClientStatus = caravan.AllocClientFailed
	a.TaskStates = map[string]*caravan.TaskState{"main": {State: caravan.TaskStateFailed, FinishedAt: t}}
	return a
}

// newVersion returns the next version of j after mut changed it.
func newVersion(j *caravan.Job, mut func(*caravan.Job)) *caravan.Job {
	n := j.Copy()
	mut(n)
	n.Version = j.Version + 1
	return n
}

func TestReconcile(t *testing.T) {
	type env struct {
		s    *fakeState
		job  *caravan.Job // version 0, count 2 unless set changes it
		eval *caravan.Evaluation
	}
	tests := []struct {
		name  string
		setup func(e *env)
		want  []string
	}{
		{"count grows: missing indexes are placed", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.job.TaskGroups[0].Count = ptr(4)
		}, []string{"place web[1] prev=", "place web[2] prev=", "place web[3] prev="}},
		{"count shrinks: the highest indexes stop", func(e *env) {
			for i := range 4 {
				e.s.addAlloc(testAlloc(fmt.Sprintf("a%d", i), e.job, "n1", i))
			}
		}, []string{"stop a2 stop count reduced", "stop a3 stop count reduced"}},
		{"nothing to do", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, nil},
		{"a negative index stops", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
			e.s.addAlloc(testAlloc("bad", e.job, "n2", -1))
		}, []string{"stop bad stop count reduced"}},
		{"a duplicate index stops the older version", func(e *env) {
			old := testAlloc("old", e.job, "n1", 0)
			e.job = newVersion(e.job, func(j *caravan.Job) { j.Meta = map[string]string{"v": "1"} })
			e.s.addAlloc(old)
			e.s.addAlloc(testAlloc("a0", e.job, "n2", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n3", 1))
		}, []string{"stop old stop another allocation holds the same index"}},
		{"service: a complete allocation is replaced", func(e *env) {
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Hour))
			a.ClientStatus = caravan.AllocClientComplete
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"place web[0] prev=a0", "update a0 v0 next"}},
		{"service: a recent failure waits for its delay", func(e *env) {
			e.s.addAlloc(failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Second)))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"update a0 v0 followup", "eval pending reschedule"}},
		{"two failures due at the same time share one delayed evaluation", func(e *env) {
			e.s.addAlloc(failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Second)))
			e.s.addAlloc(failedAt(testAlloc("a1", e.job, "n2", 1), testNow.Add(-time.Second)))
		}, []string{"update a0 v0 followup", "update a1 v0 followup", "eval pending reschedule"}},
		{"a follow-up that came early makes another", func(e *env) {
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Second))
			a.FollowupEvalID = e.eval.ID
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"update a0 v0 followup", "eval pending reschedule"}},
		{"a failure with a waiting follow-up is left alone", func(e *env) {
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Second))
			a.FollowupEvalID = "other-eval"
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, nil},
		{"a replaced failure is left alone", func(e *env) {
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Hour))
			a.NextAllocation = "a0b"
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a0b", e.job, "n2", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, nil},
		{"a failure the server stopped is not rescheduled; its index is placed fresh", func(e *env) {
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Hour))
			a.DesiredStatus = caravan.AllocDesiredStop
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"place web[0] prev="}},
		{"batch: complete allocations are never rerun", func(e *env) {
			e.job.Type = caravan.JobTypeBatch
			for i := range 2 {
				a := testAlloc(fmt.Sprintf("a%d", i), e.job, "n1", i)
				a.ClientStatus = caravan.AllocClientComplete
				e.s.addAlloc(a)
			}
		}, nil},
		{"batch: complete survives a spec change", func(e *env) {
			e.job.Type = caravan.JobTypeBatch
			for i := range 2 {
				a := testAlloc(fmt.Sprintf("a%d", i), e.job, "n1", i)
				a.ClientStatus = caravan.AllocClientComplete
				e.s.addAlloc(a)
			}
			e.job = newVersion(e.job, func(j *caravan.Job) { j.TaskGroups[0].Tasks[0].Config.Command = "/bin/new" })
		}, nil},
		{"batch: a failure with attempts left is retried", func(e *env) {
			e.job.Type = caravan.JobTypeBatch
			e.job.TaskGroups[0].Reschedule = &caravan.ReschedulePolicy{Attempts: 1, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(time.Second)}
			e.s.addAlloc(failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Minute)))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"place web[0] prev=a0", "update a0 v0 next"}},
		{"batch: out of attempts, the index stays failed", func(e *env) {
			e.job.Type = caravan.JobTypeBatch
			e.job.TaskGroups[0].Reschedule = &caravan.ReschedulePolicy{Attempts: 1, Interval: caravan.Duration(time.Hour)}
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Minute))
			a.RescheduleTracker = &caravan.RescheduleTracker{Events: []caravan.RescheduleEvent{{Time: testNow.Add(-10 * time.Minute)}}}
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, nil},
		{"batch: reschedules older than the interval do not count", func(e *env) {
			e.job.Type = caravan.JobTypeBatch
			e.job.TaskGroups[0].Reschedule = &caravan.ReschedulePolicy{Attempts: 1, Interval: caravan.Duration(time.Hour)}
			a := failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Minute))
			a.RescheduleTracker = &caravan.RescheduleTracker{Events: []caravan.RescheduleEvent{{Time: testNow.Add(-2 * time.Hour)}}}
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"place web[0] prev=a0", "update a0 v0 next"}},
		{"batch: a failure of an old version is retried with the new one", func(e *env) {
			e.job.Type = caravan.JobTypeBatch
			e.s.addAlloc(failedAt(testAlloc("a0", e.job, "n1", 0), testNow.Add(-time.Hour)))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
			e.job = newVersion(e.job, func(j *caravan.Job) { j.TaskGroups[0].Tasks[0].Config.Command = "/bin/new" })
			e.job.Update = &caravan.UpdateStrategy{MaxParallel: 0}
		}, []string{"stop a1 stop replaced by a new job version", "place web[0] prev=a0", "place web[1] prev=a1", "update a0 v0 next"}},
		{"lost: replaced at once without counting an attempt", func(e *env) {
			e.job.TaskGroups[0].Reschedule = &caravan.ReschedulePolicy{Attempts: 0}
			a := testAlloc("a0", e.job, "n1", 0)
			a.ClientStatus, a.DesiredStatus = caravan.AllocClientLost, caravan.AllocDesiredStop
			e.s.addAlloc(a)
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"place web[0] prev=a0", "update a0 v0 next"}},
		{"node gone: lost, stopped and replaced", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n9", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"stop a0 stop alloc lost: node gone", "place web[0] prev=a0"}},
		{"node down: lost, stopped and replaced", func(e *env) {
			e.s.nodeByID["n1"].Status = caravan.NodeStatusDown
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"stop a0 stop alloc lost: node down", "place web[0] prev=a0"}},
		{"drain: migrated, evicted with the replacement", func(e *env) {
			e.s.nodeByID["n1"].Drain = &caravan.DrainStrategy{Deadline: caravan.Duration(time.Hour)}
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
		}, []string{"stop a0 evict node draining", "place web[0] prev=a0"}},
		{"drain: past the force deadline, evicted even without room", func(e *env) {
			e.s.nodeByID["n1"].Drain = &caravan.DrainStrategy{ForceDeadline: testNow.Add(-time.Second)}
			e.s.nodeByID["n2"].Status = caravan.NodeStatusDown
			e.s.nodeByID["n3"].Status = caravan.NodeStatusDown
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.job.TaskGroups[0].Count = ptr(1)
		}, []string{"stop a0 evict node draining", "queued 1", "eval blocked queued-allocs"}},
		{"drain: without room and before the deadline the allocation stays", func(e *env) {
			e.s.nodeByID["n1"].Drain = &caravan.DrainStrategy{}
			e.s.nodeByID["n2"].Status = caravan.NodeStatusDown
			e.s.nodeByID["n3"].Status = caravan.NodeStatusDown
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.job.TaskGroups[0].Count = ptr(1)
		}, []string{"queued 1", "eval blocked queued-allocs"}},
		{"task group removed: its allocations stop", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
			gone := testAlloc("g0", e.job, "n3", 0)
			gone.TaskGroup = "old"
			e.s.addAlloc(gone)
		}, []string{"stop g0 stop task group removed from the job"}},
		{"job gone: everything live stops", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(failedAt(testAlloc("a1", e.job, "n2", 1), testNow))
			delete(e.s.jobs, e.job.ID)
		}, []string{"stop a0 stop job stopped"}},
		{"spec change of count only: in place", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
			e.job = newVersion(e.job, func(j *caravan.Job) { j.TaskGroups[0].Count = ptr(3) })
		}, []string{"place web[2] prev=", "update a0 v1", "update a1 v1"}},
		{"spec change of job meta: destructive", func(e *env) {
			e.s.addAlloc(testAlloc("a0", e.job, "n1", 0))
			e.s.addAlloc(testAlloc("a1", e.job, "n2", 1))
			e.job = newVersion(e.job, func(j *caravan.Job) { j.Meta = map[string]string{"x": "y"} })
		}, []string{"stop a0 stop replaced by a new job version", "place web[0] prev=a0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := &env{s: newFakeState(), job: testJob("api", caravan.JobTypeService, 2)}
			e.s.addNodes(testNode("n1"), testNode("n2"), testNode("n3"))
			e.eval = testEval(e.job, caravan.TriggerJobRegister)
			tt.setup(e)
			if _, gone := e.s.jobs[e.job.ID]; !gone && tt.name != "job gone: everything live stops" {
				e.s.addJob(e.job)
			}
			res, err := Compute(e.s, e.eval, Options{Now: testNow, Seed: 1, NewID: seqIDs()})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, summarize(e.s, res.Plan)); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
