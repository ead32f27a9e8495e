package taskrunner

import (
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

func TestRestartPolicyDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	failed := &driver.ExitResult{ExitCode: 1}
	ok := &driver.ExitResult{}
	type step struct {
		at      time.Duration
		res     *driver.ExitResult
		restart bool
		delay   time.Duration
	}
	tests := []struct {
		name   string
		policy caravan.RestartPolicy
		batch  bool
		steps  []step
	}{
		{
			name:   "fail mode counts attempts in the interval",
			policy: caravan.RestartPolicy{Attempts: 2, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(5 * time.Second), Mode: caravan.RestartModeFail},
			steps: []step{
				{0, failed, true, 5 * time.Second},
				{10 * time.Second, failed, true, 5 * time.Second},
				{20 * time.Second, failed, false, 0},
			},
		},
		{
			name:   "a new interval starts the count again",
			policy: caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail},
			steps: []step{
				{0, failed, true, time.Second},
				{time.Minute, failed, true, time.Second},
				{time.Minute + time.Second, failed, false, 0},
			},
		},
		{
			name:   "delay mode waits for the interval's end",
			policy: caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeDelay},
			steps: []step{
				{0, failed, true, time.Second},
				{10 * time.Second, failed, true, 50 * time.Second},
				// The delayed restart was the first of the new interval.
				{70 * time.Second, failed, true, 50 * time.Second},
			},
		},
		{
			name:   "batch success is final, service success restarts",
			policy: caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail},
			batch:  true,
			steps:  []step{{0, ok, false, 0}},
		},
		{
			name:   "service success restarts",
			policy: caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail},
			steps:  []step{{0, ok, true, time.Second}},
		},
		{
			name:   "a timeout is never restarted",
			policy: caravan.RestartPolicy{Attempts: 5, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeDelay},
			steps:  []step{{0, &driver.ExitResult{TimedOut: true, ExitCode: 143}, false, 0}},
		},
		{
			name:   "a start failure counts",
			policy: caravan.RestartPolicy{Attempts: 1, Interval: caravan.Duration(time.Minute), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail},
			steps:  []step{{0, nil, true, time.Second}, {2 * time.Second, nil, false, 0}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := restartPolicy{policy: tc.policy, batch: tc.batch}
			for i, s := range tc.steps {
				d := p.decide(t0.Add(s.at), s.res)
				if d.restart != s.restart || d.delay != s.delay {
					t.Errorf("step %d: restart %v after %s, want %v after %s (%s)", i, d.restart, d.delay, s.restart, s.delay, d.reason)
				}
				if !d.restart && d.reason == "" {
					t.Errorf("step %d: no reason for not restarting", i)
				}
			}
		})
	}
}
