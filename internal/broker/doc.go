// Package broker holds the leader's work queues: the evaluation broker that
// hands evaluations to scheduler workers, the blocked evaluations that wait
// for capacity, and the plan queue that feeds the plan applier.
//
// They live only on the Raft leader. The server enables them when it gains
// leadership and re-fills them from state (EvalBroker.EnqueueAll for pending
// evaluations, BlockedEvals.Block for blocked ones), and disables them when
// it loses it: everything held is dropped and every waiter fails with
// ErrDisabled. Nothing here is durable; the state store is the truth and the
// queues are rebuilt from it.
//
// An evaluation's way through the broker:
//
//	Enqueue ──WaitUntil in the future──▶ delayed ──due──┐
//	   │                                                 │
//	   └──────────────────────────────────────────┐      │
//	                                              ▼      ▼
//	                    another evaluation of the job in flight?
//	                       │ no                        │ yes
//	                       ▼                           ▼
//	                     ready ◀──job's eval done── pending (the newest per job;
//	                       │                         older ones become cancelable)
//	                       │ Dequeue: a token, a nack deadline
//	                       ▼
//	                    unacked ──Ack──▶ gone; the job's pending eval becomes ready
//	                       │
//	                       │ Nack, or no Ack before the nack timeout
//	                       ▼
//	            deliveries < limit ──yes──▶ waiting (growing delay) ──▶ ready
//	                       │ no
//	                       ▼
//	                    failed: the server drains them (WaitFailed), marks them
//	                    failed through Raft and may create a follow-up
//
// The broker's timers (nack timeouts, redelivery delays, WaitUntil) are
// driven by EvalBroker.Run, which the server runs for as long as it runs.
package broker

import "github.com/caravan-sched/caravan"

// Errors returned by the queues. They wrap the domain's sentinels, so
// errors.Is(err, caravan.ErrNotLeader) also holds for ErrDisabled and
// errors.Is(err, caravan.ErrConflict) for ErrNotOutstanding.
var (
	// ErrDisabled means the queue is disabled: this server is not (or no
	// longer) the leader.
	ErrDisabled error = &queueError{msg: "broker disabled: not the leader", kind: caravan.ErrNotLeader}
	// ErrNotOutstanding means an Ack, Nack or reset named an evaluation
	// that is not delivered under that token: it was acked already, its
	// delivery timed out and went to another worker, or it is unknown.
	ErrNotOutstanding error = &queueError{msg: "evaluation not outstanding under this token", kind: caravan.ErrConflict}
)

// queueError is a sentinel with its own message that matches a domain
// sentinel with errors.Is.
type queueError struct {
	msg  string
	kind error
}

func (e *queueError) Error() string { return e.msg }
func (e *queueError) Unwrap() error { return e.kind }
