package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testcluster"
)

// TestLeaderLossDuringWrites kills the leader of a 3-server cluster while a
// client writes: a new leader is elected, writes go on, and every write that
// was acknowledged is on every server afterwards, the old leader included
// once it is back.
func TestLeaderLossDuringWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-server cluster test; skipped with -short")
	}
	c := testcluster.Start(t, testcluster.Options{Servers: 3})
	cl := c.Client()

	var (
		mu    sync.Mutex
		acked []string
	)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; i < 400 && ctx.Err() == nil; i++ {
			id := fmt.Sprintf("w-%03d", i)
			callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := cl.RegisterJob(callCtx, job(id, caravan.JobTypeService, 0, 100))
			callCancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
				continue
			}
			time.Sleep(20 * time.Millisecond) // no leader for a moment: retry the next one
		}
	}()
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }

	testcluster.WaitFor(t, 20*time.Second, "50 writes", func() bool { return ackedCount() >= 50 })
	old := c.Leader()
	old.Stop()
	before := ackedCount()
	newLeader := c.Leader()
	if newLeader == old {
		t.Fatal("the stopped server still leads")
	}
	testcluster.WaitFor(t, 30*time.Second, "writes to go on under the new leader", func() bool { return ackedCount() >= before+50 })
	<-writerDone

	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	want := append([]string(nil), acked...)
	mu.Unlock()
	for _, m := range c.Servers {
		m := m
		testcluster.WaitFor(t, 30*time.Second, "server "+m.Config.Name+" to hold every acknowledged write", func() bool {
			snap := m.Server().State().Snapshot()
			for _, id := range want {
				if _, err := snap.JobByID(id); err != nil {
					if !errors.Is(err, caravan.ErrNotFound) {
						t.Fatal(err)
					}
					return false
				}
			}
			return true
		})
	}
	t.Logf("%d writes acknowledged, %d after the leader was stopped", len(want), len(want)-before)
}

// TestFiveServersLoseTwo forms a 5-voter cluster (four servers join the
// first), then stops the leader and one follower: the three left elect a
// leader, take writes, and every write is on all five once the two are
// back.
func TestFiveServersLoseTwo(t *testing.T) {
	if testing.Short() {
		t.Skip("a 5-server cluster test; skipped with -short")
	}
	c := testcluster.Start(t, testcluster.Options{Servers: 5})
	cl := c.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	testcluster.WaitFor(t, 30*time.Second, "five voters", func() bool {
		peers, err := cl.Peers(ctx)
		return err == nil && len(peers) == 5
	})

	register := func(id string) {
		t.Helper()
		testcluster.WaitFor(t, 30*time.Second, "the write of "+id, func() bool {
			callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
			defer callCancel()
			_, err := cl.RegisterJob(callCtx, job(id, caravan.JobTypeService, 0, 100))
			return err == nil
		})
	}
	register("before")
	leader := c.Leader()
	var follower *testcluster.Member
	for _, m := range c.Servers {
		if m != leader {
			follower = m
			break
		}
	}
	leader.Stop()
	follower.Stop()
	if l := c.Leader(); l == leader || l == follower {
		t.Fatal("a stopped server still leads")
	}
	ids := []string{"before"}
	for i := range 20 {
		id := fmt.Sprintf("after-%02d", i)
		register(id)
		ids = append(ids, id)
	}

	for _, m := range []*testcluster.Member{leader, follower} {
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range c.Servers {
		testcluster.WaitFor(t, 30*time.Second, "server "+m.Config.Name+" to hold every write", func() bool {
			snap := m.Server().State().Snapshot()
			for _, id := range ids {
				if _, err := snap.JobByID(id); err != nil {
					return false
				}
			}
			return true
		})
	}
}
