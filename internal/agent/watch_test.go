package agent

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
)

// TestWatchReadsOnlyChanges places allocations one at a time: after the
// first answer, the servers send each allocation about once, not the whole
// list at every change.
func TestWatchReadsOnlyChanges(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	const n = 30
	job := testJob(caravan.JobTypeService, execTask("t", "run"))
	for range n {
		al := testAlloc(a.NodeID(), job)
		srv.addAlloc(al)
		waitFor(t, 10*time.Second, "running", func() bool { return w.Running(al.ID + "/t") })
	}
	srv.mu.Lock()
	sent, served := srv.sent, srv.served
	srv.mu.Unlock()
	// Reading the whole list each time would send n(n+1)/2 = 465.
	if sent > 2*n {
		t.Errorf("the servers sent %d allocations in %d answers for %d placements", sent, served, n)
	}
}

// TestFinishedAllocationsAreRetired checks what the agent keeps of a
// finished allocation: how it ended, its logs, no runner and no task
// records; after a restart the same, without running it again; and nothing
// once the servers forget it.
func TestFinishedAllocationsAreRetired(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	al := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch, execTask("main", "exit 0 after 50ms")))
	srv.addAlloc(al)
	waitFor(t, 10*time.Second, "retired", func() bool {
		e, err := a.lookup(al.ID)
		return err == nil && a.runnerOf(e) == nil
	})
	check := func(t *testing.T, a *running) {
		t.Helper()
		e, err := a.lookup(al.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := a.allocOf(e)
		if got.ClientStatus != caravan.AllocClientComplete || got.Job != nil || got.TaskStates["main"] == nil ||
			got.TaskStates["main"].State != caravan.TaskStateComplete {
			t.Errorf("finished allocation = %s, job %v, tasks %v", got.ClientStatus, got.Job != nil, got.TaskStates)
		}
		stored, _, err := a.db.Allocs()
		if err != nil || len(stored) != 0 {
			t.Errorf("running allocations in the state file: %d, %v", len(stored), err)
		}
		finished, _, err := a.db.Finished()
		if err != nil || len(finished) != 1 || finished[0].ID != al.ID {
			t.Errorf("finished allocations in the state file: %v, %v", finished, err)
		}
		// The agent API still serves it, logs included.
		resp, err := http.Get("http://" + a.HTTPAddr() + "/allocations/" + al.ID)
		if err != nil {
			t.Fatal(err)
		}
		var served caravan.Allocation
		err = json.NewDecoder(resp.Body).Decode(&served)
		resp.Body.Close()
		if err != nil || served.ID != al.ID || served.ClientStatus != caravan.AllocClientComplete {
			t.Errorf("GET /allocations/{id} = %d %+v, %v", resp.StatusCode, served, err)
		}
		resp, err = http.Get("http://" + a.HTTPAddr() + "/v1/client/allocation/" + al.ID + "/logs?task=main&follow=true")
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("logs of a finished allocation: %d, %v", resp.StatusCode, err)
		}
	}
	check(t, a)
	a.stop(t)

	b := startAgent(t, cfg)
	check(t, b)
	var starts int
	for _, c := range w.Calls() {
		if c == "start "+al.ID+"/main" {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("task started %d times, want 1", starts)
	}

	srv.removeAlloc(al.ID)
	waitFor(t, 10*time.Second, "allocation forgotten", func() bool {
		_, err := b.lookup(al.ID)
		return errors.Is(err, caravan.ErrNotFound)
	})
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "alloc", al.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("allocation dir after removal: %v", err)
	}
	if finished, _, _ := b.db.Finished(); len(finished) != 0 {
		t.Errorf("finished allocations after removal: %d", len(finished))
	}
}

// TestWatchIgnoresALaggingServer: an answer older than what the agent saw
// (a follower behind the leader) must not take back allocations.
func TestWatchIgnoresALaggingServer(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	al := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	srv.addAlloc(al)
	waitFor(t, 10*time.Second, "running", func() bool { return w.Running(al.ID + "/t") })
	srv.mu.Lock()
	srv.lagging = true
	served := srv.served
	srv.mu.Unlock()
	waitFor(t, 10*time.Second, "answers from the lagging server", func() bool {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return srv.served > served+2
	})
	if !w.Running(al.ID + "/t") {
		t.Fatal("an answer from a lagging server stopped an allocation")
	}
	srv.mu.Lock()
	srv.lagging = false
	srv.mu.Unlock()
	srv.setDesired(al.ID, caravan.AllocDesiredStop)
	waitFor(t, 10*time.Second, "stopped", func() bool { return !w.Running(al.ID + "/t") })
}

// TestWatchWithAnOlderServer: a server that predates ?since answers with
// every allocation; the agent runs them all the same.
func TestWatchWithAnOlderServer(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	srv.noSince = true
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	keep := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	gone := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	srv.addAlloc(keep)
	srv.addAlloc(gone)
	waitFor(t, 10*time.Second, "running", func() bool { return w.Running(keep.ID+"/t") && w.Running(gone.ID+"/t") })
	srv.removeAlloc(gone.ID)
	srv.setDesired(keep.ID, caravan.AllocDesiredStop)
	waitFor(t, 10*time.Second, "both stopped", func() bool { return !w.Running(keep.ID+"/t") && !w.Running(gone.ID+"/t") })
	waitFor(t, 10*time.Second, "the removed one forgotten", func() bool {
		_, err := a.lookup(gone.ID)
		return errors.Is(err, caravan.ErrNotFound)
	})
}
