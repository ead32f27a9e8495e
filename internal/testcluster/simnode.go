package testcluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// Behavior decides what a simulated node does with an allocation: how long
// it takes to start, how long it runs and how it ends. Fakes are fine here:
// the simulated node stands in for an agent when the control plane is
// under test.
type Behavior func(a *caravan.Allocation) Outcome

// Outcome is one allocation's simulated life.
type Outcome struct {
	// StartAfter delays the running report.
	StartAfter time.Duration
	// RunFor is how long it runs before it ends; 0 means until stopped.
	RunFor time.Duration
	// ExitCode and State decide how it ends after RunFor (State defaults
	// to complete for exit 0, failed otherwise).
	ExitCode int
	State    string
}

// RunForever runs every allocation until the server stops it.
func RunForever(*caravan.Allocation) Outcome { return Outcome{} }

// SimNode is a node that registers over the API, heartbeats, watches its
// allocations with a blocking query and reports their status in batches,
// without running anything.
type SimNode struct {
	Node     *caravan.Node
	client   *api.Client
	behavior Behavior

	mu     sync.Mutex
	allocs map[string]*simAlloc
	// seen holds every allocation id the servers list for the node.
	seen    map[string]bool
	pending map[string]*caravan.AllocClientUpdate
	wake    chan struct{}

	cancel context.CancelFunc
	done   chan struct{}
}

type simAlloc struct {
	alloc   *caravan.Allocation
	status  string
	stopped bool
}

// NewSimNode makes a simulated node with 4 cores of 1000 MHz and 8 GB, the
// exec and docker drivers, and the given attributes and meta.
func NewSimNode(name string, attrs, meta map[string]string) *caravan.Node {
	a := map[string]string{"os": "linux", "arch": "amd64", "kernel.version": "6.1.0"}
	for k, v := range attrs {
		a[k] = v
	}
	return &caravan.Node{
		ID: caravan.NewID(), SecretID: caravan.NewID(), Name: name,
		Status:     caravan.NodeStatusReady,
		Resources:  caravan.NodeResources{CPU: 4000, Memory: 8192, Cores: []int{0, 1, 2, 3}},
		Attributes: a, Meta: meta,
		Drivers: map[string]caravan.DriverInfo{
			"exec": {Detected: true, Healthy: true}, "docker": {Detected: true, Healthy: true},
		},
	}
}

// StartSimNode registers node through addrs and runs it until Stop.
func StartSimNode(ctx context.Context, addrs []string, node *caravan.Node, behavior Behavior) (*SimNode, error) {
	c, err := api.New(api.Config{Addresses: append([]string(nil), addrs...), NodeSecret: node.SecretID})
	if err != nil {
		return nil, err
	}
	if behavior == nil {
		behavior = RunForever
	}
	reg, err := c.RegisterNode(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("register sim node %s: %w", node.Name, err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	n := &SimNode{
		Node: node, client: c, behavior: behavior,
		allocs: map[string]*simAlloc{}, seen: map[string]bool{}, pending: map[string]*caravan.AllocClientUpdate{},
		wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}),
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); n.heartbeat(runCtx, reg.HeartbeatTTL.D()) }()
	go func() { defer wg.Done(); n.watch(runCtx) }()
	go func() { defer wg.Done(); n.flush(runCtx) }()
	go func() { wg.Wait(); close(n.done) }()
	return n, nil
}

// Stop stops the node as a crash would: no more heartbeats or reports.
func (n *SimNode) Stop() {
	n.cancel()
	<-n.done
}

func (n *SimNode) heartbeat(ctx context.Context, ttl time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(ttl / 2):
		}
		resp, err := n.client.Heartbeat(ctx, n.Node.ID, caravan.NodeStatusReady)
		if err == nil {
			ttl = resp.HeartbeatTTL.D()
		} else if errors.Is(err, caravan.ErrNotFound) {
			_, _ = n.client.RegisterNode(ctx, n.Node)
		}
	}
}

// watch follows the node's allocations as an agent does: everything
// first, then only what the servers changed, and every id when the count
// says some were removed.
func (n *SimNode) watch(ctx context.Context) {
	var since uint64
	withIDs := false
	for ctx.Err() == nil {
		q := &api.QueryOptions{Wait: 30 * time.Second}
		if since > 0 && !withIDs {
			q.Index = since
		}
		ch, _, err := n.client.NodeAllocationChanges(ctx, n.Node.ID, since, withIDs, q)
		if err != nil || (since > 0 && ch.StateIndex > 0 && ch.StateIndex < since) {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		jobs := map[string]*caravan.Job{}
		for _, j := range ch.Jobs {
			if j != nil {
				jobs[j.ID+"@"+strconv.FormatUint(j.Version, 10)] = j
			}
		}
		for _, a := range ch.Allocs {
			if a == nil {
				continue
			}
			if a.Job == nil {
				a.Job = jobs[a.JobID+"@"+strconv.FormatUint(a.JobVersion, 10)]
			}
			n.observe(ctx, a)
		}
		next := max(since, ch.Index)
		if ch.Since == 0 {
			next = ch.Index
		}
		since, withIDs = next, n.forgetRemoved(ch)
	}
}

// forgetRemoved drops the allocations the servers no longer list. It
// reports whether the ids are needed to know which.
func (n *SimNode) forgetRemoved(ch *api.NodeAllocChanges) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	var listed map[string]bool
	switch {
	case ch.Since == 0:
		listed = make(map[string]bool, len(ch.Allocs))
		for _, a := range ch.Allocs {
			if a != nil {
				listed[a.ID] = true
			}
		}
	case ch.IDs != nil:
		listed = make(map[string]bool, len(ch.IDs))
		for _, id := range ch.IDs {
			listed[id.ID] = true
		}
	default:
		return len(n.seen) > ch.Count
	}
	for id := range n.allocs {
		if !listed[id] {
			delete(n.allocs, id)
		}
	}
	n.seen = listed
	return false
}

// observe reacts to the server's view of one allocation.
func (n *SimNode) observe(ctx context.Context, a *caravan.Allocation) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.seen[a.ID] = true
	sa, known := n.allocs[a.ID]
	if !known {
		if a.ClientTerminal() {
			return
		}
		sa = &simAlloc{alloc: a, status: caravan.AllocClientPending}
		n.allocs[a.ID] = sa
		if a.ServerTerminal() {
			n.finishLocked(sa, caravan.AllocClientComplete, caravan.TaskStateCancelled, 0)
			return
		}
		out := n.behavior(a)
		go n.live(ctx, a.ID, out)
		return
	}
	sa.alloc = a
	if a.ServerTerminal() && !sa.stopped && sa.status != caravan.AllocClientComplete && sa.status != caravan.AllocClientFailed {
		n.finishLocked(sa, caravan.AllocClientComplete, caravan.TaskStateCancelled, 0)
	}
}

// live plays one allocation's outcome.
func (n *SimNode) live(ctx context.Context, id string, out Outcome) {
	if !sleepCtx(ctx, out.StartAfter) {
		return
	}
	n.mu.Lock()
	sa := n.allocs[id]
	if sa == nil || sa.stopped {
		n.mu.Unlock()
		return
	}
	sa.status = caravan.AllocClientRunning
	n.queueLocked(sa, caravan.TaskStateRunning, 0)
	n.mu.Unlock()
	if out.RunFor <= 0 || !sleepCtx(ctx, out.RunFor) {
		return
	}
	state := out.State
	if state == "" {
		state = caravan.TaskStateComplete
		if out.ExitCode != 0 {
			state = caravan.TaskStateFailed
		}
	}
	status := caravan.AllocClientComplete
	if state != caravan.TaskStateComplete {
		status = caravan.AllocClientFailed
	}
	n.mu.Lock()
	if sa := n.allocs[id]; sa != nil && !sa.stopped {
		n.finishLocked(sa, status, state, out.ExitCode)
	}
	n.mu.Unlock()
}

func (n *SimNode) finishLocked(sa *simAlloc, status, taskState string, exitCode int) {
	sa.stopped = true
	sa.status = status
	n.queueLocked(sa, taskState, exitCode)
}

// queueLocked records the allocation's current status for the next batch.
func (n *SimNode) queueLocked(sa *simAlloc, taskState string, exitCode int) {
	now := time.Now()
	states := map[string]*caravan.TaskState{}
	if sa.alloc.Job != nil {
		if tg := sa.alloc.Job.LookupTaskGroup(sa.alloc.TaskGroup); tg != nil {
			for _, t := range tg.Tasks {
				ts := &caravan.TaskState{State: taskState, ExitCode: exitCode, StartedAt: now}
				if caravan.TaskStateTerminal(taskState) {
					ts.FinishedAt = now
					ts.Failed = taskState != caravan.TaskStateComplete && taskState != caravan.TaskStateCancelled
				}
				states[t.Name] = ts
			}
		}
	}
	u := &caravan.AllocClientUpdate{ID: sa.alloc.ID, ClientStatus: sa.status, TaskStates: states}
	if caravan.TaskStateTerminal(taskState) {
		u.TerminalReason = taskState
	}
	n.pending[sa.alloc.ID] = u
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// flush sends queued updates in batches; a failed batch is retried.
func (n *SimNode) flush(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.wake:
		}
		sleepCtx(ctx, 20*time.Millisecond) // gather a batch
		n.mu.Lock()
		batch := make([]*caravan.AllocClientUpdate, 0, len(n.pending))
		for _, u := range n.pending {
			batch = append(batch, u)
		}
		n.pending = map[string]*caravan.AllocClientUpdate{}
		n.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if _, err := n.client.UpdateAllocations(ctx, n.Node.ID, batch); err != nil && ctx.Err() == nil {
			n.mu.Lock()
			for _, u := range batch {
				if _, newer := n.pending[u.ID]; !newer {
					n.pending[u.ID] = u
				}
			}
			n.mu.Unlock()
			sleepCtx(ctx, 100*time.Millisecond)
			select {
			case n.wake <- struct{}{}:
			default:
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
