package server

import (
	"context"
	"fmt"
	"sync"

	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// Job registrations are committed in batches, as plans are: the
// registrations that arrive while earlier ones are being committed go
// together into one JobRegisterBatch entry, which the state store writes in
// one transaction. Thousands of small jobs then cost a few hundred Raft
// entries and transactions instead of one each.
//
// There is no goroutine of its own. A caller that finds fewer than
// maxRegisterCommits batches in flight commits at once: its own
// registration and whatever waits in the queue. Otherwise it waits in the
// queue until a committer answers it, or hands it the next commit:
//
//	register ──▶ commits in flight < max ──▶ commit own + queued ──▶ answer them
//	   │                                          ▲                     │
//	   └──▶ queue ──▶ wait ──▶ handed the commit ─┘   queue not empty: hand the
//	                    │                             next commit to its first
//	                    └──▶ answered
type registrations struct {
	mu       sync.Mutex
	queue    []*registration
	inFlight int
}

// maxRegisterCommits bounds the batches of registrations in flight: two,
// so Raft writes one batch to its log while the state store applies the
// one before.
const maxRegisterCommits = 2

// maxRegisterBatch bounds the registrations in one entry.
const maxRegisterBatch = 512

// registration is one caller's registration and, once committed, its
// outcome.
type registration struct {
	req   fsm.JobRegisterRequest
	out   state.RegisteredJob
	index uint64
	err   error
	// done is closed when the registration is answered, or when its caller
	// is handed the next commit (commit true).
	done   chan struct{}
	commit bool
}

// registerJob commits one registration, batched with others, and returns
// what the state store wrote and the Raft index of the entry.
func (s *Server) registerJob(ctx context.Context, req fsm.JobRegisterRequest) (state.RegisteredJob, uint64, error) {
	q := &s.registrations
	r := &registration{req: req, done: make(chan struct{})}
	q.mu.Lock()
	if q.inFlight < maxRegisterCommits {
		q.inFlight++
	} else {
		q.queue = append(q.queue, r)
		q.mu.Unlock()
		<-r.done
		if !r.commit {
			return r.out, r.index, r.err
		}
		q.mu.Lock()
	}
	batch := q.take(r)
	q.mu.Unlock()

	// The commit serves every caller in the batch: it must not end with
	// this caller's request.
	s.commitRegistrations(context.WithoutCancel(ctx), batch)

	q.mu.Lock()
	if len(q.queue) == 0 {
		q.inFlight--
		q.mu.Unlock()
	} else {
		next := q.queue[0]
		q.queue[0] = nil
		q.queue = q.queue[1:]
		next.commit = true
		q.mu.Unlock()
		close(next.done)
	}
	return r.out, r.index, r.err
}

// take returns own and the registrations first in the queue, up to
// maxRegisterBatch, and removes them from the queue. The caller holds
// q.mu.
func (q *registrations) take(own *registration) []*registration {
	n := min(len(q.queue), maxRegisterBatch-1)
	batch := make([]*registration, 0, n+1)
	batch = append(batch, own)
	batch = append(batch, q.queue[:n]...)
	rest := q.queue[n:]
	if len(rest) == 0 {
		q.queue = q.queue[:0]
	} else {
		q.queue = append([]*registration(nil), rest...)
	}
	return batch
}

// commitRegistrations commits a batch in one entry and answers every
// registration in it but the first (its committer's own).
func (s *Server) commitRegistrations(ctx context.Context, batch []*registration) {
	req := &fsm.JobRegisterBatchRequest{Jobs: make([]fsm.JobRegisterRequest, len(batch))}
	for i, r := range batch {
		req.Jobs[i] = r.req
	}
	resp, err := s.apply(ctx, fsm.JobRegisterBatch, req)
	for i, r := range batch {
		switch {
		case err != nil:
			r.err = err
		case len(resp.Jobs) != len(batch):
			r.err = errBatchResponse(len(resp.Jobs), len(batch))
		default:
			r.out, r.index = resp.Jobs[i], resp.Index
		}
		if i > 0 {
			close(r.done)
		}
	}
}

func errBatchResponse(got, want int) error {
	return fmt.Errorf("raft apply %s: %d results for %d registrations", fsm.JobRegisterBatch, got, want)
}
