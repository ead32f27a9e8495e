package localstate

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

func TestIdentityIsKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	first, err := db.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if !caravan.ValidUUID(first.NodeID) || !caravan.ValidUUID(first.SecretID) || first.NodeID == first.SecretID {
		t.Fatalf("identity = %+v, want two distinct UUIDs", first)
	}
	if _, err := Open(path); !errors.Is(err, ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	db.Close()
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	again, err := db.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if again != first {
		t.Errorf("identity after reopen = %+v, want %+v", again, first)
	}
}

func TestAllocsRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	a := &caravan.Allocation{ID: caravan.NewID(), JobID: "j", TaskGroup: "g",
		Job: &caravan.Job{ID: "j", TaskGroups: []*caravan.TaskGroup{{Name: "g"}}}}
	rec := &taskrunner.Record{
		State:  &caravan.TaskState{State: caravan.TaskStateRunning, Events: []*caravan.TaskEvent{{Type: "started"}}},
		Handle: &driver.Handle{Driver: "exec", TaskID: a.ID + "/web", State: []byte(`{"pid":1}`)},
		Window: taskrunner.RestartWindow{Count: 1},
	}
	// A task record for an allocation not stored yet is dropped.
	if err := db.PutTask(ctx, a.ID, "web", rec); err != nil {
		t.Fatal(err)
	}
	if err := db.PutAlloc(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := db.PutTask(ctx, a.ID, "web", rec); err != nil {
		t.Fatal(err)
	}
	got, bad, err := db.Allocs()
	if err != nil || len(bad) != 0 {
		t.Fatalf("Allocs: %v %v", err, bad)
	}
	want := []Stored{{Alloc: a, Tasks: map[string]*taskrunner.Record{"web": rec}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	if err := db.DeleteAlloc(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteAlloc(ctx, a.ID); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if err := db.PutTask(ctx, a.ID, "web", rec); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := db.Allocs(); len(got) != 0 {
		t.Errorf("after delete: %d allocations, want 0", len(got))
	}
}

// TestRetireAlloc keeps how a finished allocation ended, without its tasks'
// records, until it is deleted.
func TestRetireAlloc(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &caravan.Allocation{ID: caravan.NewID(), JobID: "j", TaskGroup: "g",
		Job: &caravan.Job{ID: "j", TaskGroups: []*caravan.TaskGroup{{Name: "g"}}}}
	if err := db.PutAlloc(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := db.PutTask(ctx, a.ID, "web", &taskrunner.Record{State: &caravan.TaskState{State: caravan.TaskStateComplete}}); err != nil {
		t.Fatal(err)
	}
	final := a.Stub()
	final.ClientStatus = caravan.AllocClientComplete
	final.TaskStates = map[string]*caravan.TaskState{"web": {State: caravan.TaskStateComplete}}
	if err := db.RetireAlloc(ctx, final); err != nil {
		t.Fatal(err)
	}
	// A late task write does not bring the allocation back.
	if err := db.PutTask(ctx, a.ID, "web", &taskrunner.Record{State: &caravan.TaskState{}}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if db, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, bad, err := db.Allocs(); len(got) != 0 || len(bad) != 0 || err != nil {
		t.Errorf("running allocations after retiring: %d, %v, %v", len(got), bad, err)
	}
	done, bad, err := db.Finished()
	if err != nil || len(bad) != 0 {
		t.Fatalf("Finished: %v %v", err, bad)
	}
	if diff := cmp.Diff([]*caravan.Allocation{final}, done); diff != "" {
		t.Errorf("finished (-want +got):\n%s", diff)
	}
	if err := db.DeleteAlloc(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if done, _, _ := db.Finished(); len(done) != 0 {
		t.Errorf("after delete: %d finished", len(done))
	}
}

// TestGroupCommit writes from many goroutines at once: every write lands,
// and a write that fails alone does not fail the others of its group.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	db, err := Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			a := &caravan.Allocation{ID: caravan.NewID(), JobID: "j", TaskGroup: "g", Job: &caravan.Job{ID: "j"}}
			if i%50 == 7 {
				a.ID = "" // an empty bucket name: bbolt refuses it
				if err := db.PutAlloc(ctx, a); err == nil {
					errs <- errors.New("storing an allocation without id did not fail")
				}
				return
			}
			if err := db.PutAlloc(ctx, a); err != nil {
				errs <- err
				return
			}
			if err := db.PutTask(ctx, a.ID, "t", &taskrunner.Record{State: &caravan.TaskState{State: caravan.TaskStateRunning}}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, bad, err := db.Allocs()
	if err != nil || len(bad) != 0 || len(got) != n-4 {
		t.Fatalf("stored %d allocations (%v, %v), want %d", len(got), bad, err, n-4)
	}
	for _, s := range got {
		if s.Tasks["t"] == nil {
			t.Errorf("allocation %s lost its task record", s.Alloc.ID)
		}
	}
}
