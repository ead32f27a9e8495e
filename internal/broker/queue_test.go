package broker

import (
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestHeapAgainstSortedSlice runs random pushes, pops, removals and changes
// against a sorted slice.
func TestHeapAgainstSortedSlice(t *testing.T) {
	type item struct {
		key, idx int
	}
	rng := rand.New(rand.NewPCG(1, 2))
	h := newHeap(func(a, b *item) bool { return a.key < b.key })
	h.setIndex = func(x *item, i int) { x.idx = i }
	var live []*item
	keys := func() []int {
		var ks []int
		for _, x := range live {
			ks = append(ks, x.key)
		}
		slices.Sort(ks)
		return ks
	}
	for step := range 5000 {
		switch op := rng.IntN(4); {
		case op == 0 || len(live) == 0:
			x := &item{key: rng.IntN(100), idx: -1}
			h.Push(x)
			live = append(live, x)
		case op == 1:
			x := h.Pop()
			if want := keys()[0]; x.key != want {
				t.Fatalf("step %d: Pop = %d, want %d", step, x.key, want)
			}
			live = slices.DeleteFunc(live, func(y *item) bool { return y == x })
		case op == 2:
			x := live[rng.IntN(len(live))]
			if got := h.Remove(x.idx); got != x {
				t.Fatalf("step %d: Remove returned another item", step)
			}
			live = slices.DeleteFunc(live, func(y *item) bool { return y == x })
		default:
			x := live[rng.IntN(len(live))]
			x.key = rng.IntN(100)
			h.Fix(x.idx)
		}
		for i, x := range h.items {
			if x.idx != i {
				t.Fatalf("step %d: item at %d thinks it is at %d", step, i, x.idx)
			}
		}
		if h.Len() != len(live) {
			t.Fatalf("step %d: Len = %d, want %d", step, h.Len(), len(live))
		}
	}
	var got []int
	for h.Len() > 0 {
		got = append(got, h.Pop().key)
	}
	if diff := cmp.Diff(keys(), got); diff != "" {
		t.Errorf("final order (-want +got):\n%s", diff)
	}
}

// TestEvalBrokerTimersDoNotPileUp checks that every evaluation has at most
// one timer, however often its delivery is extended or acked.
func TestEvalBrokerTimersDoNotPileUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		timers := func() int {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.timers.Len()
		}
		b.Enqueue(ev("a", "j", 50))
		_, token := mustDequeue(t, b)
		for range 100 {
			time.Sleep(time.Second)
			if err := b.OutstandingReset("a", token); err != nil {
				t.Fatal(err)
			}
		}
		if n := timers(); n != 1 {
			t.Errorf("%d timers after resets, want 1", n)
		}
		if err := b.PauseNackTimeout("a", token); err != nil {
			t.Fatal(err)
		}
		if n := timers(); n != 0 {
			t.Errorf("%d timers while paused, want 0", n)
		}
		if err := b.ResumeNackTimeout("a", token); err != nil {
			t.Fatal(err)
		}
		if err := b.Ack("a", token); err != nil {
			t.Fatal(err)
		}
		if n := timers(); n != 0 {
			t.Errorf("%d timers after ack, want 0", n)
		}
	})
}
