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
