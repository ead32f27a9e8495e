package broker

import (
	"cmp"
	"context"
	"strings"
	"sync"

	"github.com/caravan-sched/caravan"
)

// heapOf is a binary min-heap ordered by less. It is a generic stand-in for
// container/heap that stores values without boxing them in interfaces. When
// setIndex is not nil it is told every item's position (-1 once removed),
// so that items can be removed or moved with Remove and Fix.
type heapOf[T any] struct {
	items    []T
	less     func(a, b T) bool
	setIndex func(T, int)
}

func newHeap[T any](less func(a, b T) bool) *heapOf[T] {
	return &heapOf[T]{less: less}
}

func (h *heapOf[T]) Len() int { return len(h.items) }

// Peek returns the smallest item; the heap must not be empty.
func (h *heapOf[T]) Peek() T { return h.items[0] }

func (h *heapOf[T]) Push(x T) {
	h.items = append(h.items, x)
	h.place(len(h.items) - 1)
	h.up(len(h.items) - 1)
}

// Pop removes and returns the smallest item; the heap must not be empty.
func (h *heapOf[T]) Pop() T { return h.Remove(0) }

// Remove removes and returns the item at index i.
func (h *heapOf[T]) Remove(i int) T {
	x := h.items[i]
	last := len(h.items) - 1
	if i != last {
		h.items[i] = h.items[last]
		h.place(i)
	}
	var zero T
	h.items[last] = zero // let the garbage collector have it
	h.items = h.items[:last]
	if i != last {
		h.Fix(i)
	}
	if h.setIndex != nil {
		h.setIndex(x, -1)
	}
	return x
}

// Fix restores the order after the item at index i changed.
func (h *heapOf[T]) Fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

// Clear drops every item.
func (h *heapOf[T]) Clear() {
	if h.setIndex != nil {
		for _, x := range h.items {
			h.setIndex(x, -1)
		}
	}
	h.items = nil
}

func (h *heapOf[T]) place(i int) {
	if h.setIndex != nil {
		h.setIndex(h.items[i], i)
	}
}

func (h *heapOf[T]) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
	h.place(i)
	h.place(j)
}

func (h *heapOf[T]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.items[i], h.items[parent]) {
			return
		}
		h.swap(i, parent)
		i = parent
	}
}

// down sinks the item at i and reports whether it moved.
func (h *heapOf[T]) down(i int) bool {
	start, n := i, len(h.items)
	for {
		smallest, l, r := i, 2*i+1, 2*i+2
		if l < n && h.less(h.items[l], h.items[smallest]) {
			smallest = l
		}
		if r < n && h.less(h.items[r], h.items[smallest]) {
			smallest = r
		}
		if smallest == i {
			return i > start
		}
		h.swap(i, smallest)
		i = smallest
	}
}

// signal wakes every goroutine waiting on it. Waiters take the channel with
// wait (under the owner's lock) and block on it after unlocking; broadcast
// (under the same lock) closes it. The channel is made only when someone
// waits, so broadcasting with no waiter costs nothing.
type signal struct {
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) broadcast() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// compareEvals orders ready work: higher priority first, then older submit
// time, then lower create index, then id so the order is total.
func compareEvals(a, b *caravan.Evaluation) int {
	if c := cmp.Compare(b.Priority, a.Priority); c != 0 {
		return c
	}
	if c := a.SubmitTime.Compare(b.SubmitTime); c != 0 {
		return c
	}
	if c := cmp.Compare(a.CreateIndex, b.CreateIndex); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// trackedBefore orders the broker's ready work like compareEvals, with
// arrival order instead of the id as the last tie-breaker.
func trackedBefore(a, b *tracked) bool {
	x, y := a.eval, b.eval
	if x.Priority != y.Priority {
		return x.Priority > y.Priority
	}
	if c := x.SubmitTime.Compare(y.SubmitTime); c != 0 {
		return c < 0
	}
	if x.CreateIndex != y.CreateIndex {
		return x.CreateIndex < y.CreateIndex
	}
	return a.seq < b.seq
}

// newer reports whether a is a newer evaluation than b, by modify index and
// then create index. Between equals the one seen later (a) wins.
func newer(a, b *caravan.Evaluation) bool {
	if a.ModifyIndex != b.ModifyIndex {
		return a.ModifyIndex > b.ModifyIndex
	}
	return a.CreateIndex >= b.CreateIndex
}

// gate is what every queue shares: the lock, whether this server leads, and
// an epoch that a disable bumps, so that a waiter from before a disable
// fails even when the queue was enabled again before it woke.
type gate struct {
	mu      sync.Mutex
	enabled bool
	epoch   uint64
}

// await calls try under g.mu until it reports done, blocking on the channel
// try returns in between. It returns ErrDisabled when the queue is or
// becomes disabled, and ctx's error when ctx ends first.
func (g *gate) await(ctx context.Context, try func() (wake <-chan struct{}, done bool)) error {
	g.mu.Lock()
	epoch := g.epoch
	for {
		if !g.enabled || g.epoch != epoch {
			g.mu.Unlock()
			return ErrDisabled
		}
		wake, done := try()
		g.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
		g.mu.Lock()
	}
}

// evalList is a list of evaluations the server drains (failed, cancelable).
// Its owner's lock guards it.
type evalList struct {
	items []*caravan.Evaluation
	sig   signal
}

func (l *evalList) push(e *caravan.Evaluation) {
	l.items = append(l.items, e)
	l.sig.broadcast()
}

// take removes and returns up to limit items (all of them when limit < 1), or
// nil and a channel that is closed when an item arrives.
func (l *evalList) take(limit int) ([]*caravan.Evaluation, <-chan struct{}) {
	if len(l.items) == 0 {
		return nil, l.sig.wait()
	}
	if limit < 1 || limit >= len(l.items) {
		out := l.items
		l.items = nil
		return out, nil
	}
	out := make([]*caravan.Evaluation, limit)
	copy(out, l.items)
	l.items = append(l.items[:0:0], l.items[limit:]...)
	return out, nil
}

// reset drops every item and wakes the waiters.
func (l *evalList) reset() {
	l.items = nil
	l.sig.broadcast()
}
