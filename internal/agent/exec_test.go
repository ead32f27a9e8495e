package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/agent/localstate"
	"github.com/caravan-sched/caravan/internal/cgroup"
	execdriver "github.com/caravan-sched/caravan/internal/driver/exec"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// testCgroupParent keeps the tests' task cgroups apart from a real agent's.
const testCgroupParent = "caravan-test-agent"

// execSetup is a fake server and an agent config with the real exec
// driver, whose supervisor is this test binary. Cleanup kills every task
// the state file still knows.
func execSetup(t *testing.T, ttl time.Duration) (*fakeServer, Config) {
	t.Helper()
	testenv.RequireCgroups(t)
	srv := newFakeServer(t, ttl)
	base, err := os.MkdirTemp("", "caravan-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	// Tasks run as nobody and must reach their directories.
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		DataDir: base, Servers: []string{srv.addr()}, NodeName: "exec-node",
		SupervisorCommand: []string{self, "supervise"}, SupervisorEnv: []string{superviseEnv + "=1"},
		CgroupParent: testCgroupParent, DisableDocker: true, TaskUser: "nobody",
	}
	t.Cleanup(func() {
		destroyLeftovers(t, cfg)
		os.RemoveAll(base)
		removeTestCgroupParent()
	})
	return srv, cfg
}

// destroyLeftovers kills the tasks of every allocation the state file
// knows, once no agent runs.
func destroyLeftovers(t testing.TB, cfg Config) {
	db, err := localstate.Open(filepath.Join(cfg.DataDir, stateFile))
	if err != nil {
		t.Logf("cleanup: %v", err)
		return
	}
	defer db.Close()
	stored, _, err := db.Allocs()
	if err != nil {
		return
	}
	d, err := execdriver.New(execdriver.Config{StateDir: filepath.Join(cfg.DataDir, execStateDir), CgroupParent: testCgroupParent,
		SupervisorCommand: cfg.SupervisorCommand})
	if err != nil {
		return
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range stored {
		for _, rec := range s.Tasks {
			if rec.Handle == nil {
				continue
			}
			if err := d.Recover(ctx, rec.Handle); err == nil {
				_ = d.Destroy(ctx, rec.Handle.TaskID)
			}
		}
	}
}

func removeTestCgroupParent() {
	m, err := cgroup.NewManager(0, "")
	if err != nil {
		return
	}
	if m.Version() == cgroup.V2 {
		_ = os.Remove(filepath.Join(m.Root(), testCgroupParent))
		return
	}
	for _, c := range m.Controllers() {
		_ = os.Remove(filepath.Join(m.Root(), c, testCgroupParent))
	}
}

func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// readPid reads a pid file a task wrote.
func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func countEvents(ts *caravan.TaskState, typ string) int {
	n := 0
	for _, e := range ts.Events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

// TestExecAgentRestart stops an agent abruptly (its tasks go on, its state
// stays in bbolt), starts a new one on the same data dir and checks that
// the running task was not restarted and that a task that exited meanwhile
// reports its real exit code.
func TestExecAgentRestart(t *testing.T) {
	srv, cfg := execSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	if n := srv.node(a.NodeID()); !n.Drivers["exec"].Healthy {
		t.Fatalf("exec driver: %+v", n.Drivers["exec"])
	}

	long := testAlloc(a.NodeID(), testJob(caravan.JobTypeService,
		execTask("long", `echo $$ > "$CARAVAN_TASK_DIR/local/pid"; exec sleep 300`)))
	short := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch,
		execTask("short", `echo $$ > "$CARAVAN_TASK_DIR/local/pid"; sleep 2; exit 7`)))
	srv.addAlloc(long)
	srv.addAlloc(short)
	longPid := filepath.Join(cfg.DataDir, "alloc", long.ID, "long", "local", "pid")
	shortPid := filepath.Join(cfg.DataDir, "alloc", short.ID, "short", "local", "pid")
	waitFor(t, 20*time.Second, "both running", func() bool {
		return srv.alloc(long.ID).ClientStatus == caravan.AllocClientRunning &&
			srv.alloc(short.ID).ClientStatus == caravan.AllocClientRunning &&
			readPid(longPid) > 0 && readPid(shortPid) > 0
	})
	pid := readPid(longPid)
	startedAt := srv.alloc(long.ID).TaskStates["long"].StartedAt

	a.stop(t) // what kill -9 leaves: tasks running, state in bbolt
	if !pidAlive(pid) {
		t.Fatal("stopping the agent stopped the task")
	}
	sp := readPid(shortPid)
	waitFor(t, 20*time.Second, "short to exit while no agent runs", func() bool { return !pidAlive(sp) })

	cfg.StopTasksOnShutdown = true // the test's end stops the tasks
	b := startAgent(t, cfg)
	waitFor(t, 20*time.Second, "the exit reported", func() bool {
		return srv.alloc(short.ID).ClientStatus == caravan.AllocClientFailed
	})
	got := srv.alloc(short.ID).TaskStates["short"]
	if got.ExitCode != 7 || got.State != caravan.TaskStateFailed {
		t.Errorf("short = %s exit %d, want failed exit 7", got.State, got.ExitCode)
	}
	waitFor(t, 10*time.Second, "long re-attached", func() bool {
		ts := srv.alloc(long.ID).TaskStates["long"]
		return ts != nil && countEvents(ts, caravan.TaskEventReattached) == 1
	})
	ts := srv.alloc(long.ID).TaskStates["long"]
	if p := readPid(longPid); p != pid || !pidAlive(pid) {
		t.Errorf("long's pid = %d (alive %v), want the same %d still running", p, pidAlive(pid), pid)
	}
	if n := countEvents(ts, caravan.TaskEventStarted); n != 1 || ts.State != caravan.TaskStateRunning || !ts.StartedAt.Equal(startedAt) {
		t.Errorf("long: %d started events, state %s, started at %s (was %s); want one start, running, unchanged", n, ts.State, ts.StartedAt, startedAt)
	}

	// Stopping the allocation through the agent API stops the process.
	req, _ := http.NewRequest(http.MethodDelete, "http://"+b.HTTPAddr()+"/allocations/"+long.ID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE status %d", resp.StatusCode)
	}
	waitFor(t, 20*time.Second, "long stopped", func() bool { return !pidAlive(pid) })
	waitFor(t, 10*time.Second, "stop reported", func() bool {
		al := srv.alloc(long.ID)
		return al.ClientStatus == caravan.AllocClientComplete && al.TerminalReason == caravan.TaskStateCancelled
	})
}

// TestExecLogsFollow follows a task's output through the agent API while
// the task prints, and checks that the stream ends once the task is dead.
func TestExecLogsFollow(t *testing.T) {
	srv, cfg := execSetup(t, time.Second)
	cfg.StopTasksOnShutdown = true
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	al := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch,
		execTask("printer", `for i in 1 2 3 4 5; do echo "line $i"; echo "err $i" >&2; sleep 0.4; done`)))
	srv.addAlloc(al)
	waitFor(t, 10*time.Second, "allocation known", func() bool { _, err := a.lookup(al.ID); return err == nil })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := "http://" + a.HTTPAddr() + "/v1/client/allocation/" + al.ID + "/logs?task=printer&follow=true"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rd := bufio.NewReader(resp.Body)
	first, err := rd.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if first != "line 1\n" {
		t.Errorf("first line = %q", first)
	}
	// The first line came while the task still runs: the stream is live.
	e, _ := a.lookup(al.ID)
	select {
	case <-e.runner.Task("printer").Dead():
		t.Error("the first line arrived only after the task ended")
	default:
	}
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	if want := "line 2\nline 3\nline 4\nline 5\n"; string(rest) != want {
		t.Errorf("rest = %q, want %q", rest, want)
	}
	select {
	case <-e.runner.Task("printer").Dead():
	default:
		t.Error("the follow ended before the task did")
	}

	// Reads of a finished task: stderr, and the end of stdout.
	for _, tc := range []struct{ query, want string }{
		{"task=printer&type=stderr", "err 1\nerr 2\nerr 3\nerr 4\nerr 5\n"},
		{"task=printer&origin=end&offset=7", "line 5\n"},
		{"offset=28", "line 5\n"},
	} {
		resp, err := http.Get("http://" + a.HTTPAddr() + "/v1/client/allocation/" + al.ID + "/logs?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: %q (%v), want %q", tc.query, b, err, tc.want)
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("timed out")
	}
}
