package systemtest

import (
	"slices"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestServerKill9AgentCarriesOn kills the only server with SIGKILL while
// an agent runs a service task, and starts it again on its data dir: the
// task is not disturbed, the agent finds the server again (same node, no
// new registration, its watch and heartbeats back), and new work placed
// after the restart runs on it.
func TestServerKill9AgentCarriesOn(t *testing.T) {
	testenv.RequireCgroups(t)
	sb := newSandbox(t)
	srv := sb.newServer("server", serverConfig("2s", "1s"))
	srv.start()
	srv.waitHealthy(t)
	c := sb.client(srv.addr)
	ag, parent := sb.newAgent("node1", srv.addr)
	ag.start()
	node := readyNode(t, c, "node1", startWait)

	mustRegister(t, c, execJob("svc", caravan.JobTypeService, "sleep 300", 1))
	var svc *caravan.Allocation
	waitFor(t, 30*time.Second, "the service running", func() bool {
		as := running(jobAllocs(c, "svc"))
		if len(as) == 1 {
			svc = as[0]
			return true
		}
		return false
	})
	procs := processes(taskPids(parent, svc.ID, "t"))
	if len(procs) == 0 {
		t.Fatal("the service runs no process")
	}

	srv.proc.kill9(t)
	// Longer than the heartbeat TTL: the agent notices the server is gone.
	time.Sleep(3 * time.Second)
	srv.start()
	st := srv.waitHealthy(t)
	restarted := time.Now()
	var beat time.Duration
	waitFor(t, 30*time.Second, "a heartbeat from the agent to the restarted server", func() bool {
		got := nodeNamed(c, "node1")
		if got == nil || !got.LastHeartbeat.After(restarted) {
			return false
		}
		beat = time.Since(restarted)
		return true
	})
	t.Logf("server restarted (%v); the agent heartbeated to it %v after it was healthy", st, beat.Round(time.Millisecond))

	mustRegister(t, c, execJob("after", caravan.JobTypeBatch, "echo after the restart", 1))
	took := waitFor(t, 30*time.Second, "a job submitted after the restart complete", func() bool {
		as := jobAllocs(c, "after")
		return len(as) == 1 && as[0].ClientStatus == caravan.AllocClientComplete
	})
	t.Logf("a job submitted after the restart ran to completion in %v", took.Round(time.Millisecond))

	if now := processes(taskPids(parent, svc.ID, "t")); !slices.Equal(now, procs) {
		t.Errorf("service processes were %+v before the server died, %+v after", procs, now)
	}
	a := alloc(c, svc.ID)
	if a == nil || a.ClientStatus != caravan.AllocClientRunning || countOf(eventTypes(a.TaskStates["t"]), caravan.TaskEventStarted) != 1 {
		t.Errorf("service allocation after the server restart: %+v", a)
	}
	ctx, cancel := reqCtx()
	defer cancel()
	nodes, _, err := c.Nodes(ctx, nil)
	if err != nil || len(nodes) != 1 || nodes[0].ID != node.ID || nodes[0].Status != caravan.NodeStatusReady {
		t.Errorf("nodes after the server restart: %v %+v", err, nodes)
	}
	if n := len(jobAllocs(c, "svc")); n != 1 {
		t.Errorf("svc has %d allocations after the server restart, want 1", n)
	}
}

// nodeNamed returns the node of that name as the servers show it now
// (nil when they cannot be asked or do not know it).
func nodeNamed(c *api.Client, name string) *caravan.Node {
	ctx, cancel := reqCtx()
	defer cancel()
	nodes, _, err := c.Nodes(ctx, nil)
	if err != nil {
		return nil
	}
	for _, n := range nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}
