package broker

import (
	"context"
	"sync"

	"github.com/caravan-sched/caravan"
)

// PendingPlan is a plan waiting in the PlanQueue and, for its submitter, the
// future of its result.
type PendingPlan struct {
	// Plan is what the scheduler submitted; the applier must not modify it.
	Plan *caravan.Plan

	// ctx is the submitter's request: a plan whose submitter gave up
	// before the applier took it is not applied.
	ctx  context.Context
	seq  uint64
	once sync.Once
	done chan struct{}
	// result and err are written once, before done is closed.
	result *caravan.PlanResult
	err    error
}

// Respond answers the submitter. Only the first answer counts; later ones
// and answers to a nil PendingPlan are ignored.
func (p *PendingPlan) Respond(result *caravan.PlanResult, err error) {
	if p == nil {
		return
	}
	p.once.Do(func() {
		p.result, p.err = result, err
		close(p.done)
	})
}

// Wait blocks until the applier responds or ctx ends.
func (p *PendingPlan) Wait(ctx context.Context) (*caravan.PlanResult, error) {
	if p == nil {
		return nil, caravan.Invalidf("plan", "no pending plan")
	}
	select {
	case <-p.done:
		return p.result, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// PlanQueue holds the plans that scheduler workers submit until the single
// plan applier takes them, in batches, by priority and then arrival. It is
// safe for concurrent use and needs no goroutine of its own.
type PlanQueue struct {
	gate
	plans   *heapOf[*PendingPlan]
	seq     uint64
	readyCh signal
}

// NewPlanQueue returns a disabled queue; the server enables it when it
// gains leadership.
func NewPlanQueue() *PlanQueue {
	return &PlanQueue{plans: newHeap(planBefore)}
}

func planBefore(a, b *PendingPlan) bool {
	if a.Plan.Priority != b.Plan.Priority {
		return a.Plan.Priority > b.Plan.Priority
	}
	return a.seq < b.seq
}

// SetEnabled turns the queue on or off with leadership. Turning it off
// answers every waiting plan with ErrDisabled and fails a waiting
// DequeueBatch with it.
func (q *PlanQueue) SetEnabled(on bool) {
	q.mu.Lock()
	if q.enabled == on {
		q.mu.Unlock()
		return
	}
	q.enabled = on
	var dropped []*PendingPlan
	if !on {
		q.epoch++
		dropped = q.plans.items
		q.plans.Clear()
		q.readyCh.broadcast()
	}
	q.mu.Unlock()
	for _, p := range dropped {
		p.Respond(nil, ErrDisabled)
	}
}

// Enqueue adds a plan for the applier and returns the future of its result.
// ctx is the submitter's request: when it ends before the applier takes the
// plan, the plan is dropped and answered with ctx's error.
func (q *PlanQueue) Enqueue(ctx context.Context, plan *caravan.Plan) (*PendingPlan, error) {
	if plan == nil {
		return nil, caravan.Invalidf("plan", "no plan")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.enabled {
		return nil, ErrDisabled
	}
	q.seq++
	p := &PendingPlan{Plan: plan, ctx: ctx, seq: q.seq, done: make(chan struct{})}
	q.plans.Push(p)
	q.readyCh.broadcast()
	return p, nil
}

// DequeueBatch blocks until plans wait, then takes up to limit of them (all
// when limit < 1), best first, for the applier to check one after another and
// commit in one Raft entry. The applier must Respond to each.
func (q *PlanQueue) DequeueBatch(ctx context.Context, limit int) ([]*PendingPlan, error) {
	var batch, gone []*PendingPlan
	err := q.await(ctx, func() (<-chan struct{}, bool) {
		for q.plans.Len() > 0 && (limit < 1 || len(batch) < limit) {
			p := q.plans.Pop()
			if p.ctx.Err() != nil {
				gone = append(gone, p)
				continue
			}
			batch = append(batch, p)
		}
		if len(batch) > 0 {
			return nil, true
		}
		return q.readyCh.wait(), false
	})
	for _, p := range gone {
		p.Respond(nil, p.ctx.Err())
	}
	if err != nil {
		return nil, err
	}
	return batch, nil
}

// PlanQueueStats counts what the plan queue holds.
type PlanQueueStats struct {
	// Depth is the number of plans waiting for the applier.
	Depth int `json:"depth"`
}

// Stats returns the current counts.
func (q *PlanQueue) Stats() PlanQueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return PlanQueueStats{Depth: q.plans.Len()}
}
