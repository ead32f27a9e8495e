package server

import (
	"context"
	"sync"
	"testing"

	"github.com/caravan-sched/caravan"
)

// TestConcurrentRegistrationsAreBatched registers many jobs at once: every
// caller gets its own answer (distinct numbered ids, the version its spec
// made), and the registrations share entries.
func TestConcurrentRegistrationsAreBatched(t *testing.T) {
	s := startServer(t, testConfig(t, "s1"))
	const callers = 64
	var wg sync.WaitGroup
	resps := make([]*caravan.JobRegisterResponse, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			count := 1
			job := &caravan.Job{TaskGroups: []*caravan.TaskGroup{{Count: &count, Tasks: []*caravan.Task{{Config: caravan.TaskConfig{Command: "sleep 100"}}}}}}
			if i%2 == 1 {
				job.ID = "shared" // registered 32 times, always the same spec
			}
			resps[i], errs[i] = s.RegisterJob(context.Background(), job, false)
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	indexes := map[uint64]bool{}
	for i, r := range resps {
		if errs[i] != nil {
			t.Fatalf("registration %d: %v", i, errs[i])
		}
		indexes[r.Index] = true
		if i%2 == 1 {
			if r.JobID != "shared" || r.JobVersion != 0 {
				t.Errorf("registration %d of the shared job: %+v", i, r)
			}
			continue
		}
		if ids[r.JobID] {
			t.Errorf("job id %s handed out twice", r.JobID)
		}
		ids[r.JobID] = true
		if _, err := s.State().Snapshot().EvalByID(r.EvalID); err != nil {
			t.Errorf("registration %d: its evaluation: %v", i, err)
		}
	}
	if len(indexes) == callers {
		t.Logf("no two registrations shared an entry (a slow machine can make that happen)")
	}
}
