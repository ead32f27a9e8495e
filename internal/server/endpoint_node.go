package server

import (
	"context"
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// RegisterNode registers an agent's node, or updates it when the agent
// registers again (after a restart, or after it was marked down). An
// existing node's secret must match.
func (s *Server) RegisterNode(ctx context.Context, node *caravan.Node) (*caravan.NodeRegisterResponse, error) {
	if node == nil {
		return nil, caravan.Invalidf("node", "missing")
	}
	node.Canonicalize()
	if node.Status == caravan.NodeStatusDown {
		return nil, caravan.Invalidf("status", "a node cannot register as down")
	}
	if err := node.Validate(); err != nil {
		return nil, err
	}
	snap := s.store.Snapshot()
	if cur, err := snap.NodeByID(node.ID); err == nil && cur.SecretID != "" && cur.SecretID != node.SecretID {
		return nil, fmt.Errorf("node %s is registered with another secret: %w", node.ID, caravan.ErrForbidden)
	}
	now := time.Now()
	node.LastHeartbeat = now
	var evals []*caravan.Evaluation
	if node.Status == caravan.NodeStatusReady {
		evals = s.systemJobEvals(snap, node, now)
	}
	resp, err := s.apply(ctx, fsm.NodeRegister, &fsm.NodeRegisterRequest{Time: now, Node: node, Evals: evals})
	if err != nil {
		return nil, err
	}
	ttl := s.heartbeats.ttl()
	s.heartbeats.reset(node.ID, ttl)
	return &caravan.NodeRegisterResponse{NodeID: node.ID, HeartbeatTTL: caravan.Duration(ttl), Index: resp.Index, Servers: s.serverHTTPAddrs(snap)}, nil
}

// Heartbeat records that a node is alive and returns its next TTL. A node
// that was down or initializing and reports ready is marked ready.
func (s *Server) Heartbeat(ctx context.Context, nodeID, secret, status string) (*caravan.NodeRegisterResponse, error) {
	snap := s.store.Snapshot()
	node, err := s.authNode(snap, nodeID, secret)
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, fmt.Errorf("heartbeat: %w", caravan.ErrNotLeader)
	}
	if status == "" {
		status = caravan.NodeStatusReady
	}
	if status != caravan.NodeStatusReady && status != caravan.NodeStatusInitializing {
		return nil, caravan.Invalidf("status", "%q: a heartbeat reports ready or initializing", status)
	}
	index := snap.Index()
	if node.Status != status {
		now := time.Now()
		var evals []*caravan.Evaluation
		if status == caravan.NodeStatusReady {
			evals = s.systemJobEvals(snap, node, now)
		}
		resp, err := s.apply(ctx, fsm.NodeStatus, &fsm.NodeStatusRequest{Time: now, NodeID: node.ID, Status: status, Description: "heartbeat", Evals: evals})
		if err != nil {
			return nil, err
		}
		index = resp.Index
	}
	s.counters.heartbeats.Inc()
	ttl := s.heartbeats.ttl()
	s.heartbeats.reset(node.ID, ttl)
	return &caravan.NodeRegisterResponse{NodeID: node.ID, HeartbeatTTL: caravan.Duration(ttl), Index: index, Servers: s.serverHTTPAddrs(snap)}, nil
}

// nodeExpired marks a node that missed its TTL down. The FSM marks its
// allocations lost; the evaluations written with it replace them.
func (s *Server) nodeExpired(nodeID string) {
	snap := s.store.Snapshot()
	node, err := snap.NodeByID(nodeID)
	if err != nil || node.Status == caravan.NodeStatusDown {
		return
	}
	now := time.Now()
	evals := s.jobEvalsForNode(snap, nodeID, caravan.TriggerNodeUpdate, now)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = s.apply(ctx, fsm.NodeStatus, &fsm.NodeStatusRequest{
		Time: now, NodeID: nodeID, Status: caravan.NodeStatusDown,
		Description: "missed its heartbeat TTL", Evals: evals,
	})
	if err != nil {
		s.logger.Error("mark node down", "node", nodeID, "error", err)
		return
	}
	s.counters.nodesDown.Inc()
	s.logger.Warn("node missed its heartbeat TTL; marked down", "node", nodeID, "name", node.Name, "evals", len(evals))
}

// UpdateAllocations records an agent's allocation reports. Failed
// allocations, and allocations that start running while their job rolls out
// a new version, get their job evaluated in the same write.
func (s *Server) UpdateAllocations(ctx context.Context, nodeID, secret string, updates []*caravan.AllocClientUpdate) (*caravan.IndexResponse, error) {
	if len(updates) == 0 {
		return nil, caravan.Invalidf("allocs", "no updates")
	}
	for i, u := range updates {
		if u == nil {
			return nil, caravan.Invalidf(fmt.Sprintf("allocs[%d]", i), "null")
		}
		if err := u.Validate(); err != nil {
			return nil, fmt.Errorf("allocs[%d]: %w", i, err)
		}
	}
	snap := s.store.Snapshot()
	if _, err := s.authNode(snap, nodeID, secret); err != nil {
		return nil, err
	}
	now := time.Now()
	evals := s.evalsForAllocUpdates(snap, nodeID, updates, now)
	resp, err := s.apply(ctx, fsm.AllocClientUpdate, &fsm.AllocClientUpdateRequest{Time: now, NodeID: nodeID, Updates: updates, Evals: evals})
	if err != nil {
		return nil, err
	}
	return &caravan.IndexResponse{Index: resp.Index}, nil
}

func (s *Server) evalsForAllocUpdates(snap *state.Snapshot, nodeID string, updates []*caravan.AllocClientUpdate, now time.Time) []*caravan.Evaluation {
	seen := map[string]bool{}
	var evals []*caravan.Evaluation
	for _, u := range updates {
		cur, err := snap.AllocByID(u.ID)
		if err != nil || cur.NodeID != nodeID || cur.ClientTerminal() || seen[cur.JobID] {
			continue
		}
		job, err := snap.JobByID(cur.JobID)
		if err != nil || job.Stop {
			continue
		}
		trigger := ""
		switch {
		case u.ClientStatus == caravan.AllocClientFailed && !cur.ServerTerminal():
			trigger = caravan.TriggerAllocFailure
		case u.ClientStatus == caravan.AllocClientComplete && !cur.ServerTerminal() && job.Type != caravan.JobTypeBatch:
			trigger = caravan.TriggerAllocFailure // a service or system task should not end
		case u.ClientStatus == caravan.AllocClientRunning && cur.ClientStatus == caravan.AllocClientPending && s.rollingOut(snap, job):
			trigger = caravan.TriggerAllocUpdate
		case (u.ClientStatus == caravan.AllocClientComplete || u.ClientStatus == caravan.AllocClientFailed) && cur.ServerTerminal() && s.rollingOut(snap, job):
			trigger = caravan.TriggerAllocUpdate // an old version finished stopping
		}
		if trigger == "" {
			continue
		}
		seen[cur.JobID] = true
		evals = append(evals, s.evalFor(job, trigger, now))
	}
	return evals
}

// rollingOut reports whether the job still has live allocations of an
// older version: a rolling update goes on.
func (s *Server) rollingOut(snap *state.Snapshot, job *caravan.Job) bool {
	allocs, err := snap.AllocsByJob(job.ID)
	if err != nil {
		return false
	}
	for _, a := range allocs {
		if a.JobVersion < job.Version && !a.Terminal() {
			return true
		}
	}
	return false
}

// DrainNode starts or cancels a drain. Starting one evaluates every job
// with allocations on the node, so they migrate.
func (s *Server) DrainNode(ctx context.Context, nodeID string, req *caravan.NodeDrainRequest) (*caravan.IndexResponse, error) {
	snap := s.store.Snapshot()
	node, err := s.lookupNode(snap, nodeID)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	fr := &fsm.NodeDrainRequest{Time: now, NodeID: node.ID, Drain: req.Drain}
	if req.Drain != nil {
		fr.Eligibility = caravan.NodeIneligible
		fr.Evals = s.jobEvalsForNode(snap, node.ID, caravan.TriggerNodeDrain, now)
	} else if req.MarkEligible {
		fr.Eligibility = caravan.NodeEligible
	}
	resp, err := s.apply(ctx, fsm.NodeDrain, fr)
	if err != nil {
		return nil, err
	}
	return &caravan.IndexResponse{Index: resp.Index}, nil
}

// SetNodeEligibility makes a node eligible or ineligible for new work.
func (s *Server) SetNodeEligibility(ctx context.Context, nodeID, eligibility string) (*caravan.IndexResponse, error) {
	if eligibility != caravan.NodeEligible && eligibility != caravan.NodeIneligible {
		return nil, caravan.Invalidf("eligibility", "%q: use eligible or ineligible", eligibility)
	}
	snap := s.store.Snapshot()
	node, err := s.lookupNode(snap, nodeID)
	if err != nil {
		return nil, err
	}
	resp, err := s.apply(ctx, fsm.NodeEligibility, &fsm.NodeEligibilityRequest{Time: time.Now(), NodeID: node.ID, Eligibility: eligibility})
	if err != nil {
		return nil, err
	}
	return &caravan.IndexResponse{Index: resp.Index}, nil
}

// DeregisterNode removes a node; jobs with allocations on it are evaluated
// so they are replaced.
func (s *Server) DeregisterNode(ctx context.Context, nodeID string) (*caravan.IndexResponse, error) {
	snap := s.store.Snapshot()
	node, err := s.lookupNode(snap, nodeID)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	evals := s.jobEvalsForNode(snap, node.ID, caravan.TriggerNodeUpdate, now)
	if err := s.markDownFirst(ctx, node, evals, now); err != nil {
		return nil, err
	}
	resp, err := s.apply(ctx, fsm.NodeDeregister, &fsm.NodeDeregisterRequest{Time: now, NodeIDs: []string{node.ID}})
	if err != nil {
		return nil, err
	}
	s.heartbeats.clear(node.ID)
	return &caravan.IndexResponse{Index: resp.Index}, nil
}

// markDownFirst marks a node that still runs allocations down, so they are
// lost and replaced, before it is removed.
func (s *Server) markDownFirst(ctx context.Context, node *caravan.Node, evals []*caravan.Evaluation, now time.Time) error {
	if node.Status == caravan.NodeStatusDown {
		return nil
	}
	_, err := s.apply(ctx, fsm.NodeStatus, &fsm.NodeStatusRequest{Time: now, NodeID: node.ID, Status: caravan.NodeStatusDown, Description: "deregistered", Evals: evals})
	return err
}

func (s *Server) lookupNode(snap *state.Snapshot, id string) (*caravan.Node, error) {
	if n, err := snap.NodeByID(id); err == nil {
		return n, nil
	}
	if len(id) < 4 {
		return nil, fmt.Errorf("node %q: %w", id, caravan.ErrNotFound)
	}
	return uniquePrefix(nodeList(snap), id, "node", func(n *caravan.Node) string { return n.ID })
}

// authNode checks an agent's node id and secret.
func (s *Server) authNode(snap *state.Snapshot, nodeID, secret string) (*caravan.Node, error) {
	node, err := snap.NodeByID(nodeID)
	if err != nil {
		return nil, err // already names the node
	}
	if node.SecretID != "" && node.SecretID != secret {
		return nil, fmt.Errorf("node %s: wrong or missing node secret: %w", nodeID, caravan.ErrForbidden)
	}
	return node, nil
}

// systemJobEvals makes one evaluation per system job that may run on node.
func (s *Server) systemJobEvals(snap *state.Snapshot, node *caravan.Node, now time.Time) []*caravan.Evaluation {
	jobs, err := snap.Jobs(state.ListOptions{})
	if err != nil {
		return nil
	}
	var evals []*caravan.Evaluation
	for j := range jobs {
		if j.Type != caravan.JobTypeSystem || j.Stop || j.NodePool != node.NodePool {
			continue
		}
		e := s.evalFor(j, caravan.TriggerNodeUpdate, now)
		e.NodeID = node.ID
		evals = append(evals, e)
	}
	return evals
}

// jobEvalsForNode makes one evaluation per job with live allocations on the
// node.
func (s *Server) jobEvalsForNode(snap *state.Snapshot, nodeID, trigger string, now time.Time) []*caravan.Evaluation {
	allocs, err := snap.AllocsByNode(nodeID)
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var evals []*caravan.Evaluation
	for _, a := range allocs {
		if a.Terminal() || seen[a.JobID] {
			continue
		}
		seen[a.JobID] = true
		job, err := snap.JobByID(a.JobID)
		if err != nil {
			continue
		}
		e := s.evalFor(job, trigger, now)
		e.NodeID = nodeID
		evals = append(evals, e)
	}
	return evals
}

// serverHTTPAddrs lists every server's HTTP address, for agents.
func (s *Server) serverHTTPAddrs(snap *state.Snapshot) []string {
	members, err := snap.Servers()
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(members))
	for _, m := range members {
		if m.HTTPAddr != "" {
			out = append(out, m.HTTPAddr)
		}
	}
	return out
}
