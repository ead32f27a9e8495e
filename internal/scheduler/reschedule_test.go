package scheduler

import (
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

func TestRescheduleDelay(t *testing.T) {
	sec := func(n int) caravan.Duration { return caravan.Duration(time.Duration(n) * time.Second) }
	tests := []struct {
		name    string
		policy  caravan.ReschedulePolicy
		earlier []int // reschedules before
		want    []time.Duration
	}{
		{"constant", caravan.ReschedulePolicy{Delay: sec(5), DelayFunction: caravan.DelayConstant},
			[]int{0, 1, 5}, []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second}},
		{"empty function is constant", caravan.ReschedulePolicy{Delay: sec(5)},
			[]int{0, 3}, []time.Duration{5 * time.Second, 5 * time.Second}},
		{"exponential doubles", caravan.ReschedulePolicy{Delay: sec(30), DelayFunction: caravan.DelayExponential},
			[]int{0, 1, 2, 3}, []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute}},
		{"exponential capped", caravan.ReschedulePolicy{Delay: sec(30), DelayFunction: caravan.DelayExponential, MaxDelay: sec(100)},
			[]int{1, 2, 30, 1000}, []time.Duration{time.Minute, 100 * time.Second, 100 * time.Second, 100 * time.Second}},
		{"exponential without cap saturates", caravan.ReschedulePolicy{Delay: sec(30), DelayFunction: caravan.DelayExponential},
			[]int{200}, []time.Duration{time.Duration(1<<63 - 1)}},
		{"fibonacci", caravan.ReschedulePolicy{Delay: sec(10), DelayFunction: caravan.DelayFibonacci},
			[]int{0, 1, 2, 3, 4, 5}, []time.Duration{10 * time.Second, 10 * time.Second, 20 * time.Second, 30 * time.Second, 50 * time.Second, 80 * time.Second}},
		{"fibonacci capped", caravan.ReschedulePolicy{Delay: sec(10), DelayFunction: caravan.DelayFibonacci, MaxDelay: sec(25)},
			[]int{2, 3, 100}, []time.Duration{20 * time.Second, 25 * time.Second, 25 * time.Second}},
		{"zero delay stays zero", caravan.ReschedulePolicy{DelayFunction: caravan.DelayExponential},
			[]int{0, 10}, []time.Duration{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []time.Duration
			for _, n := range tt.earlier {
				got = append(got, rescheduleDelay(&tt.policy, n))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("delays (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideReschedule(t *testing.T) {
	now := testNow
	events := func(ago ...time.Duration) *caravan.RescheduleTracker {
		tr := &caravan.RescheduleTracker{}
		for _, d := range ago {
			tr.Events = append(tr.Events, caravan.RescheduleEvent{Time: now.Add(-d)})
		}
		return tr
	}
	limited := &caravan.ReschedulePolicy{Attempts: 2, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(time.Minute)}
	unlimited := &caravan.ReschedulePolicy{Unlimited: true, Delay: caravan.Duration(time.Minute), DelayFunction: caravan.DelayExponential}
	tests := []struct {
		name    string
		policy  *caravan.ReschedulePolicy
		failed  time.Duration // ago
		tracker *caravan.RescheduleTracker
		modify  time.Duration // ModifyTime ago, used when there is no task finish
		want    rescheduleDecision
	}{
		{"no policy never", nil, time.Hour, nil, 0, rescheduleDecision{}},
		{"zero attempts never", &caravan.ReschedulePolicy{Interval: caravan.Duration(time.Hour)}, time.Hour, nil, 0, rescheduleDecision{}},
		{"due now", limited, 2 * time.Minute, nil, 0,
			rescheduleDecision{kind: rescheduleNow, delay: time.Minute, at: now.Add(-time.Minute)}},
		{"due exactly now", limited, time.Minute, nil, 0,
			rescheduleDecision{kind: rescheduleNow, delay: time.Minute, at: now}},
		{"later", limited, 10 * time.Second, nil, 0,
			rescheduleDecision{kind: rescheduleLater, delay: time.Minute, at: now.Add(50 * time.Second)}},
		{"attempts used up within the interval", limited, time.Hour, events(10*time.Minute, 20*time.Minute), 0, rescheduleDecision{}},
		{"attempts outside the interval do not count", limited, time.Hour, events(2*time.Hour, 3*time.Hour),
			0, rescheduleDecision{kind: rescheduleNow, delay: time.Minute, at: now.Add(-59 * time.Minute)}},
		{"unlimited ignores attempts, the delay grows", unlimited, 3 * time.Minute, events(time.Hour, 2*time.Hour),
			0, rescheduleDecision{kind: rescheduleLater, delay: 4 * time.Minute, at: now.Add(time.Minute)}},
		{"fail time falls back to the modify time", limited, -1, nil, 30 * time.Second,
			rescheduleDecision{kind: rescheduleLater, delay: time.Minute, at: now.Add(30 * time.Second)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &caravan.Allocation{ClientStatus: caravan.AllocClientFailed, RescheduleTracker: tt.tracker, ModifyTime: now.Add(-tt.modify)}
			if tt.failed >= 0 {
				a.TaskStates = map[string]*caravan.TaskState{
					"a": {FinishedAt: now.Add(-tt.failed - time.Hour)},
					"b": {FinishedAt: now.Add(-tt.failed)},
					"c": nil,
				}
			}
			got := decideReschedule(tt.policy, a, now)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(rescheduleDecision{})); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTrackerIsBounded(t *testing.T) {
	prev := &caravan.Allocation{ID: "p", RescheduleTracker: &caravan.RescheduleTracker{}}
	for i := range 3 * maxTrackerEvents {
		prev.RescheduleTracker.Events = append(prev.RescheduleTracker.Events, caravan.RescheduleEvent{PrevAllocID: string(rune('a' + i%26))})
	}
	tr := newTracker(&placement{prev: prev, carryTracker: true, event: &caravan.RescheduleEvent{PrevAllocID: "last"}})
	if len(tr.Events) != maxTrackerEvents || tr.Events[len(tr.Events)-1].PrevAllocID != "last" {
		t.Errorf("tracker has %d events, last %+v", len(tr.Events), tr.Events[len(tr.Events)-1])
	}
	if newTracker(&placement{prev: &caravan.Allocation{}}) != nil {
		t.Errorf("a replacement without history got a tracker")
	}
}
