package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

// The agent's connection to the servers, as serverLoop and disconnectLoop
// drive it:
//
//	      ┌─────────────────────────── register again ◀──────────────────┐
//	      ▼                                                               │
//	registering ──ok──▶ registered: heartbeat every TTL/2 (jittered) ─────┤
//	   │  └ fails: retry with backoff      │ fails: retry sooner          │
//	   │                                   │   heartbeat 404 (unknown) ───┤
//	   │                                   └─ no server contact for TTL ──┘
//	   │
//	   └─ no server contact for max_client_disconnect (any state)
//	        ─▶ every task is stopped, lost; on reconnect the watch stops
//	           whatever the servers replaced meanwhile
//
// Any answer from a server (register, heartbeat, watch, updates) counts as
// contact.

// connState is what the agent knows about its link to the servers.
type connState struct {
	mu          sync.Mutex
	isReg       bool
	lastContact time.Time
	ttl         time.Duration
	// stoppedTasks is set once the tasks were stopped for lack of contact;
	// contact clears it.
	stoppedTasks bool
	failing      bool
}

func (c *connState) init(now time.Time) {
	c.mu.Lock()
	c.lastContact, c.ttl = now, DefaultHeartbeatTTL
	c.mu.Unlock()
}

// contact records an answer from a server. It reports whether the agent
// was out of touch before.
func (c *connState) contact(now time.Time) (wasFailing bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	wasFailing = c.failing
	c.lastContact, c.stoppedTasks, c.failing = now, false, false
	return wasFailing
}

// fail records a failed call. It reports whether it is the first of a run
// of failures (to log it once).
func (c *connState) fail() (first bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	first = !c.failing
	c.failing = true
	return first
}

func (c *connState) setRegistered(ttl time.Duration) {
	c.mu.Lock()
	c.isReg = true
	if ttl > 0 {
		c.ttl = ttl
	}
	c.mu.Unlock()
}

func (c *connState) registered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isReg
}

func (c *connState) heartbeatTTL() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ttl
}

func (c *connState) sinceContact(now time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return now.Sub(c.lastContact)
}

// connected reports a registered node that heard from a server within the
// TTL.
func (c *connState) connected(now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.isReg && now.Sub(c.lastContact) <= c.ttl
}

// serverLoop registers the node, then heartbeats, registering again when
// the servers forgot the node or were out of reach for longer than the
// TTL.
func (a *Agent) serverLoop(ctx context.Context) error {
	bo := backoff{min: 500 * time.Millisecond, max: 30 * time.Second}
	for ctx.Err() == nil {
		resp, err := a.client.RegisterNode(ctx, a.currentNode())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.callFailed("register node", err)
			if !sleep(ctx, bo.next()) {
				return nil
			}
			continue
		}
		bo.reset()
		a.heard(resp)
		a.conn.setRegistered(resp.HeartbeatTTL.D())
		a.log.Info("node registered", "heartbeat_ttl", a.conn.heartbeatTTL(), "server", a.client.Address())
		select {
		case <-a.firstRegistration:
		default:
			close(a.firstRegistration)
		}
		select {
		case a.registration <- struct{}{}:
		default:
		}
		a.heartbeatLoop(ctx)
	}
	return nil
}

// heartbeatLoop heartbeats until the node must register again or ctx ends.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	failures := 0
	for {
		t := time.NewTimer(heartbeatWait(a.conn.heartbeatTTL(), failures))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-a.reregister:
			t.Stop()
			return
		case <-t.C:
		}
		resp, err := a.client.Heartbeat(ctx, a.identity.NodeID, caravan.NodeStatusReady)
		switch {
		case err == nil:
			failures = 0
			a.heard(resp)
			a.conn.setRegistered(resp.HeartbeatTTL.D())
		case ctx.Err() != nil:
			return
		case errors.Is(err, caravan.ErrNotFound):
			a.log.Warn("the servers do not know this node; registering again")
			return
		default:
			failures++
			a.callFailed("heartbeat", err)
			if a.conn.sinceContact(time.Now()) > a.conn.heartbeatTTL() {
				return // out of reach for longer than the TTL: register when back
			}
		}
	}
}

// heartbeatWait is the pause before the next heartbeat: about half the TTL
// (between 40% and 50%), or sooner after failures.
func heartbeatWait(ttl time.Duration, failures int) time.Duration {
	if ttl <= 0 {
		ttl = DefaultHeartbeatTTL
	}
	if failures > 0 {
		d := min(ttl/4, 250*time.Millisecond<<min(failures, 10))
		return d/2 + rand.N(d/2+1)
	}
	return ttl*2/5 + rand.N(ttl/10+1)
}

// heard records an answer to register or heartbeat: contact, and the
// server list.
func (a *Agent) heard(resp *caravan.NodeRegisterResponse) {
	if a.conn.contact(time.Now()) {
		a.log.Info("servers reachable again")
	}
	if len(resp.Servers) > 0 {
		a.client.SetAddresses(serverList(resp.Servers, a.cfg.Servers))
	}
}

// serverList puts the servers' own list first and keeps the configured
// addresses after it, so a wrong advertised address cannot cut the agent
// off.
func serverList(learned, configured []string) []string {
	out := slices.Clone(learned)
	for _, c := range configured {
		if !slices.ContainsFunc(out, func(s string) bool { return strings.TrimPrefix(s, "http://") == c }) {
			out = append(out, c)
		}
	}
	return out
}

// callFailed logs the first failure of a run of failures.
func (a *Agent) callFailed(what string, err error) {
	if a.conn.fail() {
		a.log.Warn("servers unreachable; retrying", "call", what, "error", err)
	} else {
		a.log.Debug("call to servers failed", "call", what, "error", err)
	}
}

// requestRegister asks the server loop to register again.
func (a *Agent) requestRegister() {
	select {
	case a.reregister <- struct{}{}:
	default:
	}
}

// disconnectLoop stops every task once no server answered for
// max_client_disconnect.
func (a *Agent) disconnectLoop(ctx context.Context) error {
	t := time.NewTicker(min(time.Second, a.cfg.MaxClientDisconnect/4))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			since := a.conn.sinceContact(now)
			if since <= a.cfg.MaxClientDisconnect {
				continue
			}
			a.conn.mu.Lock()
			already := a.conn.stoppedTasks
			a.conn.stoppedTasks = true
			a.conn.mu.Unlock()
			if already {
				continue
			}
			a.log.Warn("no contact with the servers for too long; stopping every task", "since", since.Round(time.Second), "max_client_disconnect", a.cfg.MaxClientDisconnect)
			kill := taskrunner.Kill{
				State: caravan.TaskStateLost, Event: caravan.TaskEventLost,
				Reason: fmt.Sprintf("no contact with the servers for %s (max_client_disconnect %s)", since.Round(time.Second), a.cfg.MaxClientDisconnect),
			}
			for _, e := range a.entries() {
				if r := a.runnerOf(e); r != nil {
					r.Stop(kill)
				}
			}
		}
	}
}

// backoff doubles a wait from min to max, with jitter.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d; it reports false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// watchQuery asks what changed on the node's allocations after since;
// with block it waits (BlockingWait at most) until something did.
func (a *Agent) watchQuery(ctx context.Context, since uint64, block, withIDs bool) (*api.NodeAllocChanges, error) {
	// A server that dies mid-query may never answer: bound the wait.
	qctx, cancel := context.WithTimeout(ctx, a.cfg.BlockingWait+a.cfg.BlockingWait/16+10*time.Second)
	defer cancel()
	q := &api.QueryOptions{Wait: a.cfg.BlockingWait}
	if block {
		q.Index = since
	}
	ch, _, err := a.client.NodeAllocationChanges(qctx, a.identity.NodeID, since, withIDs, q)
	return ch, err
}
