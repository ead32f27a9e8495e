package broker

import (
	"context"
	"slices"

	"github.com/caravan-sched/caravan"
)

// Enqueuer takes evaluations that are ready to be scheduled again. The
// EvalBroker implements it.
type Enqueuer interface {
	EnqueueAll(evals []*caravan.Evaluation)
}

var _ Enqueuer = (*EvalBroker)(nil)

// BlockedEvals keeps the evaluations that could not place everything until
// capacity changes in their node pool, at most one per job. It is safe for
// concurrent use and needs no goroutine of its own.
//
//	Block ──SnapshotIndex older than the pool's last capacity change──▶ broker at once
//	  │
//	  ▼
//	blocked (one per job; an older one becomes cancelable)
//	  │ Unblock(pool) / UnblockAll        │ Untrack(job)
//	  ▼                                   ▼
//	broker, as pending                  cancelable
type BlockedEvals struct {
	broker Enqueuer
	gate

	byJob map[string]*caravan.Evaluation            // job id → its blocked evaluation
	pools map[string]map[string]*caravan.Evaluation // pool → evaluation id → evaluation
	// capacity is the index of the last capacity change per pool; any
	// pool changed at allCapacity by UnblockAll.
	capacity    map[string]uint64
	allCapacity uint64
	cancel      evalList
}

// NewBlockedEvals returns a disabled set that hands unblocked evaluations
// to broker.
func NewBlockedEvals(broker Enqueuer) *BlockedEvals {
	b := &BlockedEvals{broker: broker}
	b.resetLocked()
	return b
}

func (b *BlockedEvals) resetLocked() {
	b.byJob = map[string]*caravan.Evaluation{}
	b.pools = map[string]map[string]*caravan.Evaluation{}
	b.capacity = map[string]uint64{}
	b.allCapacity = 0
	b.cancel.reset()
}

// SetEnabled turns the set on or off with leadership. Turning it off drops
// every blocked evaluation and fails waiting WaitCancelable calls with
// ErrDisabled; while disabled, Block does nothing.
func (b *BlockedEvals) SetEnabled(on bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.enabled == on {
		return
	}
	b.enabled = on
	if !on {
		b.epoch++
		b.resetLocked()
	}
}

// poolOf is the pool an evaluation waits on; no pool is the default pool.
func poolOf(name string) string {
	if name == "" {
		return caravan.DefaultNodePool
	}
	return name
}

// Block keeps eval until capacity changes in its node pool. The set keeps
// the pointer: the caller must not modify the evaluation afterwards. When
// its job already has a blocked evaluation, the newer of the two (by
// ModifyIndex, then CreateIndex) stays and the other becomes cancelable.
// When the pool's capacity changed after the evaluation's SnapshotIndex,
// the scheduler could not have seen that capacity, so the evaluation goes
// back to the broker at once. Nil, terminal and id-less evaluations are
// ignored, as is everything while disabled.
func (b *BlockedEvals) Block(eval *caravan.Evaluation) {
	if eval == nil || eval.ID == "" || eval.Terminal() {
		return
	}
	b.mu.Lock()
	if !b.enabled {
		b.mu.Unlock()
		return
	}
	pool := poolOf(eval.NodePool)
	if old, ok := b.byJob[eval.JobID]; ok && eval.JobID != "" {
		if old.ID == eval.ID {
			b.mu.Unlock()
			return
		}
		if !newer(eval, old) {
			b.cancel.push(eval)
			b.mu.Unlock()
			return
		}
		b.removeLocked(old)
		b.cancel.push(old)
	}
	if eval.SnapshotIndex < max(b.capacity[pool], b.allCapacity) {
		b.mu.Unlock()
		b.broker.EnqueueAll([]*caravan.Evaluation{asPending(eval)})
		return
	}
	if eval.JobID != "" {
		b.byJob[eval.JobID] = eval
	}
	if b.pools[pool] == nil {
		b.pools[pool] = map[string]*caravan.Evaluation{}
	}
	b.pools[pool][eval.ID] = eval
	b.mu.Unlock()
}

func (b *BlockedEvals) removeLocked(eval *caravan.Evaluation) {
	if b.byJob[eval.JobID] == eval {
		delete(b.byJob, eval.JobID)
	}
	pool := poolOf(eval.NodePool)
	delete(b.pools[pool], eval.ID)
	if len(b.pools[pool]) == 0 {
		delete(b.pools, pool)
	}
}

// Unblock reports a capacity change at Raft index in a node pool (a node
// became ready, an allocation stopped, a node's resources changed): every
// evaluation blocked on the pool goes back to the broker as pending, in
// priority and submit order.
func (b *BlockedEvals) Unblock(pool string, index uint64) {
	pool = poolOf(pool)
	b.mu.Lock()
	if !b.enabled {
		b.mu.Unlock()
		return
	}
	b.capacity[pool] = max(b.capacity[pool], index)
	var out []*caravan.Evaluation
	for _, e := range b.pools[pool] {
		out = append(out, e)
	}
	for _, e := range out {
		b.removeLocked(e)
	}
	b.mu.Unlock()
	b.release(out)
}

// UnblockAll sends every blocked evaluation back to the broker, as on a
// capacity change at index in every pool.
func (b *BlockedEvals) UnblockAll(index uint64) {
	b.mu.Lock()
	if !b.enabled {
		b.mu.Unlock()
		return
	}
	b.allCapacity = max(b.allCapacity, index)
	var out []*caravan.Evaluation
	for _, evals := range b.pools {
		for _, e := range evals {
			out = append(out, e)
		}
	}
	b.byJob = map[string]*caravan.Evaluation{}
	b.pools = map[string]map[string]*caravan.Evaluation{}
	b.mu.Unlock()
	b.release(out)
}

// release hands evaluations to the broker, outside the lock, best first.
func (b *BlockedEvals) release(evals []*caravan.Evaluation) {
	if len(evals) == 0 {
		return
	}
	slices.SortFunc(evals, compareEvals)
	for i, e := range evals {
		evals[i] = asPending(e)
	}
	b.broker.EnqueueAll(evals)
}

// asPending is a copy of a blocked evaluation to schedule again. Its stored
// status stays blocked until the worker that takes it writes the outcome.
func asPending(e *caravan.Evaluation) *caravan.Evaluation {
	c := e.Copy()
	c.Status = caravan.EvalStatusPending
	return c
}

// Untrack forgets the blocked evaluation of a job that was stopped or
// purged; it becomes cancelable.
func (b *BlockedEvals) Untrack(jobID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, ok := b.byJob[jobID]; ok && jobID != "" {
		b.removeLocked(e)
		b.cancel.push(e)
	}
}

// WaitCancelable blocks until blocked evaluations were replaced by a newer
// one of their job or untracked, then returns up to limit of them (all when
// limit < 1) and forgets them. The server marks them cancelled through Raft.
func (b *BlockedEvals) WaitCancelable(ctx context.Context, limit int) ([]*caravan.Evaluation, error) {
	var out []*caravan.Evaluation
	err := b.await(ctx, func() (<-chan struct{}, bool) {
		var wake <-chan struct{}
		out, wake = b.cancel.take(limit)
		return wake, out != nil
	})
	return out, err
}

// BlockedStats counts blocked evaluations.
type BlockedStats struct {
	Blocked int            `json:"blocked"`
	ByPool  map[string]int `json:"by_pool,omitempty"`
	// Cancelable wait for the server to drain them.
	Cancelable int `json:"cancelable"`
}

// Stats returns the current counts.
func (b *BlockedEvals) Stats() BlockedStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BlockedStats{Cancelable: len(b.cancel.items)}
	for pool, evals := range b.pools {
		if s.ByPool == nil {
			s.ByPool = map[string]int{}
		}
		s.ByPool[pool] = len(evals)
		s.Blocked += len(evals)
	}
	return s
}
