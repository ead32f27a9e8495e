package server

import (
	"testing"
	"time"
)

// TestHeartbeatsArmRecordsNoBeat: a new leader arms a timer for every
// node, which is no heartbeat; only reset (a register or a heartbeat)
// records one. Found by the system test that restarts a server: every
// node showed a last_heartbeat at the election.
func TestHeartbeatsArmRecordsNoBeat(t *testing.T) {
	expired := make(chan string, 2)
	h := newHeartbeats(time.Hour, 50, time.Hour, func(id string) { expired <- id })
	defer h.clearAll()

	h.arm("armed", time.Hour)
	if got := h.lastBeat("armed"); !got.IsZero() {
		t.Errorf("arm recorded a beat at %v", got)
	}
	before := time.Now()
	h.reset("beat", time.Hour)
	if got := h.lastBeat("beat"); got.Before(before) {
		t.Errorf("reset recorded %v, want a beat after %v", got, before)
	}
	if n := h.tracked(); n != 2 {
		t.Errorf("%d timers, want 2", n)
	}

	// An armed timer expires like any other.
	short := newHeartbeats(time.Millisecond, 50, time.Millisecond, func(id string) { expired <- id })
	defer short.clearAll()
	short.arm("armed", time.Millisecond)
	select {
	case id := <-expired:
		if id != "armed" {
			t.Errorf("expired %s, want armed", id)
		}
	case <-time.After(10 * time.Second):
		t.Error("the armed timer did not expire")
	}
}
