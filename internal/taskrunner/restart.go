package taskrunner

import (
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// RestartWindow is the part of the restart policy's bookkeeping that is
// persisted: how many restarts the current interval has seen, and when it
// began.
type RestartWindow struct {
	Count int       `json:"count"`
	Start time.Time `json:"start,omitzero"`
}

// decision is what the restart policy says after a run ended.
type decision struct {
	restart bool
	delay   time.Duration
	// reason explains a refusal (not_restarting) or the delay.
	reason string
}

// restartPolicy applies a group's restart policy to one task. It is a
// pure function of its inputs and the window it keeps.
//
//   - A batch task that exits 0 is complete and never restarted.
//   - A task stopped by its time limit is never restarted.
//   - Any other end (a failure, OOM, a driver failure, or a service task
//     exiting at all) is restarted after Delay, at most Attempts times per
//     Interval. The interval starts at the first restart.
//   - Out of attempts, mode fail gives up; mode delay waits for the
//     interval to end (at least Delay), and the restart opens a new
//     interval in which it is the first.
type restartPolicy struct {
	policy caravan.RestartPolicy
	batch  bool
	window RestartWindow
}

// decide applies the policy to how a run ended; res is nil when the task
// could not be started.
func (p *restartPolicy) decide(now time.Time, res *driver.ExitResult) decision {
	if res != nil {
		switch {
		case res.TimedOut:
			return decision{reason: "time limit reached"}
		case res.Successful() && p.batch:
			return decision{reason: "batch task completed"}
		}
	}
	interval, delay := p.policy.Interval.D(), p.policy.Delay.D()
	if p.window.Start.IsZero() || interval > 0 && now.Sub(p.window.Start) >= interval {
		p.window = RestartWindow{Start: now}
	}
	if p.window.Count < p.policy.Attempts {
		p.window.Count++
		return decision{restart: true, delay: delay}
	}
	if p.policy.Mode != caravan.RestartModeDelay {
		return decision{reason: fmt.Sprintf("exceeded %d restart attempts in %s", p.policy.Attempts, intervalText(interval))}
	}
	wait := delay
	if interval > 0 {
		wait = max(delay, p.window.Start.Add(interval).Sub(now))
	}
	p.window = RestartWindow{Count: 1, Start: now.Add(wait)}
	return decision{restart: true, delay: wait, reason: fmt.Sprintf("exceeded %d restart attempts in %s; waiting for the interval to end", p.policy.Attempts, intervalText(interval))}
}

func intervalText(d time.Duration) string {
	if d <= 0 {
		return "the task's life"
	}
	return d.String()
}
