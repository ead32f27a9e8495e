package broker

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// blockedEv makes a blocked evaluation of job in pool, scheduled from
// snapshot.
func blockedEv(id, job, pool string, priority int, snapshot uint64) *caravan.Evaluation {
	e := ev(id, job, priority)
	e.Status = caravan.EvalStatusBlocked
	e.NodePool = pool
	e.SnapshotIndex = snapshot
	e.ModifyIndex = snapshot
	e.CreateIndex = snapshot
	return e
}

// released describes what reached the broker.
type released struct {
	ID     string
	Status string
}

func releasedOf(evals []*caravan.Evaluation) []released {
	var out []released
	for _, e := range evals {
		out = append(out, released{e.ID, e.Status})
	}
	return out
}

func TestBlockedUnblockByPool(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := &recorder{}
	bl := NewBlockedEvals(rec)
	bl.SetEnabled(true)
	low := blockedEv("low", "j1", "gpu", 10, 5)
	early := blockedEv("early", "j2", "gpu", 50, 5)
	early.SubmitTime = t0
	late := blockedEv("late", "j3", "gpu", 50, 5)
	late.SubmitTime = t0.Add(time.Minute)
	for _, e := range []*caravan.Evaluation{
		low, late, early,
		blockedEv("cpu", "j4", "cpu", 90, 5),
		blockedEv("dflt", "j5", "", 90, 5),
	} {
		bl.Block(e)
	}
	want := BlockedStats{Blocked: 5, ByPool: map[string]int{"gpu": 3, "cpu": 1, "default": 1}}
	if diff := cmp.Diff(want, bl.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}

	bl.Unblock("gpu", 6)
	wantReleased := []released{
		{"early", caravan.EvalStatusPending},
		{"late", caravan.EvalStatusPending},
		{"low", caravan.EvalStatusPending},
	}
	if diff := cmp.Diff(wantReleased, releasedOf(rec.take())); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
	if low.Status != caravan.EvalStatusBlocked {
		t.Errorf("the blocked evaluation itself was modified: %q", low.Status)
	}
	bl.Unblock("gpu", 7)
	if got := rec.take(); len(got) != 0 {
		t.Errorf("second unblock released %v", ids(got))
	}
	bl.Unblock("", 8) // the default pool
	if diff := cmp.Diff([]string{"dflt"}, ids(rec.take())); diff != "" {
		t.Errorf("default pool (-want +got):\n%s", diff)
	}
	bl.UnblockAll(9)
	if diff := cmp.Diff([]string{"cpu"}, ids(rec.take())); diff != "" {
		t.Errorf("UnblockAll (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(BlockedStats{}, bl.Stats()); diff != "" {
		t.Errorf("stats at the end (-want +got):\n%s", diff)
	}
}

func TestBlockedOnePerJob(t *testing.T) {
	rec := &recorder{}
	bl := NewBlockedEvals(rec)
	bl.SetEnabled(true)
	bl.Block(blockedEv("old", "web", "default", 50, 5))
	bl.Block(blockedEv("new", "web", "default", 50, 6))
	bl.Block(blockedEv("new", "web", "default", 50, 6)) // the same again
	bl.Block(blockedEv("older", "web", "default", 50, 4))
	bl.Block(blockedEv("db", "db", "default", 50, 4))
	if diff := cmp.Diff([]string{"old", "older"}, drainNow(t, bl.WaitCancelable)); diff != "" {
		t.Errorf("cancelable (-want +got):\n%s", diff)
	}
	bl.Untrack("db")
	bl.Untrack("nothing")
	bl.Untrack("")
	if diff := cmp.Diff([]string{"db"}, drainNow(t, bl.WaitCancelable)); diff != "" {
		t.Errorf("untracked (-want +got):\n%s", diff)
	}
	bl.UnblockAll(10)
	if diff := cmp.Diff([]string{"new"}, ids(rec.take())); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
}

func TestBlockedMissedWakeup(t *testing.T) {
	tests := []struct {
		name    string
		changes func(bl *BlockedEvals)
		eval    *caravan.Evaluation
		// wantReleased is true when the evaluation must go to the broker
		// at once instead of being kept.
		wantReleased bool
	}{
		{"no change since", func(*BlockedEvals) {}, blockedEv("e", "j", "gpu", 50, 5), false},
		{"change before the snapshot", func(bl *BlockedEvals) { bl.Unblock("gpu", 4) }, blockedEv("e", "j", "gpu", 50, 5), false},
		{"change at the snapshot", func(bl *BlockedEvals) { bl.Unblock("gpu", 5) }, blockedEv("e", "j", "gpu", 50, 5), false},
		{"change after the snapshot", func(bl *BlockedEvals) { bl.Unblock("gpu", 6) }, blockedEv("e", "j", "gpu", 50, 5), true},
		{"change in another pool", func(bl *BlockedEvals) { bl.Unblock("cpu", 9) }, blockedEv("e", "j", "gpu", 50, 5), false},
		{"change everywhere", func(bl *BlockedEvals) { bl.UnblockAll(9) }, blockedEv("e", "j", "gpu", 50, 5), true},
		{"change in the default pool", func(bl *BlockedEvals) { bl.Unblock("default", 9) }, blockedEv("e", "j", "", 50, 5), true},
		{"older indexes do not lower the mark", func(bl *BlockedEvals) {
			bl.Unblock("gpu", 9)
			bl.Unblock("gpu", 3)
		}, blockedEv("e", "j", "gpu", 50, 5), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			bl := NewBlockedEvals(rec)
			bl.SetEnabled(true)
			tt.changes(bl)
			bl.Block(tt.eval)
			got := len(rec.take()) == 1
			if got != tt.wantReleased {
				t.Errorf("released at once = %v, want %v", got, tt.wantReleased)
			}
			if kept := bl.Stats().Blocked == 1; kept == tt.wantReleased {
				t.Errorf("kept = %v, want %v", kept, !tt.wantReleased)
			}
		})
	}
}

func TestBlockedDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		bl := NewBlockedEvals(rec)
		bl.Block(blockedEv("ignored", "j", "gpu", 50, 5))
		bl.SetEnabled(true)
		bl.SetEnabled(true)
		bl.Block(nil)
		bl.Block(&caravan.Evaluation{})
		bl.Block(blockedEv("a", "j", "gpu", 50, 5))
		bl.Block(blockedEv("b", "k", "gpu", 50, 6))
		bl.Block(blockedEv("old", "k", "gpu", 50, 1))
		if s := bl.Stats(); s.Blocked != 2 || s.Cancelable != 1 {
			t.Fatalf("stats: %+v", s)
		}

		if diff := cmp.Diff([]string{"old"}, drainNow(t, bl.WaitCancelable)); diff != "" {
			t.Errorf("cancelable (-want +got):\n%s", diff)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := bl.WaitCancelable(context.Background(), 0)
			errc <- err
		}()
		synctest.Wait()
		bl.SetEnabled(false)
		bl.SetEnabled(false)
		bl.Unblock("gpu", 9)
		bl.UnblockAll(9)
		bl.Untrack("j")
		if got := rec.take(); len(got) != 0 {
			t.Errorf("disabled set released %v", ids(got))
		}
		if diff := cmp.Diff(BlockedStats{}, bl.Stats()); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
		if err := <-errc; !errors.Is(err, ErrDisabled) {
			t.Errorf("WaitCancelable = %v, want ErrDisabled", err)
		}
		bl.SetEnabled(true)
		bl.Block(blockedEv("c", "j", "gpu", 50, 5))
		if s := bl.Stats(); s.Blocked != 1 {
			t.Errorf("after re-enable: %+v (the old capacity marks must be gone)", s)
		}
	})
}

// TestBlockedIntoBroker runs the real broker: unblocked evaluations become
// ready work in priority order.
func TestBlockedIntoBroker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		bl := NewBlockedEvals(b)
		bl.SetEnabled(true)
		bl.Block(blockedEv("small", "j1", "default", 10, 5))
		bl.Block(blockedEv("big", "j2", "default", 80, 5))
		if s := b.Stats(); s.Ready != 0 {
			t.Fatalf("blocked evaluations are ready: %+v", s)
		}
		bl.Unblock("default", 6)
		var got []string
		for range 2 {
			e, token, err := b.Dequeue(context.Background(), []string{"service"})
			if err != nil {
				t.Fatal(err)
			}
			if e.Status != caravan.EvalStatusPending {
				t.Errorf("%s has status %q", e.ID, e.Status)
			}
			got = append(got, e.ID)
			if err := b.Ack(e.ID, token); err != nil {
				t.Fatal(err)
			}
		}
		if diff := cmp.Diff([]string{"big", "small"}, got); diff != "" {
			t.Errorf("order (-want +got):\n%s", diff)
		}
	})
}
