package systemtest

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
		t.Errorf("service allocation %s, task %s, %d restarts; want running, started once, reattached once; events:%s",
			s.ClientStatus, sts.State, sts.Restarts, eventLog(sts))
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

// TestAgentKill9CatchesUp kills an agent with SIGKILL, and while it is
// down a service task dies (its processes killed) and another job is
// stopped through the API. The agent started again restarts the first in
// place, by its restart policy, and stops the second.
func TestAgentKill9CatchesUp(t *testing.T) {
	testenv.RequireCgroups(t)
	sb := newSandbox(t)
	srv := sb.newServer("server", serverConfig("10s", "10s"))
	srv.start()
	srv.waitHealthy(t)
	c := sb.client(srv.addr)
	ag, parent := sb.newAgent("node1", srv.addr)
	ag.start()
	readyNode(t, c, "node1", startWait)

	crash := execJob("crash", caravan.JobTypeService, "sleep 300", 1)
	crash.TaskGroups[0].Restart = &caravan.RestartPolicy{Attempts: 2, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(500 * time.Millisecond), Mode: caravan.RestartModeFail}
	mustRegister(t, c, crash)
	mustRegister(t, c, execJob("orphan", caravan.JobTypeService, "sleep 300", 1))
	allocs := map[string]*caravan.Allocation{}
	waitFor(t, 30*time.Second, "both allocations running", func() bool {
		for _, job := range []string{"crash", "orphan"} {
			as := jobAllocs(c, job)
			if len(as) != 1 || as[0].ClientStatus != caravan.AllocClientRunning {
				return false
			}
			allocs[job] = as[0]
		}
		return true
	})
	crashProcs := processes(taskPids(parent, allocs["crash"].ID, "t"))
	orphanProcs := processes(taskPids(parent, allocs["orphan"].ID, "t"))
	if len(crashProcs) == 0 || len(orphanProcs) == 0 {
		t.Fatalf("task processes: crash %+v, orphan %+v", crashProcs, orphanProcs)
	}

	ag.proc.kill9(t)
	killed := time.Now()
	for _, p := range crashProcs {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
	}
	waitFor(t, 10*time.Second, "the crashed task's supervisor to record its end", func() bool {
		return len(taskPids(parent, allocs["crash"].ID, "t")) == 0 && len(pidsMentioning(allocs["crash"].ID)) == 0
	})
	stopJob(t, c, "orphan")

	ag.start()
	restarted := time.Now()
	var newCrashProcs []procID
	back := waitFor(t, 30*time.Second, "the crashed task restarted in place", func() bool {
		a := alloc(c, allocs["crash"].ID)
		if a == nil || a.ClientStatus != caravan.AllocClientRunning || a.TaskStates["t"].Restarts != 1 ||
			countOf(eventTypes(a.TaskStates["t"]), caravan.TaskEventStarted) != 2 {
			return false
		}
		newCrashProcs = processes(taskPids(parent, a.ID, "t"))
		return slices.ContainsFunc(newCrashProcs, func(p procID) bool { return p.Comm == "sleep" })
	})
	waitFor(t, 30*time.Second, "the stopped job's task ended", func() bool {
		a := alloc(c, allocs["orphan"].ID)
		return !slices.ContainsFunc(orphanProcs, alive) && a != nil && a.ClientTerminal()
	})
	t.Logf("agent down %v; after its restart the crashed task ran again in %v, the stopped job's task ended in %v",
		restarted.Sub(killed).Round(time.Millisecond), back.Round(time.Millisecond), (time.Since(restarted)).Round(time.Millisecond))
	a := alloc(c, allocs["crash"].ID)
	events := eventTypes(a.TaskStates["t"])
	t.Logf("crashed task events: %v", events)
	if countOf(events, caravan.TaskEventStarted) != 2 || countOf(events, caravan.TaskEventRestarting) != 1 {
		t.Errorf("crashed task: want two starts and one restart; events:%s", eventLog(a.TaskStates["t"]))
	}
	for _, p := range newCrashProcs {
		if slices.Contains(crashProcs, p) {
			t.Errorf("process %+v of the crashed run is back?", p)
		}
	}
	if n := len(jobAllocs(c, "crash")); n != 1 {
		t.Errorf("crash has %d allocations, want 1 (restarted in place)", n)
	}
	o := alloc(c, allocs["orphan"].ID)
	t.Logf("stopped job's allocation: desired %s, client %s (%s), task events %v", o.DesiredStatus, o.ClientStatus, o.TerminalReason, eventTypes(o.TaskStates["t"]))
	if o.TerminalReason != caravan.TaskStateCancelled {
		t.Errorf("stopped job's allocation ended %s, want cancelled", o.TerminalReason)
	}
}
