package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

func TestNodeRoutes(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	n := registerNode(t, ts, 0)
	agent := ts.client(t, n.SecretID)

	hb, err := agent.Heartbeat(ctx, n.ID, caravan.NodeStatusReady)
	if err != nil || hb.HeartbeatTTL <= 0 || hb.NodeID != n.ID {
		t.Fatalf("heartbeat = %+v, %v", hb, err)
	}

	// Reads never show the secret, and show the heartbeat the leader saw.
	for _, path := range []string{"/v1/nodes", "/v1/node/" + n.ID, "/v1/node/" + n.ID[:6], "/nodes"} {
		a := call(t, http.MethodGet, ts.url+path, "")
		if a.status != http.StatusOK || strings.Contains(string(a.body), n.SecretID) || strings.Contains(string(a.body), "secret_id") {
			t.Errorf("%s: %d, secret shown: %s", path, a.status, a.body)
		}
	}
	got, _, err := c.Node(ctx, n.ID[:8], nil)
	if err != nil || got.ID != n.ID || got.LastHeartbeat.IsZero() {
		t.Errorf("node by prefix = %+v, %v", got, err)
	}

	// Filters.
	for _, tt := range []struct {
		params map[string]string
		want   int
	}{
		{map[string]string{"pool": "default"}, 1},
		{map[string]string{"pool": "gpu"}, 0},
		{map[string]string{"status": "ready"}, 1},
		{map[string]string{"status": "down"}, 0},
	} {
		nodes, _, err := c.Nodes(ctx, &api.QueryOptions{Params: tt.params})
		if err != nil || len(nodes) != tt.want {
			t.Errorf("nodes %v: %d, %v; want %d", tt.params, len(nodes), err, tt.want)
		}
	}

	// The agent's view: allocations with their jobs.
	if _, err := c.RegisterJob(ctx, sleepJob("web", 2)); err != nil {
		t.Fatal(err)
	}
	waitAllocs(t, ts, "web", 2)
	allocs, meta, err := agent.NodeAllocations(ctx, n.ID, nil)
	if err != nil || len(allocs) != 2 || allocs[0].Job == nil || meta.LastIndex == 0 {
		t.Fatalf("node allocations: %d, index %d, %v", len(allocs), meta.LastIndex, err)
	}
	var updates []*caravan.AllocClientUpdate
	for _, al := range allocs {
		updates = append(updates, &caravan.AllocClientUpdate{ID: al.ID, ClientStatus: caravan.AllocClientRunning,
			TaskStates: map[string]*caravan.TaskState{"t": {State: caravan.TaskStateRunning}}})
	}
	if _, err := agent.UpdateAllocations(ctx, n.ID, updates); err != nil {
		t.Fatal(err)
	}
	running, _, err := c.Allocations(ctx, &api.QueryOptions{Params: map[string]string{"node_id": n.ID, "client_status": "running"}})
	if err != nil || len(running) != 2 {
		t.Errorf("running allocations on the node: %d, %v", len(running), err)
	}

	// Administration.
	if _, err := c.SetNodeEligibility(ctx, n.ID, caravan.NodeIneligible); err != nil {
		t.Fatal(err)
	}
	got, _, _ = c.Node(ctx, n.ID, nil)
	if got.DisplayStatus() != caravan.NodeIneligible {
		t.Errorf("after eligibility: %s", got.DisplayStatus())
	}
	if _, err := c.DrainNode(ctx, n.ID, &caravan.DrainStrategy{Deadline: caravan.Duration(time.Minute)}, false); err != nil {
		t.Fatal(err)
	}
	nodes, _, err := c.Nodes(ctx, &api.QueryOptions{Params: map[string]string{"status": "draining"}})
	if err != nil || len(nodes) != 1 {
		t.Errorf("draining nodes: %d, %v", len(nodes), err)
	}
	if _, err := c.DrainNode(ctx, n.ID, nil, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeregisterNode(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Node(ctx, n.ID, nil); err == nil {
		t.Error("node still there after deregistration")
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	ts := startLeader(t)
	// 17 nodes: two of them share a first hex digit.
	seen := map[byte]bool{}
	var shared byte
	for i := range 17 {
		n := registerNode(t, ts, i)
		if seen[n.ID[0]] {
			shared = n.ID[0]
		}
		seen[n.ID[0]] = true
	}
	a := call(t, http.MethodGet, ts.url+"/v1/node/"+string(shared), "")
	if a.status != http.StatusBadRequest || !strings.Contains(a.errBody(t).Error, "more than one") {
		t.Errorf("ambiguous prefix: %d %s", a.status, a.body)
	}
}

// TestNodeAllocationChanges follows a node's allocations as an agent does,
// with ?since: only what the servers changed comes, with each job version
// once, and the count tells removals.
func TestNodeAllocationChanges(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	n := registerNode(t, ts, 0)
	agent := ts.client(t, n.SecretID)
	if _, err := c.RegisterJob(ctx, sleepJob("web", 3)); err != nil {
		t.Fatal(err)
	}
	waitAllocs(t, ts, "web", 3)

	full, meta, err := agent.NodeAllocationChanges(ctx, n.ID, 0, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if full.Since != 0 || full.Count != 3 || len(full.Allocs) != 3 || len(full.Jobs) != 1 || full.IDs != nil ||
		full.Index == 0 || full.Index != meta.LastIndex || full.StateIndex < full.Index {
		t.Fatalf("since 0: since %d count %d allocs %d jobs %d ids %v index %d (header %d) state index %d",
			full.Since, full.Count, len(full.Allocs), len(full.Jobs), full.IDs, full.Index, meta.LastIndex, full.StateIndex)
	}
	for _, al := range full.Allocs {
		if al.Job != nil || al.JobID != full.Jobs[0].ID || al.JobVersion != full.Jobs[0].Version {
			t.Errorf("allocation %s: job %v, job %s v%d", al.ID, al.Job != nil, al.JobID, al.JobVersion)
		}
	}

	// Status reports are the agent's own: they change nothing it reads.
	var updates []*caravan.AllocClientUpdate
	for _, al := range full.Allocs {
		updates = append(updates, &caravan.AllocClientUpdate{ID: al.ID, ClientStatus: caravan.AllocClientRunning,
			TaskStates: map[string]*caravan.TaskState{"t": {State: caravan.TaskStateRunning}}})
	}
	if _, err := agent.UpdateAllocations(ctx, n.ID, updates); err != nil {
		t.Fatal(err)
	}
	none, _, err := agent.NodeAllocationChanges(ctx, n.ID, full.Index, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if none.Since != full.Index || none.Index != full.Index || none.Count != 3 || len(none.Allocs) != 0 || len(none.Jobs) != 0 || len(none.IDs) != 3 {
		t.Fatalf("since %d: %+v", full.Index, none)
	}
	for _, id := range none.IDs {
		if id.AllocModifyIndex == 0 || id.AllocModifyIndex > full.Index {
			t.Errorf("id %+v", id)
		}
	}

	// A blocking watch wakes for a stop, with the stopped allocations only.
	type result struct {
		ch  *api.NodeAllocChanges
		err error
	}
	woke := make(chan result, 1)
	go func() {
		ch, _, err := agent.NodeAllocationChanges(ctx, n.ID, full.Index, false, &api.QueryOptions{Index: full.Index, Wait: 20 * time.Second})
		woke <- result{ch, err}
	}()
	if _, err := c.StopJob(ctx, "web", false); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-woke:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.ch.Index <= full.Index || r.ch.Count != 3 || len(r.ch.Allocs) != 3 || len(r.ch.Jobs) != 1 {
			t.Fatalf("after the stop: index %d count %d allocs %d jobs %d", r.ch.Index, r.ch.Count, len(r.ch.Allocs), len(r.ch.Jobs))
		}
		for _, al := range r.ch.Allocs {
			if al.DesiredStatus != caravan.AllocDesiredStop || al.AllocModifyIndex <= full.Index {
				t.Errorf("allocation %s: %s at %d", al.ID, al.DesiredStatus, al.AllocModifyIndex)
			}
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the watch did not wake for the stop")
	}

	// Bad input is refused, and the secret is required.
	base := ts.url + "/v1/node/" + n.ID + "/allocations"
	for _, q := range []string{"?since=x", "?since=-1", "?since=1&ids=maybe"} {
		if a := call(t, http.MethodGet, base+q, "", api.HeaderNodeSecret+": "+n.SecretID); a.status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, a.status, a.body)
		}
	}
	if a := call(t, http.MethodGet, base+"?since=0", ""); a.status != http.StatusForbidden {
		t.Errorf("without the secret: %d %s", a.status, a.body)
	}
}
