package server

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// joinLoop asks the servers in server.join to add this one as a voter,
// retrying every retry_interval until one of them (or the leader they
// forward to) says yes. Joining again is harmless.
func (s *Server) joinLoop(ctx context.Context) error {
	req := &caravan.JoinRequest{ID: s.cfg.Name, RaftAddr: s.cfg.AdvertiseRaft(), HTTPAddr: s.cfg.AdvertiseHTTP()}
	interval := config.Duration(s.cfg.Server.RetryInterval)
	for attempt := 1; ; attempt++ {
		for _, addr := range s.cfg.Server.Join {
			if addr == s.cfg.AdvertiseHTTP() {
				continue
			}
			c, err := api.New(api.Config{Addresses: []string{addr}})
			if err != nil {
				return err
			}
			callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = c.Join(callCtx, req)
			cancel()
			if err == nil {
				s.logger.Info("joined the cluster", "via", addr)
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			s.logger.Warn("join failed; will retry", "via", addr, "attempt", attempt, "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// Join adds a server to the Raft cluster as a voter and records its HTTP
// address. Only the leader can; others answer caravan.ErrNotLeader.
func (s *Server) Join(ctx context.Context, req *caravan.JoinRequest) (*caravan.IndexResponse, error) {
	if req == nil || req.ID == "" {
		return nil, caravan.Invalidf("id", "missing")
	}
	for _, a := range []struct{ field, addr string }{{"raft_addr", req.RaftAddr}, {"http_addr", req.HTTPAddr}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return nil, caravan.Invalidf(a.field, "%q is not host:port", a.addr)
		}
	}
	if !s.IsLeader() {
		return nil, fmt.Errorf("join: %w", caravan.ErrNotLeader)
	}
	timeout := 30 * time.Second
	if err := s.raft.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.RaftAddr), 0, timeout).Error(); err != nil {
		return nil, fmt.Errorf("add voter %s: %w", req.ID, err)
	}
	resp, err := s.apply(ctx, fsm.ServerMember, &fsm.ServerMemberRequest{
		Time: time.Now(), Member: state.ServerMember{ID: req.ID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr},
	})
	if err != nil {
		return nil, err
	}
	s.logger.Info("server joined", "id", req.ID, "raft", req.RaftAddr, "http", req.HTTPAddr)
	return &caravan.IndexResponse{Index: resp.Index}, nil
}

// RemovePeer removes a server from the Raft cluster.
func (s *Server) RemovePeer(ctx context.Context, id string) (*caravan.IndexResponse, error) {
	if !s.IsLeader() {
		return nil, fmt.Errorf("remove peer: %w", caravan.ErrNotLeader)
	}
	if err := s.raft.raft.RemoveServer(raft.ServerID(id), 0, 30*time.Second).Error(); err != nil {
		return nil, fmt.Errorf("remove server %s: %w", id, err)
	}
	resp, err := s.apply(ctx, fsm.ServerMember, &fsm.ServerMemberRequest{Time: time.Now(), Member: state.ServerMember{ID: id}, Remove: true})
	if err != nil {
		return nil, err
	}
	return &caravan.IndexResponse{Index: resp.Index}, nil
}

// Members lists the servers in the Raft configuration with their HTTP
// addresses and roles.
func (s *Server) Members() ([]*caravan.ServerMember, error) {
	f := s.raft.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	known := map[string]*state.ServerMember{}
	if members, err := s.store.Snapshot().Servers(); err == nil {
		for _, m := range members {
			known[m.ID] = m
		}
	}
	_, leaderID := s.raft.raft.LeaderWithID()
	var out []*caravan.ServerMember
	for _, srv := range f.Configuration().Servers {
		m := &caravan.ServerMember{
			ID: string(srv.ID), RaftAddr: string(srv.Address),
			Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leaderID,
		}
		if k, ok := known[m.ID]; ok {
			m.HTTPAddr = k.HTTPAddr
		}
		if string(srv.ID) == s.cfg.Name {
			m.HTTPAddr = s.cfg.AdvertiseHTTP()
		}
		out = append(out, m)
	}
	probeMembers(out, s.cfg.Name)
	return out, nil
}

// probeMembers asks each server's health endpoint, at once and briefly, to
// tell alive servers from unreachable ones.
func probeMembers(members []*caravan.ServerMember, self string) {
	var wg sync.WaitGroup
	for _, m := range members {
		if m.ID == self {
			m.Status = "alive"
			continue
		}
		if m.HTTPAddr == "" {
			m.Status = "unknown"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			m.Status = "failed"
			if c, err := api.New(api.Config{Addresses: []string{m.HTTPAddr}}); err == nil {
				if _, err := c.Health(ctx); err == nil {
					m.Status = "alive"
				}
			}
		}()
	}
	wg.Wait()
}

// Peers lists the Raft addresses of the voters.
func (s *Server) Peers() ([]string, error) {
	members, err := s.Members()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range members {
		if m.Voter {
			out = append(out, m.RaftAddr)
		}
	}
	return out, nil
}

// LastHeartbeat is when a node last heartbeated to this server (zero when it
// has not, e.g. on a follower).
func (s *Server) LastHeartbeat(nodeID string) time.Time { return s.heartbeats.lastBeat(nodeID) }
