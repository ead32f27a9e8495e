package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// startCluster runs three servers on loopback: the first bootstraps, the
// others join it through the API.
func startCluster(t *testing.T) []*testServer {
	t.Helper()
	first := runServer(t, testConfig(t, "s1"))
	waitFor(t, 10*time.Second, "the first server to lead", first.srv.IsLeader)
	servers := []*testServer{first}
	for _, name := range []string{"s2", "s3"} {
		servers = append(servers, runServer(t, testConfig(t, name, first.addr)))
	}
	waitFor(t, 20*time.Second, "three servers that know the leader's HTTP address", func() bool {
		for _, s := range servers {
			if _, err := s.srv.LeaderHTTPAddr(); err != nil {
				return false
			}
			if peers, err := s.srv.Peers(); err != nil || len(peers) != 3 {
				return false
			}
		}
		return true
	})
	return servers
}

func TestWriteForwarding(t *testing.T) {
	servers := startCluster(t)
	ctx := context.Background()
	var leader, follower *testServer
	for _, s := range servers {
		if s.srv.IsLeader() {
			leader = s
		} else if follower == nil {
			follower = s
		}
	}
	if leader == nil || follower == nil {
		t.Fatal("no leader and follower")
	}

	// Job writes through a follower.
	c := follower.client(t, "")
	resp, err := c.RegisterJob(ctx, sleepJob("web", 1))
	if err != nil {
		t.Fatalf("register through a follower: %v", err)
	}
	waitFor(t, 10*time.Second, "the job on the follower", func() bool {
		_, err := follower.srv.State().Snapshot().JobByID("web")
		return err == nil
	})
	job, meta, err := c.Job(ctx, "web", &api.QueryOptions{Index: resp.Index - 1, Wait: 5 * time.Second})
	if err != nil || job.ID != "web" || meta.LastIndex < resp.Index {
		t.Errorf("read on the follower: %v, index %v, %v", job, meta, err)
	}

	// Agent writes through a follower: register, heartbeat, updates.
	n := simNode(0)
	agent := follower.client(t, n.SecretID)
	if _, err := agent.RegisterNode(ctx, n); err != nil {
		t.Fatalf("node register through a follower: %v", err)
	}
	hb, err := agent.Heartbeat(ctx, n.ID, caravan.NodeStatusReady)
	if err != nil || hb.HeartbeatTTL <= 0 {
		t.Fatalf("heartbeat through a follower: %+v, %v", hb, err)
	}
	if got := leader.srv.LastHeartbeat(n.ID); got.IsZero() {
		t.Error("the leader did not see the forwarded heartbeat")
	}
	al := waitAllocs(t, leader, "web", 1)[0]
	if _, err := agent.UpdateAllocations(ctx, n.ID, []*caravan.AllocClientUpdate{{ID: al.ID, ClientStatus: caravan.AllocClientRunning}}); err != nil {
		t.Errorf("allocation updates through a follower: %v", err)
	}
	// Errors come back from the leader as they are.
	if _, err := agent.Heartbeat(ctx, caravan.NewID(), ""); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("forwarded heartbeat of an unknown node: %v, want 404", err)
	}
	a := call(t, http.MethodPost, follower.url+"/v1/jobs", `{"job":{"confg":1}}`, api.HeaderRequestID+": fwd-1")
	if e := a.errBody(t); a.status != http.StatusBadRequest || e.Fields[0].Path != "job.confg" || e.RequestID != "fwd-1" ||
		a.header.Values(api.HeaderRequestID)[0] != "fwd-1" || len(a.header.Values(api.HeaderRequestID)) != 1 {
		t.Errorf("forwarded bad request: %d %s %v", a.status, a.body, a.header)
	}

	// A write forwarded once is never forwarded again.
	a = call(t, http.MethodPost, follower.url+"/v1/job/web/evaluate", "{}", headerForwardedBy+": s9")
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.errBody(t).Error, "not the leader") {
		t.Errorf("a forwarded write at a follower: %d %s", a.status, a.body)
	}

	// Removing a server, through a follower.
	var other *testServer
	for _, s := range servers {
		if s != leader && s != follower {
			other = s
		}
	}
	a = call(t, http.MethodDelete, follower.url+"/v1/operator/raft/peer/"+other.cfg.Name, "")
	if a.status != http.StatusOK {
		t.Fatalf("remove peer: %d %s", a.status, a.body)
	}
	other.stop()
	if peers, err := leader.client(t, "").Peers(ctx); err != nil || len(peers) != 2 {
		t.Errorf("peers after the removal: %v, %v", peers, err)
	}

	// Without a leader, writes get 503 and health says so.
	var last *testServer
	for _, s := range servers {
		if s == follower {
			last = s
			continue
		}
		s.stop() // a second stop does nothing
	}
	waitFor(t, 20*time.Second, "the last server to lose its leader", func() bool {
		return call(t, http.MethodGet, last.url+"/v1/health", "").status == http.StatusServiceUnavailable
	})
	a = call(t, http.MethodPost, last.url+"/v1/jobs", mustJSON(t, caravan.JobRegisterRequest{Job: sleepJob("x", 1)}))
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.errBody(t).Error, "leader") {
		t.Errorf("a write without a leader: %d %s", a.status, a.body)
	}
	if a := call(t, http.MethodGet, last.url+"/v1/status/leader", ""); a.status != http.StatusServiceUnavailable {
		t.Errorf("leader without a leader: %d %s", a.status, a.body)
	}
	// Reads are still served.
	if a := call(t, http.MethodGet, last.url+"/v1/job/web", ""); a.status != http.StatusOK {
		t.Errorf("a read without a leader: %d %s", a.status, a.body)
	}
}
