package server

import (
	"math/rand/v2"
	"sync"
	"time"
)

// heartbeats keeps one timer per node on the leader. A node whose timer
// fires has missed its TTL (plus grace) and is marked down by the expire
// callback. Heartbeats themselves are not Raft writes: only status changes
// are.
type heartbeats struct {
	minTTL       time.Duration
	maxPerSecond float64
	grace        time.Duration
	expire       func(nodeID string)

	mu     sync.Mutex
	timers map[string]*time.Timer
	last   map[string]time.Time
}

func newHeartbeats(minTTL time.Duration, maxPerSecond float64, grace time.Duration, expire func(string)) *heartbeats {
	return &heartbeats{
		minTTL: minTTL, maxPerSecond: maxPerSecond, grace: grace, expire: expire,
		timers: map[string]*time.Timer{}, last: map[string]time.Time{},
	}
}

// ttl returns the TTL to hand a node: long enough that all nodes together
// send at most maxPerSecond heartbeats, never below minTTL, with up to 25%
// random jitter so a cluster that starts at once does not heartbeat in step.
func (h *heartbeats) ttl() time.Duration {
	h.mu.Lock()
	n := len(h.timers)
	h.mu.Unlock()
	base := h.minTTL
	if byRate := time.Duration(float64(n) / h.maxPerSecond * float64(time.Second)); byRate > base {
		base = byRate
	}
	return base + time.Duration(rand.Int64N(int64(base)/4+1))
}

// reset (re)arms a node's timer for ttl plus grace and records the beat.
func (h *heartbeats) reset(nodeID string, ttl time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last[nodeID] = time.Now()
	h.armLocked(nodeID, ttl)
}

// arm (re)arms a node's timer for ttl plus grace without recording a
// beat: a new leader gives every node a fresh TTL, but the node has not
// heartbeated to it (its last_heartbeat must not say so).
func (h *heartbeats) arm(nodeID string, ttl time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armLocked(nodeID, ttl)
}

func (h *heartbeats) armLocked(nodeID string, ttl time.Duration) {
	if t, ok := h.timers[nodeID]; ok {
		t.Reset(ttl + h.grace)
		return
	}
	h.timers[nodeID] = time.AfterFunc(ttl+h.grace, func() { h.fire(nodeID) })
}

func (h *heartbeats) fire(nodeID string) {
	h.mu.Lock()
	_, tracked := h.timers[nodeID]
	delete(h.timers, nodeID)
	h.mu.Unlock()
	if tracked {
		h.expire(nodeID)
	}
}

// clear stops tracking a node (deregistered, or marked down).
func (h *heartbeats) clear(nodeID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t, ok := h.timers[nodeID]; ok {
		t.Stop()
		delete(h.timers, nodeID)
	}
}

// clearAll stops every timer: this server is no longer the leader.
func (h *heartbeats) clearAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, t := range h.timers {
		t.Stop()
		delete(h.timers, id)
	}
}

// lastBeat returns when the node last heartbeated to this server.
func (h *heartbeats) lastBeat(nodeID string) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last[nodeID]
}

// tracked returns how many nodes have a timer.
func (h *heartbeats) tracked() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.timers)
}
