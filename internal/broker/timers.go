package broker

import (
	"context"
	"time"
)

// timerKind is what a timer item does when it is due.
type timerKind int

const (
	timerDelayed   timerKind = iota // WaitUntil reached: admit the evaluation
	timerRedeliver                  // redelivery delay over: ready again
	timerNack                       // nack deadline of a delivery
)

// timerItem is one entry of the broker's timer heap. Items are never
// removed early: an item whose evaluation moved on (acked, redelivered
// under a new token, deadline extended) is found stale when it is due and
// skipped.
type timerItem struct {
	at    time.Time
	t     *tracked
	kind  timerKind
	token string // timerNack: the delivery it belongs to
}

// pushTimer adds an item and wakes Run when it is the new earliest.
func (b *EvalBroker) pushTimer(it timerItem) {
	earliest := b.timers.Len() == 0 || it.at.Before(b.timers.Peek().at)
	b.timers.Push(it)
	if earliest {
		b.timerCh.broadcast()
	}
}

// Run drives the broker's timers: it releases delayed evaluations when
// their WaitUntil comes, makes nacked ones ready again after their delay,
// and treats deliveries that outlive the nack timeout as nacked. The server
// runs it for its whole life, enabled or not; it returns nil when ctx ends.
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

// fireDueLocked handles every item due at now and returns when the next
// one is due. Every item is popped once and what it pushes is due later
// than now, so the loop ends.
func (b *EvalBroker) fireDueLocked(now time.Time) (time.Time, bool) {
	for b.timers.Len() > 0 {
		if b.timers.Peek().at.After(now) {
			return b.timers.Peek().at, true
		}
		it := b.timers.Pop()
		t := it.t
		switch it.kind {
		case timerDelayed:
			if t.state == stateDelayed {
				b.admitLocked(t)
			}
		case timerRedeliver:
			if t.state == stateWaiting {
				b.makeReady(t)
			}
		case timerNack:
			if t.state == stateUnacked && t.token == it.token && !t.paused && !t.deadline.After(now) {
				b.retryLocked(t, now)
			}
		}
	}
	return time.Time{}, false
}
