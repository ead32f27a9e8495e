package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/broker"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/scheduler"
	"github.com/caravan-sched/caravan/internal/state"
)

// maxPlanAttempts bounds how often a worker re-runs the scheduler for one
// evaluation whose plan only partly fit; after that the rest waits blocked.
const maxPlanAttempts = 5

var schedulerTypes = []string{caravan.JobTypeService, caravan.JobTypeBatch, caravan.JobTypeSystem}

// worker takes evaluations from the broker, runs the scheduler on a state
// snapshot and submits the plan to the plan applier.
//
//	Dequeue ──▶ snapshot ≥ eval index ──▶ scheduler.Compute ──▶ plan queue
//	                 ▲                                             │
//	                 └── partly committed: snapshot ≥ refresh ◀────┤
//	                                                               └── committed: Ack
type worker struct {
	s  *Server
	id int
}

func (w *worker) run(ctx context.Context) error {
	for {
		eval, token, err := w.s.evalBroker.Dequeue(ctx, schedulerTypes)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if errors.Is(err, broker.ErrDisabled) {
				return nil
			}
			w.s.logger.Warn("dequeue evaluation", "worker", w.id, "error", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		outcome := "acked"
		if err := w.process(ctx, eval, token); err != nil {
			outcome = "nacked"
			if ctx.Err() == nil {
				w.s.logger.Warn("evaluation failed; will retry", "eval", eval.ID, "job", eval.JobID, "error", err)
			}
			_ = w.s.evalBroker.Nack(eval.ID, token)
		} else if err := w.s.evalBroker.Ack(eval.ID, token); err != nil {
			outcome = "ack-failed"
			w.s.logger.Warn("ack evaluation", "eval", eval.ID, "error", err)
		}
		w.s.counters.evals.WithLabelValues(outcome).Inc()
	}
}

func (w *worker) process(ctx context.Context, eval *caravan.Evaluation, token string) error {
	snap, err := w.s.snapshotAtLeast(ctx, eval.ModifyIndex)
	if err != nil {
		return err
	}
	for attempt := 0; attempt < maxPlanAttempts; attempt++ {
		res, err := scheduler.Compute(snap, eval, scheduler.Options{
			Now:              time.Now(),
			Seed:             int64(attempt),
			DefaultAlgorithm: w.s.cfg.Server.DefaultAlgorithm,
		})
		if err != nil {
			return err
		}
		plan := res.Plan
		plan.EvalToken = token
		result, err := w.submit(ctx, eval, token, plan)
		if err != nil {
			return err
		}
		if full, _, _ := result.FullCommit(plan); full && result.RefreshIndex == 0 {
			return nil
		}
		if snap, err = w.s.snapshotAtLeast(ctx, result.RefreshIndex); err != nil {
			return err
		}
	}
	return w.giveUp(ctx, eval, snap.Index())
}

// submit sends the plan to the applier and waits for its result. The
// delivery's nack timer is paused while the plan waits in the queue.
func (w *worker) submit(ctx context.Context, eval *caravan.Evaluation, token string, plan *caravan.Plan) (*caravan.PlanResult, error) {
	if err := w.s.evalBroker.PauseNackTimeout(eval.ID, token); err != nil {
		return nil, fmt.Errorf("pause nack timeout: %w", err)
	}
	defer func() { _ = w.s.evalBroker.ResumeNackTimeout(eval.ID, token) }()
	pending, err := w.s.planQueue.Enqueue(ctx, plan)
	if err != nil {
		return nil, fmt.Errorf("submit plan: %w", err)
	}
	result, err := pending.Wait(ctx)
	if err != nil {
		return nil, fmt.Errorf("plan for evaluation %s: %w", eval.ID, err)
	}
	return result, nil
}

// giveUp completes an evaluation whose plans kept conflicting, leaving a
// blocked evaluation for what is left.
func (w *worker) giveUp(ctx context.Context, eval *caravan.Evaluation, snapshotIndex uint64) error {
	now := time.Now()
	done := eval.Copy()
	blocked := w.s.newEval(eval.JobID, eval.Type, eval.Priority, eval.NodePool, caravan.TriggerMaxPlans, now)
	blocked.Status = caravan.EvalStatusBlocked
	blocked.PreviousEval = eval.ID
	blocked.SubmitTime = eval.SubmitTime
	blocked.SnapshotIndex = snapshotIndex
	done.Status = caravan.EvalStatusComplete
	done.StatusDescription = fmt.Sprintf("plans conflicted %d times; the rest waits in evaluation %s", maxPlanAttempts, blocked.ID)
	done.BlockedEval = blocked.ID
	done.ModifyTime = now
	_, err := w.s.apply(ctx, fsm.EvalUpsert, &fsm.EvalUpsertRequest{Time: now, Evals: []*caravan.Evaluation{done, blocked}})
	return err
}

// snapshotAtLeast returns a state snapshot at index or newer. On the leader
// this is immediate: Raft applies an entry before its writer hears back.
func (s *Server) snapshotAtLeast(ctx context.Context, index uint64) (*state.Snapshot, error) {
	deadline := time.Now().Add(10 * time.Second)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if snap := s.store.Snapshot(); snap.Index() >= index {
			return snap, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("state did not reach index %d: %w", index, caravan.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
	}
}
