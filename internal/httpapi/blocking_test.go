package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// blocked is the result of a blocking query run in the background.
type blocked struct {
	index uint64
	took  time.Duration
	err   error
}

// inBackground runs a blocking read and returns its result channel.
func inBackground(read func() (uint64, error)) <-chan blocked {
	ch := make(chan blocked, 1)
	go func() {
		start := time.Now()
		idx, err := read()
		ch <- blocked{idx, time.Since(start), err}
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan blocked, within time.Duration) blocked {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("blocking query did not answer within %v", within)
		return blocked{}
	}
}

func TestBlockingQueryWakesOnWrite(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	_, meta, err := c.Jobs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := meta.LastIndex
	ch := inBackground(func() (uint64, error) {
		jobs, meta, err := c.Jobs(ctx, &api.QueryOptions{Index: before, Wait: 20 * time.Second})
		if err == nil && len(jobs) != 1 {
			err = fmt.Errorf("woke with %d jobs", len(jobs))
		}
		if meta == nil {
			return 0, err
		}
		return meta.LastIndex, err
	})
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-ch:
		t.Fatalf("answered before any write: %+v", r)
	default:
	}
	if _, err := c.RegisterJob(ctx, sleepJob("web", 1)); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, ch, 10*time.Second)
	if r.err != nil || r.index <= before {
		t.Errorf("woke with index %d (before %d), %v", r.index, before, r.err)
	}
}

func TestBlockingQueryTimesOut(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	if _, err := c.RegisterJob(ctx, sleepJob("web", 1)); err != nil {
		t.Fatal(err)
	}
	_, meta, err := c.Job(ctx, "web", nil)
	if err != nil {
		t.Fatal(err)
	}
	const wait = 300 * time.Millisecond
	start := time.Now()
	_, meta2, err := c.Job(ctx, "web", &api.QueryOptions{Index: meta.LastIndex, Wait: wait})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if meta2.LastIndex != meta.LastIndex {
		t.Errorf("index %d after a quiet wait, want the same %d", meta2.LastIndex, meta.LastIndex)
	}
	if took < wait || took > wait+wait/16+5*time.Second {
		t.Errorf("answered after %v, want about %v", took, wait)
	}
	// A bare number of seconds is a wait too.
	a := call(t, http.MethodGet, ts.url+"/v1/job/web?wait=1&index="+strconv.FormatUint(meta.LastIndex, 10), "")
	if a.status != http.StatusOK || a.header.Get(api.HeaderIndex) != strconv.FormatUint(meta.LastIndex, 10) {
		t.Errorf("wait=1: %d, index %s", a.status, a.header.Get(api.HeaderIndex))
	}
}

// TestNodeAllocationsWakeOnServerChanges checks that an agent's blocking
// query sleeps through status reports and wakes when the servers change
// its allocations.
func TestNodeAllocationsWakeOnServerChanges(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	n := registerNode(t, ts, 0)
	agent := ts.client(t, n.SecretID)
	_, meta, err := agent.NodeAllocations(ctx, n.ID, nil)
	if err != nil || meta.LastIndex != 1 {
		t.Fatalf("empty node: index %v, %v; want 1", meta, err)
	}

	// A placement wakes the agent.
	ch := inBackground(func() (uint64, error) {
		allocs, meta, err := agent.NodeAllocations(ctx, n.ID, &api.QueryOptions{Index: 1, Wait: 20 * time.Second})
		if err == nil && len(allocs) != 1 {
			err = fmt.Errorf("woke with %d allocations", len(allocs))
		}
		if meta == nil {
			return 0, err
		}
		return meta.LastIndex, err
	})
	if _, err := c.RegisterJob(ctx, sleepJob("web", 1)); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, ch, 10*time.Second)
	if r.err != nil || r.index <= 1 {
		t.Fatalf("woke with %+v", r)
	}
	placedAt := r.index

	// A status report of its own does not.
	al := waitAllocs(t, ts, "web", 1)[0]
	ch = inBackground(func() (uint64, error) {
		_, meta, err := agent.NodeAllocations(ctx, n.ID, &api.QueryOptions{Index: placedAt, Wait: 700 * time.Millisecond})
		if meta == nil {
			return 0, err
		}
		return meta.LastIndex, err
	})
	time.Sleep(100 * time.Millisecond)
	if _, err := agent.UpdateAllocations(ctx, n.ID, []*caravan.AllocClientUpdate{{ID: al.ID, ClientStatus: caravan.AllocClientRunning}}); err != nil {
		t.Fatal(err)
	}
	r = waitResult(t, ch, 10*time.Second)
	if r.err != nil || r.index != placedAt || r.took < 700*time.Millisecond {
		t.Errorf("after a status report: %+v, want index %d after the full wait", r, placedAt)
	}

	// A stop by a user does.
	ch = inBackground(func() (uint64, error) {
		_, meta, err := agent.NodeAllocations(ctx, n.ID, &api.QueryOptions{Index: placedAt, Wait: 20 * time.Second})
		if meta == nil {
			return 0, err
		}
		return meta.LastIndex, err
	})
	if _, err := c.StopAllocation(ctx, al.ID); err != nil {
		t.Fatal(err)
	}
	r = waitResult(t, ch, 10*time.Second)
	if r.err != nil || r.index <= placedAt {
		t.Errorf("after a stop: %+v", r)
	}
}
