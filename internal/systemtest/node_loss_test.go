package systemtest

import (
	"slices"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestNodeLossReplacesAllocations runs one server and two agents on this
// machine with a service job of count 2, kills the agent that holds the
// most of it with SIGKILL, and checks that the server marks its node down
// after the heartbeat TTL, marks its allocations lost and places them on
// the other agent, where they really run. The killed agent's tasks go on
// running meanwhile; started again, the agent stops them, so that nothing
// runs twice.
func TestNodeLossReplacesAllocations(t *testing.T) {
	testenv.RequireCgroups(t)
	sb := newSandbox(t)
	const ttl, grace = 2 * time.Second, time.Second
	srv := sb.newServer("server", serverConfig(ttl.String(), grace.String()))
	srv.start()
	srv.waitHealthy(t)
	c := sb.client(srv.addr)
	agentA, parentA := sb.newAgent("node-a", srv.addr)
	agentB, parentB := sb.newAgent("node-b", srv.addr)
	agentA.start()
	agentB.start()
	nodes := map[string]*caravan.Node{
		"node-a": readyNode(t, c, "node-a", startWait),
		"node-b": readyNode(t, c, "node-b", startWait),
	}
	agents := map[string]*daemon{"node-a": agentA, "node-b": agentB}
	parents := map[string]string{"node-a": parentA, "node-b": parentB}

	mustRegister(t, c, execJob("web", caravan.JobTypeService, "sleep 300", 2))
	var first []*caravan.Allocation
	waitFor(t, 30*time.Second, "2 allocations running", func() bool {
		first = running(jobAllocs(c, "web"))
		return len(first) == 2
	})
	perNode := map[string][]*caravan.Allocation{}
	for _, a := range first {
		perNode[a.NodeName] = append(perNode[a.NodeName], a)
	}
	victim, survivor := "node-a", "node-b"
	if len(perNode["node-b"]) > len(perNode["node-a"]) {
		victim, survivor = survivor, victim
	}
	lostAllocs := perNode[victim]
	var lostProcs []procID
	for _, a := range lostAllocs {
		ps := processes(taskPids(parents[victim], a.ID, "t"))
		if len(ps) == 0 {
			t.Fatalf("allocation %s runs no process in its cgroup", a.ID)
		}
		lostProcs = append(lostProcs, ps...)
	}
	t.Logf("allocations per node: %s %d, %s %d; killing the agent of %s", victim, len(perNode[victim]), survivor, len(perNode[survivor]), victim)

	agents[victim].proc.kill9(t)
	killed := time.Now()
	var downAfter, lostAfter time.Duration
	waitFor(t, 30*time.Second, victim+" down and its allocations lost", func() bool {
		if downAfter == 0 {
			ctx, cancel := reqCtx()
			n, _, err := c.Node(ctx, nodes[victim].ID, nil)
			cancel()
			if err == nil && n.Status == caravan.NodeStatusDown {
				downAfter = time.Since(killed)
			}
		}
		if lostAfter == 0 {
			all := true
			for _, a := range lostAllocs {
				if got := alloc(c, a.ID); got == nil || got.ClientStatus != caravan.AllocClientLost {
					all = false
				}
			}
			if all {
				lostAfter = time.Since(killed)
			}
		}
		return downAfter > 0 && lostAfter > 0
	})
	t.Logf("after SIGKILL of its agent (TTL %v + grace %v): node down in %v, its allocations lost in %v",
		ttl, grace, downAfter.Round(time.Millisecond), lostAfter.Round(time.Millisecond))

	var replacements []*caravan.Allocation
	var replacementProcs []procID
	replaced := waitFor(t, 30*time.Second, "2 allocations running on "+survivor+", each with its processes", func() bool {
		now := running(jobAllocs(c, "web"))
		if len(now) != 2 {
			return false
		}
		var procs []procID
		for _, a := range now {
			ps := processes(taskPids(parents[survivor], a.ID, "t"))
			if a.NodeName != survivor || !slices.ContainsFunc(ps, func(p procID) bool { return p.Comm == "sleep" }) {
				return false
			}
			procs = append(procs, ps...)
		}
		replacements, replacementProcs = now, procs
		return true
	})
	t.Logf("replacements running on %s %v after the kill (%v after the allocations were lost)", survivor, (lostAfter + replaced).Round(time.Millisecond), replaced.Round(time.Millisecond))
	for _, a := range replacements {
		if slices.ContainsFunc(first, func(f *caravan.Allocation) bool { return f.ID == a.ID }) {
			continue // it ran on the survivor from the start
		}
		if !slices.ContainsFunc(lostAllocs, func(l *caravan.Allocation) bool { return l.ID == a.PreviousAllocation }) {
			t.Errorf("replacement %s names previous allocation %q, not one of the lost ones", a.ID, a.PreviousAllocation)
		}
	}
	// The dead agent's tasks still run: without an agent nothing stops them.
	stillRunning := 0
	for _, p := range lostProcs {
		if alive(p) {
			stillRunning++
		}
	}
	t.Logf("%d of %d processes of the lost allocations still run on %s while its agent is down", stillRunning, len(lostProcs), victim)

	agents[victim].start()
	restarted := time.Now()
	stoppedAfter := waitFor(t, 30*time.Second, "the restarted agent to stop the lost allocations' processes", func() bool {
		if slices.ContainsFunc(lostProcs, alive) {
			return false
		}
		for _, a := range lostAllocs {
			if len(taskPids(parents[victim], a.ID, "t")) > 0 {
				return false
			}
		}
		return true
	})
	back := readyNode(t, c, victim, 30*time.Second)
	t.Logf("agent of %s restarted: lost allocations' processes stopped in %v, node ready again %v after the restart",
		victim, stoppedAfter.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	if back.ID != nodes[victim].ID {
		t.Errorf("the restarted agent registered node %s, was %s", back.ID, nodes[victim].ID)
	}

	// Give the restarted agent's reports time to land, then check that the
	// job runs exactly twice, on the survivor, undisturbed.
	time.Sleep(time.Second)
	now := running(jobAllocs(c, "web"))
	if len(now) != 2 {
		t.Errorf("%d allocations of web run after the agent came back, want 2", len(now))
	}
	for _, a := range now {
		if a.NodeName != survivor {
			t.Errorf("allocation %s runs on %s, want %s", a.ID, a.NodeName, survivor)
		}
	}
	for _, p := range replacementProcs {
		if !alive(p) {
			t.Errorf("replacement process %+v ended when the agent of %s came back", p, victim)
		}
	}
	for _, a := range lostAllocs {
		got := alloc(c, a.ID)
		if got == nil || !got.ClientTerminal() || !got.ServerTerminal() {
			t.Errorf("lost allocation after the agent came back: %+v", got)
		} else {
			t.Logf("lost allocation %s after the agent came back: desired %s, client %s (%s)", a.ID, got.DesiredStatus, got.ClientStatus, got.TerminalReason)
		}
	}
}

// running keeps the allocations the servers want running and the agent
// reports running.
func running(allocs []*caravan.Allocation) []*caravan.Allocation {
	var out []*caravan.Allocation
	for _, a := range allocs {
		if a.DesiredStatus == caravan.AllocDesiredRun && a.ClientStatus == caravan.AllocClientRunning {
			out = append(out, a)
		}
	}
	return out
}
