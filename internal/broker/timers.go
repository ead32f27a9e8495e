package broker

import (
	"context"
	"time"
)

// An evaluation has at most one timer at a time, and what it does depends
// on the evaluation's state when it fires:
//
//	delayed  WaitUntil reached: admit it (ready, or pending behind its job)
//	waiting  redelivery delay over: ready again
//	unacked  nack deadline passed: treat as a nack
//
// The timers live in one heap of tracked evaluations ordered by due time;
// Ack, Nack and pauses remove or move an evaluation's entry, so the heap
// never holds more than the evaluations themselves.

// newTimerHeap orders tracked evaluations by due time and keeps each one's
// position in it.
func newTimerHeap() *heapOf[*tracked] {
	h := newHeap(func(a, b *tracked) bool { return a.due.Before(b.due) })
	h.setIndex = func(t *tracked, i int) { t.timer = i }
	return h
}

// setTimer (re)arms t's timer for at and wakes Run when it is the new
// earliest.
func (b *EvalBroker) setTimer(t *tracked, at time.Time) {
	t.due = at
	if t.timer >= 0 {
		b.timers.Fix(t.timer)
	} else {
		b.timers.Push(t)
	}
	if b.timers.Peek() == t {
		b.timerCh.broadcast()
	}
}

// stopTimer disarms t's timer, if it has one.
func (b *EvalBroker) stopTimer(t *tracked) {
	if t.timer >= 0 {
		b.timers.Remove(t.timer)
	}
}

// Run drives the broker's timers: it releases delayed evaluations when
// their WaitUntil comes, makes nacked ones ready again after their delay,
// and treats deliveries that outlive the nack timeout as nacked. The server
// runs it for its whole life, enabled or not; it returns nil when ctx ends.
// Without Run, no timer fires.
func (b *EvalBroker) Run(ctx context.Context) error {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		b.mu.Lock()
		next, ok := b.fireDueLocked(time.Now())
		wake := b.timerCh.wait()
		b.mu.Unlock()

		var fire <-chan time.Time
		if ok {
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-fire:
		case <-wake:
		}
	}
}

// fireDueLocked handles every timer due at now and returns when the next
// one is due. A fired timer is gone, and any timer it arms is due later
// than now, so the loop ends.
func (b *EvalBroker) fireDueLocked(now time.Time) (time.Time, bool) {
	for b.timers.Len() > 0 {
		t := b.timers.Peek()
		if t.due.After(now) {
			return t.due, true
		}
		b.timers.Pop()
		switch t.state {
		case stateDelayed:
			b.admitLocked(t)
		case stateWaiting:
			b.makeReady(t)
		case stateUnacked:
			b.retryLocked(t, now)
		}
	}
	return time.Time{}, false
}
