package server

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// monitorLeadership starts the leader's duties when Raft makes this server
// leader and stops them when it stops being one.
func (s *Server) monitorLeadership(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case isLeader := <-s.raft.leaderCh:
			if isLeader {
				s.establishLeadership(ctx)
			} else {
				s.revokeLeadership()
			}
		}
	}
}

// establishLeadership starts the leader's duties under a context that
// revokeLeadership cancels.
func (s *Server) establishLeadership(parent context.Context) {
	s.leaderMu.Lock()
	defer s.leaderMu.Unlock()
	if s.leaderCancel != nil {
		return // already leading
	}
	ctx, cancel := context.WithCancel(parent)
	done := make(chan struct{})
	s.leaderCancel, s.leaderDone = cancel, done
	s.logger.Info("became leader")
	go func() {
		defer close(done)
		if err := s.lead(ctx); err != nil && ctx.Err() == nil {
			s.logger.Error("leader duties stopped", "error", err)
		}
	}()
}

// revokeLeadership stops the leader's duties and waits for them to end.
func (s *Server) revokeLeadership() {
	s.leaderMu.Lock()
	cancel, done := s.leaderCancel, s.leaderDone
	s.leaderCancel, s.leaderDone = nil, nil
	s.leaderMu.Unlock()
	if cancel == nil {
		return
	}
	s.logger.Info("leadership lost")
	cancel()
	<-done
}

// lead runs the leader's duties until ctx ends.
func (s *Server) lead(ctx context.Context) error {
	// Make sure every entry of earlier terms is applied before reading
	// state to refill the queues.
	if err := s.raft.raft.Barrier(time.Minute).Error(); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	s.evalBroker.SetEnabled(true)
	s.blocked.SetEnabled(true)
	s.planQueue.SetEnabled(true)
	defer func() {
		s.planQueue.SetEnabled(false)
		s.blocked.SetEnabled(false)
		s.evalBroker.SetEnabled(false)
		s.heartbeats.clearAll()
	}()

	// Subscribe to state changes before reading state, so nothing written
	// in between is missed (duplicates are harmless: the queues ignore
	// evaluations they hold, and the watcher re-checks state).
	sub, err := s.subscribeEvalChanges()
	if err != nil {
		return err
	}
	defer sub.Close()
	snap := s.store.Snapshot()
	if err := s.restoreQueues(snap); err != nil {
		return err
	}
	if err := s.recordSelf(ctx, snap); err != nil {
		s.logger.Warn("record this server in the members table", "error", err)
	}
	s.armHeartbeats(snap)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.watchEvalChanges(ctx, sub) })
	for i := 0; i < s.numWorkers(); i++ {
		w := &worker{s: s, id: i}
		g.Go(func() error { return w.run(ctx) })
	}
	g.Go(func() error { return s.runPlanApplier(ctx) })
	g.Go(func() error { return s.reapFailedEvals(ctx) })
	g.Go(func() error { return s.reapCancelableEvals(ctx) })
	g.Go(func() error { return s.runDrainer(ctx) })
	g.Go(func() error { return s.runGC(ctx) })
	return g.Wait()
}

// restoreQueues refills the broker and the blocked set from state.
func (s *Server) restoreQueues(snap *state.Snapshot) error {
	evals, err := snap.Evals(state.ListOptions{})
	if err != nil {
		return err
	}
	var pending []*caravan.Evaluation
	blocked := 0
	for e := range evals {
		switch e.Status {
		case caravan.EvalStatusPending:
			pending = append(pending, e)
		case caravan.EvalStatusBlocked:
			s.blocked.Block(e)
			blocked++
		}
	}
	s.evalBroker.EnqueueAll(pending)
	// Capacity may have changed while no leader watched: try the blocked
	// ones once.
	s.blocked.UnblockAll(snap.Index())
	s.logger.Info("restored evaluation queues", "pending", len(pending), "blocked", blocked)
	return nil
}

// armHeartbeats gives every live node a fresh TTL: it may have been
// heartbeating to the old leader.
func (s *Server) armHeartbeats(snap *state.Snapshot) {
	nodes, err := snap.Nodes()
	if err != nil {
		s.logger.Error("list nodes for heartbeats", "error", err)
		return
	}
	n := 0
	for _, node := range nodes {
		if node.Status == caravan.NodeStatusDown {
			continue
		}
		s.heartbeats.arm(node.ID, s.heartbeats.ttl())
		n++
	}
	if n > 0 {
		s.logger.Info("armed heartbeat timers", "nodes", n)
	}
}

// recordSelf writes this server into the members table, so followers can
// find the leader's HTTP address.
func (s *Server) recordSelf(ctx context.Context, snap *state.Snapshot) error {
	me := state.ServerMember{ID: s.cfg.Name, RaftAddr: s.cfg.AdvertiseRaft(), HTTPAddr: s.cfg.AdvertiseHTTP()}
	members, err := snap.Servers()
	if err != nil {
		return err
	}
	for _, m := range members {
		if *m == me {
			return nil
		}
	}
	_, err = s.apply(ctx, fsm.ServerMember, &fsm.ServerMemberRequest{Time: time.Now(), Member: me})
	return err
}

// reapFailedEvals marks evaluations the broker gave up on as failed, with a
// follow-up evaluation a minute later so the job is not forgotten.
func (s *Server) reapFailedEvals(ctx context.Context) error {
	for {
		failed, err := s.evalBroker.WaitFailed(ctx, 100)
		if err != nil {
			return nil // disabled or ctx ended
		}
		now := time.Now()
		var updates []*caravan.Evaluation
		for _, e := range failed {
			c := e.Copy()
			c.Status = caravan.EvalStatusFailed
			c.StatusDescription = "evaluation reached the delivery limit"
			c.ModifyTime = now
			follow := s.newEval(e.JobID, e.Type, e.Priority, e.NodePool, caravan.TriggerRetryFailed, now)
			follow.PreviousEval = e.ID
			follow.WaitUntil = now.Add(time.Minute)
			follow.SubmitTime = e.SubmitTime
			c.NextEval = follow.ID
			updates = append(updates, c, follow)
		}
		if _, err := s.apply(ctx, fsm.EvalUpsert, &fsm.EvalUpsertRequest{Time: now, Evals: updates}); err != nil {
			s.logger.Error("mark failed evaluations", "error", err)
		}
	}
}

// reapCancelableEvals marks evaluations made moot by newer ones cancelled.
func (s *Server) reapCancelableEvals(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, wait := range []func(context.Context, int) ([]*caravan.Evaluation, error){
		s.evalBroker.WaitCancelable, s.blocked.WaitCancelable,
	} {
		g.Go(func() error {
			for {
				evals, err := wait(ctx, 500)
				if err != nil {
					return nil
				}
				now := time.Now()
				updates := make([]*caravan.Evaluation, 0, len(evals))
				for _, e := range evals {
					c := e.Copy()
					c.Status = caravan.EvalStatusCancelled
					c.StatusDescription = "superseded by a newer evaluation of the job"
					c.ModifyTime = now
					updates = append(updates, c)
				}
				if _, err := s.apply(ctx, fsm.EvalUpsert, &fsm.EvalUpsertRequest{Time: now, Evals: updates}); err != nil {
					s.logger.Warn("mark cancelled evaluations", "error", err)
				}
			}
		})
	}
	return g.Wait()
}

// newEval makes a pending evaluation for a job.
func (s *Server) newEval(jobID, jobType string, priority int, pool, trigger string, now time.Time) *caravan.Evaluation {
	return &caravan.Evaluation{
		ID:          caravan.NewID(),
		Priority:    priority,
		Type:        jobType,
		TriggeredBy: trigger,
		JobID:       jobID,
		NodePool:    pool,
		Status:      caravan.EvalStatusPending,
		SubmitTime:  now,
		CreateTime:  now,
		ModifyTime:  now,
	}
}

// evalFor makes a pending evaluation for job.
func (s *Server) evalFor(job *caravan.Job, trigger string, now time.Time) *caravan.Evaluation {
	e := s.newEval(job.ID, job.Type, job.Priority, job.NodePool, trigger, now)
	e.JobModifyIndex = job.JobModifyIndex
	if !job.SubmitTime.IsZero() {
		e.SubmitTime = job.SubmitTime // waiting work is served in submit order
	}
	return e
}
