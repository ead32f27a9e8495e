package server

import (
	"context"
	"fmt"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
)

// The leader learns of every evaluation written (by any endpoint, by a
// plan, by the FSM) and of every change of capacity from the state store's
// event stream. Reading the stream decouples the FSM from the leader's
// queues; when the leader falls behind and is cut off, it re-reads state,
// which is always the truth.

// leaderSubscriptionBuffer bounds the events the leader may fall behind by
// before it re-reads state instead.
const leaderSubscriptionBuffer = 1 << 18

func (s *Server) subscribeEvalChanges() (*events.Subscription, error) {
	sub, err := s.events.Subscribe(events.SubscribeRequest{
		Filter: events.Filter{
			events.TopicEvaluation: nil, events.TopicAllocation: nil, events.TopicNode: nil,
		},
		BufferSize: leaderSubscriptionBuffer,
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to state changes: %w", err)
	}
	return sub, nil
}

// watchEvalChanges feeds pending evaluations to the broker, blocked ones to
// the blocked set, and capacity changes (allocations that ended, nodes
// that became ready) to the blocked set.
func (s *Server) watchEvalChanges(ctx context.Context, sub *events.Subscription) error {
	for {
		evs, err := sub.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// Cut off: re-read state, then subscribe again.
			s.logger.Warn("leader fell behind the state events; re-reading state", "error", err)
			sub.Close()
			if sub, err = s.subscribeEvalChanges(); err != nil {
				return err
			}
			if err := s.restoreQueues(s.store.Snapshot()); err != nil {
				return err
			}
			continue
		}
		s.handleStateEvents(evs)
	}
}

func (s *Server) handleStateEvents(evs []events.Event) {
	snap := s.store.Snapshot()
	pools := map[string]uint64{}
	var pending []*caravan.Evaluation
	for _, ev := range evs {
		switch p := ev.Payload.(type) {
		case *caravan.Evaluation:
			if ev.Type == events.EvaluationDeleted {
				continue
			}
			// The event may be older than state: act on what state says now.
			cur, err := snap.EvalByID(p.ID)
			if err != nil {
				continue
			}
			switch cur.Status {
			case caravan.EvalStatusPending:
				pending = append(pending, cur)
			case caravan.EvalStatusBlocked:
				s.blocked.Block(cur)
			}
		case *caravan.Allocation:
			if ev.Type != events.AllocationCreated && p.Terminal() {
				if node, err := snap.Node(p.NodeID); err == nil {
					pools[node.NodePool] = ev.Index
				}
			}
		case *caravan.Node:
			if p.Ready() {
				pools[p.NodePool] = ev.Index
			}
		}
	}
	if len(pending) > 0 {
		s.evalBroker.EnqueueAll(pending)
	}
	for pool, index := range pools {
		s.blocked.Unblock(pool, index)
	}
}
