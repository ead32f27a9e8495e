package systemtest

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestAgentKill9TasksSurvive kills an agent with SIGKILL while a service
// task and a batch task run (as nobody, in cgroups, under their
// supervisors), lets the batch task exit with code 7 while the agent is
// gone, and starts the agent again on its data dir: it re-attaches to the
// service task (same process, a reattached event, no second start) and
// reports the batch allocation failed with the real exit code.
func TestAgentKill9TasksSurvive(t *testing.T) {
	testenv.RequireCgroups(t)
	sb := newSandbox(t)
	// A long TTL: the node must not be marked down while its agent is away.
	srv := sb.newServer("server", serverConfig("10s", "10s"))
	srv.start()
	srv.waitHealthy(t)
	c := sb.client(srv.addr)
	ag, parent := sb.newAgent("node1", srv.addr)
	ag.start()
	node := readyNode(t, c, "node1", startWait)
	t.Logf("agent ready (node registered, exec healthy) %v after its start", time.Since(ag.proc.started).Round(time.Millisecond))

	// The batch task waits for a file the test makes once the agent is
	// dead, then exits 7: deterministic, where a plain sleep would race the
	// agent's start and the kill.
	trigger := filepath.Join(sb.dir("trigger"), "exit-now")
	svc := execJob("svc", caravan.JobTypeService, "sleep 300", 1)
	bat := execJob("bat", caravan.JobTypeBatch, fmt.Sprintf(
		"i=0; while [ ! -e %s ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; exit 7", trigger), 1)
	bat.TaskGroups[0].Restart = &caravan.RestartPolicy{Attempts: 0, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail}
	bat.TaskGroups[0].Reschedule = &caravan.ReschedulePolicy{Attempts: 0, Interval: caravan.Duration(time.Hour)}
	submitted := time.Now()
	mustRegister(t, c, svc)
	mustRegister(t, c, bat)

	running := map[string]*caravan.Allocation{}
	waitFor(t, 30*time.Second, "both allocations running", func() bool {
		for _, job := range []string{"svc", "bat"} {
			allocs := jobAllocs(c, job)
			if len(allocs) != 1 || allocs[0].ClientStatus != caravan.AllocClientRunning {
				return false
			}
			running[job] = allocs[0]
		}
		return true
	})
	t.Logf("both allocations running %v after the submit", time.Since(submitted).Round(time.Millisecond))
	svcAlloc, batAlloc := running["svc"], running["bat"]
	svcProcs := processes(taskPids(parent, svcAlloc.ID, "t"))
	batProcs := processes(taskPids(parent, batAlloc.ID, "t"))
	if !slices.ContainsFunc(svcProcs, func(p procID) bool { return p.Comm == "sleep" }) {
		t.Fatalf("the service task's cgroup holds no sleep: %+v", svcProcs)
	}
	if len(batProcs) == 0 {
		t.Fatalf("the batch task's cgroup holds no process")
	}
	checkUser(t, svcProcs[0].Pid, "nobody")
	t.Logf("service task processes %+v, batch task processes %+v", svcProcs, batProcs)

	ag.proc.kill9(t)
	killed := time.Now()
	// The batch task's shell lives on; its short sleeps come and go.
	batShell := slices.DeleteFunc(slices.Clone(batProcs), func(p procID) bool { return p.Comm == "sleep" })
	for _, p := range append(slices.Clone(svcProcs), batShell...) {
		if !alive(p) {
			t.Fatalf("task process %+v died with the agent", p)
		}
	}
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	exited := waitFor(t, 15*time.Second, "the batch task to exit while the agent is down", func() bool {
		return len(taskPids(parent, batAlloc.ID, "t")) == 0 && len(pidsMentioning(batAlloc.ID)) == 0
	})
	t.Logf("batch task and its supervisor gone %v after the trigger, with the agent down", exited.Round(time.Millisecond))
	if a := alloc(c, batAlloc.ID); a == nil || a.ClientStatus != caravan.AllocClientRunning {
		t.Errorf("with its agent down the server should still show the batch allocation running: %+v", a)
	}

	ag.start()
	restarted := time.Now()
	var batDone, svcBack time.Duration
	waitFor(t, 30*time.Second, "the batch allocation failed and the service task reattached", func() bool {
		if batDone == 0 {
			if a := alloc(c, batAlloc.ID); a != nil && a.ClientStatus == caravan.AllocClientFailed {
				batDone = time.Since(restarted)
			}
		}
		if svcBack == 0 {
			if a := alloc(c, svcAlloc.ID); a != nil && slices.Contains(eventTypes(a.TaskStates["t"]), caravan.TaskEventReattached) {
				svcBack = time.Since(restarted)
			}
		}
		return batDone > 0 && svcBack > 0
	})
	t.Logf("agent down %v; after its restart: batch reported failed in %v, service reattached in %v",
		restarted.Sub(killed).Round(time.Millisecond), batDone.Round(time.Millisecond), svcBack.Round(time.Millisecond))

	b := alloc(c, batAlloc.ID)
	ts := b.TaskStates["t"]
	if ts == nil || ts.State != caravan.TaskStateFailed || ts.ExitCode != 7 || b.TerminalReason != caravan.TaskStateFailed {
		t.Errorf("batch allocation: %s/%s, task %+v; want failed with exit code 7", b.ClientStatus, b.TerminalReason, ts)
	} else {
		t.Logf("batch task events: %v", eventTypes(ts))
	}
	s := alloc(c, svcAlloc.ID)
	sts := s.TaskStates["t"]
	events := eventTypes(sts)
	if s.ClientStatus != caravan.AllocClientRunning || sts.State != caravan.TaskStateRunning || sts.Restarts != 0 ||
		countOf(events, caravan.TaskEventStarted) != 1 || countOf(events, caravan.TaskEventReattached) != 1 {
		t.Errorf("service allocation %s, task %s, %d restarts, events %v; want running, started once, reattached once",
			s.ClientStatus, sts.State, sts.Restarts, events)
	}
	if now := processes(taskPids(parent, svcAlloc.ID, "t")); !slices.Equal(now, svcProcs) {
		t.Errorf("service task processes were %+v before the agent died, %+v after its restart", svcProcs, now)
	}
	for _, job := range []string{"svc", "bat"} {
		if n := len(jobAllocs(c, job)); n != 1 {
			t.Errorf("job %s has %d allocations, want still 1", job, n)
		}
	}
	if n := readyNode(t, c, "node1", 30*time.Second); n.ID != node.ID {
		t.Errorf("the restarted agent registered node %s, was %s", n.ID, node.ID)
	}

	// The re-attached agent is in control: stopping the job ends the task.
	stopJob(t, c, "svc")
	gone := waitFor(t, 30*time.Second, "the service task's processes to end after a stop", func() bool {
		return !slices.ContainsFunc(svcProcs, alive)
	})
	t.Logf("service task stopped %v after the job stop", gone.Round(time.Millisecond))
}

// checkUser fails the test unless the process runs as the named user.
func checkUser(t *testing.T, pid int, name string) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			if f[1] != u.Uid {
				t.Errorf("task process %d runs as uid %s, want %s (%s)", pid, f[1], u.Uid, name)
			}
			return
		}
	}
	t.Errorf("no Uid line in /proc/%d/status", pid)
}
