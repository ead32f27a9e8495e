package localstate

import (
	"context"
	"errors"
	"path/filepath"
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
