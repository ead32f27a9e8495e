package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/fsm"
)

// defaultApplyTimeout bounds a Raft apply whose context has no deadline.
const defaultApplyTimeout = 30 * time.Second

// apply commits one command through Raft and returns the FSM's response.
// It returns only once the entry is committed and applied on this server,
// so a write acknowledged to a client is durable on a quorum. Writes are
// only taken by the leader: others get caravan.ErrNotLeader (the HTTP layer
// forwards them).
func (s *Server) apply(ctx context.Context, t fsm.MessageType, req any) (*fsm.Response, error) {
	if s.raft.raft.State() != raft.Leader {
		return nil, fmt.Errorf("%s: %w", t, caravan.ErrNotLeader)
	}
	buf, err := fsm.Encode(t, req)
	if err != nil {
		return nil, err
	}
	timeout := defaultApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, fmt.Errorf("%s: %w", t, context.DeadlineExceeded)
		}
	}
	start := time.Now()
	f := s.raft.raft.Apply(buf, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return nil, fmt.Errorf("%s: %w: %v", t, caravan.ErrNotLeader, err)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, fmt.Errorf("%s: %w: %v", t, caravan.ErrUnavailable, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			return nil, fmt.Errorf("%s: %w: %v", t, caravan.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("raft apply %s: %w", t, err)
	}
	s.counters.observeApply(t, time.Since(start), len(buf))
	switch r := f.Response().(type) {
	case error:
		return nil, r
	case *fsm.Response:
		return r, nil
	default:
		return nil, fmt.Errorf("raft apply %s: unexpected response %T", t, r)
	}
}
