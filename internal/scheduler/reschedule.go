package scheduler

import (
	"time"

	"github.com/caravan-sched/caravan"
)

// maxTrackerEvents bounds the reschedule history an allocation carries.
const maxTrackerEvents = 32

// rescheduleKind is what happens to a failed allocation.
type rescheduleKind uint8

const (
	rescheduleNever rescheduleKind = iota // out of attempts: it stays failed
	rescheduleNow                         // replace it in this plan
	rescheduleLater                       // a delayed evaluation replaces it
)

// rescheduleDecision says whether, when and after what delay a failed
// allocation is replaced.
type rescheduleDecision struct {
	kind  rescheduleKind
	delay time.Duration
	at    time.Time
}

// decideReschedule applies policy to the failed allocation a at now.
//
// Attempts are the reschedules in a's tracker within the policy's interval
// before now (all of them when the interval is 0); Unlimited ignores them.
// The delay grows with those earlier reschedules: constant stays at delay,
// exponential doubles, fibonacci adds the two before; max_delay caps it.
// The replacement is due at the fail time plus the delay.
func decideReschedule(policy *caravan.ReschedulePolicy, a *caravan.Allocation, now time.Time) rescheduleDecision {
	if policy == nil {
		return rescheduleDecision{}
	}
	earlier := recentReschedules(a.RescheduleTracker, policy.Interval.D(), now)
	if !policy.Unlimited && (policy.Attempts <= 0 || earlier >= policy.Attempts) {
		return rescheduleDecision{}
	}
	d := rescheduleDelay(policy, earlier)
	at := failTime(a).Add(d)
	if !now.Before(at) {
		return rescheduleDecision{kind: rescheduleNow, delay: d, at: at}
	}
	return rescheduleDecision{kind: rescheduleLater, delay: d, at: at}
}

// recentReschedules counts the tracker's events within interval before now
// (every event when interval is 0).
func recentReschedules(t *caravan.RescheduleTracker, interval time.Duration, now time.Time) int {
	if t == nil {
		return 0
	}
	if interval <= 0 {
		return len(t.Events)
	}
	from := now.Add(-interval)
	n := 0
	for _, e := range t.Events {
		if e.Time.After(from) {
			n++
		}
	}
	return n
}

// rescheduleDelay is the delay before reschedule number earlier+1.
func rescheduleDelay(p *caravan.ReschedulePolicy, earlier int) time.Duration {
	base := max(p.Delay.D(), 0)
	limit := p.MaxDelay.D()
	if limit <= 0 {
		limit = time.Duration(1<<63 - 1)
	}
	d := base
	switch p.DelayFunction {
	case caravan.DelayExponential:
		for i := 0; i < earlier && d < limit && d > 0; i++ {
			d = saturatingAdd(d, d)
		}
	case caravan.DelayFibonacci:
		prev := base
		for i := 1; i < earlier && d < limit && d > 0; i++ {
			prev, d = d, saturatingAdd(prev, d)
		}
	}
	return min(d, limit)
}

func saturatingAdd(a, b time.Duration) time.Duration {
	if s := a + b; s >= a {
		return s
	}
	return time.Duration(1<<63 - 1)
}

// failTime is when the allocation failed: the latest finish of its tasks,
// else its last modification.
func failTime(a *caravan.Allocation) time.Time {
	var t time.Time
	for _, ts := range a.TaskStates {
		if ts != nil && ts.FinishedAt.After(t) {
			t = ts.FinishedAt
		}
	}
	if t.IsZero() {
		return a.ModifyTime
	}
	return t
}

// newTracker builds the replacement's reschedule tracker: prev's events
// (when carried), plus this reschedule's event, the newest kept.
func newTracker(p *placement) *caravan.RescheduleTracker {
	var events []caravan.RescheduleEvent
	if p.carryTracker && p.prev.RescheduleTracker != nil {
		events = append(events, p.prev.RescheduleTracker.Events...)
	}
	if p.event != nil {
		events = append(events, *p.event)
	}
	if len(events) == 0 {
		return nil
	}
	if n := len(events); n > maxTrackerEvents {
		events = events[n-maxTrackerEvents:]
	}
	return &caravan.RescheduleTracker{Events: events}
}

// delayedEval returns the evaluation that replaces failed allocations at
// the time at, creating it on first use.
func (c *evalCtx) delayedEval(at time.Time) *caravan.Evaluation {
	for _, e := range c.delayed {
		if e.WaitUntil.Equal(at) {
			return e
		}
	}
	e := c.newEval(caravan.EvalStatusPending, caravan.TriggerReschedule)
	e.WaitUntil = at
	e.StatusDescription = descRescheduleEvl
	c.delayed = append(c.delayed, e)
	return e
}
