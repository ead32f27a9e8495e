package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/supervisor"
	"github.com/caravan-sched/caravan/internal/taskrunner/fakedriver"
)

// superviseEnv makes the test binary act as `caravan supervise`, so tests
// with the real exec driver need no build of the caravan binary.
const superviseEnv = "CARAVAN_TEST_AGENT_SUPERVISE"

func TestMain(m *testing.M) {
	if os.Getenv(superviseEnv) == "1" {
		os.Exit(supervisor.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// testLogger writes the agent's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelDebug
	if _, ok := t.(*testing.B); ok {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// running is an agent started by a test.
type running struct {
	*Agent
	cancel context.CancelFunc
	errc   chan error
}

// stop cancels Run (as kill -9 leaves things: tasks go on) and waits.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.errc:
		if err != nil {
			t.Errorf("agent Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
}

// startAgent runs an agent until the test ends.
func startAgent(t testing.TB, cfg Config) *running {
	t.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.UpdateInterval == 0 {
		cfg.UpdateInterval = 20 * time.Millisecond
	}
	if cfg.BlockingWait == 0 {
		cfg.BlockingWait = 2 * time.Second
	}
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = 200 * time.Millisecond
	}
	a, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Agent: a, cancel: cancel, errc: make(chan error, 1)}
	go func() { r.errc <- a.Run(ctx) }()
	select {
	case <-a.Ready():
	case err := <-r.errc:
		cancel()
		t.Fatalf("agent Run: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("agent not ready")
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-r.errc
		}
	})
	origCancel := r.cancel
	r.cancel = func() { stopped = true; origCancel() }
	return r
}

// fakeSetup is a fake server, a fake driver world and an agent config
// using both.
func fakeSetup(t *testing.T, ttl time.Duration) (*fakeServer, *fakedriver.World, Config) {
	srv := newFakeServer(t, ttl)
	w := fakedriver.NewWorld()
	t.Cleanup(w.Close)
	cfg := Config{
		DataDir: t.TempDir(), Servers: []string{srv.addr()}, NodeName: "node-a",
		Meta:    map[string]string{"rack": "r1"},
		Drivers: []driver.Driver{fakedriver.New("exec", w), fakedriver.New("docker", w)},
	}
	return srv, w, cfg
}

func TestAgentRegistersAndHeartbeats(t *testing.T) {
	srv, _, cfg := fakeSetup(t, 300*time.Millisecond)
	cfg.ReservedCPU, cfg.ReservedMemory = 100, 256
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "two heartbeats", func() bool { _, hb := srv.counts(); return hb >= 2 })
	n := srv.node(a.NodeID())
	if n == nil {
		t.Fatal("node not registered")
	}
	checks := []struct {
		what      string
		got, want any
	}{
		{"name", n.Name, "node-a"},
		{"http addr", n.HTTPAddr, a.HTTPAddr()},
		{"datacenter", n.Datacenter, "dc1"},
		{"pool", n.NodePool, caravan.DefaultNodePool},
		{"meta", n.Meta["rack"], "r1"},
		{"exec detected", n.Drivers["exec"].Detected, true},
		{"driver attribute", n.Attributes["driver.exec"], "1"},
		{"reserved", [2]any{n.Reserved.CPU, n.Reserved.Memory}, [2]any{100, caravan.MemoryMB(256)}},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if n.Resources.CPU <= 0 || n.Resources.Memory <= 0 || len(n.Resources.Cores) == 0 {
		t.Errorf("resources = %+v, want capacity", n.Resources)
	}
	for _, k := range []string{"os", "arch", "kernel.version", "cpu.numcores", "cpu.frequency", "memory.totalbytes"} {
		if n.Attributes[k] == "" {
			t.Errorf("attribute %s missing", k)
		}
	}
}

func TestAgentKeepsItsIdentity(t *testing.T) {
	_, _, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	first := a.NodeID()
	a.stop(t)
	b := startAgent(t, cfg)
	if b.NodeID() != first {
		t.Errorf("node id after restart = %s, want %s", b.NodeID(), first)
	}
}

func TestAgentRunsAllocations(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })

	batch := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch, execTask("main", "exit 0 after 200ms")))
	service := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("web", "run"), execTask("side", "run")))
	srv.addAlloc(batch)
	srv.addAlloc(service)

	waitFor(t, 10*time.Second, "batch complete", func() bool {
		al := srv.alloc(batch.ID)
		return al.ClientStatus == caravan.AllocClientComplete
	})
	if got := srv.alloc(batch.ID); got.TerminalReason != caravan.TaskStateComplete || got.TaskStates["main"].State != caravan.TaskStateComplete {
		t.Errorf("batch = %s/%s, task %+v", got.ClientStatus, got.TerminalReason, got.TaskStates["main"])
	}
	// Pending is reported only when the start takes longer than one
	// batch of updates.
	statuses := dedupe(srv.statuses(batch.ID))
	if len(statuses) > 0 && statuses[0] == caravan.AllocClientPending {
		statuses = statuses[1:]
	}
	if diff := cmp.Diff([]string{"running", "complete"}, statuses); diff != "" {
		t.Errorf("batch statuses (-want +got):\n%s", diff)
	}
	waitFor(t, 10*time.Second, "service running", func() bool {
		return srv.alloc(service.ID).ClientStatus == caravan.AllocClientRunning
	})

	// The servers stop the service: every task is cancelled.
	srv.setDesired(service.ID, caravan.AllocDesiredStop)
	waitFor(t, 10*time.Second, "service stopped", func() bool {
		return srv.alloc(service.ID).ClientStatus == caravan.AllocClientComplete
	})
	got := srv.alloc(service.ID)
	if got.TerminalReason != caravan.TaskStateCancelled {
		t.Errorf("terminal reason = %s, want cancelled", got.TerminalReason)
	}
	for name, ts := range got.TaskStates {
		if ts.State != caravan.TaskStateCancelled {
			t.Errorf("task %s = %s, want cancelled", name, ts.State)
		}
	}
	if w.Running(service.ID + "/web") {
		t.Error("web still runs")
	}

	// Garbage collection on the servers: the agent forgets the allocation.
	dir := filepath.Join(cfg.DataDir, "alloc", batch.ID)
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("allocation dir: %v", err)
	}
	srv.removeAlloc(batch.ID)
	waitFor(t, 10*time.Second, "allocation forgotten", func() bool {
		_, err := a.lookup(batch.ID)
		return errors.Is(err, caravan.ErrNotFound)
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("allocation dir after removal: %v, want it gone", err)
	}
	stored, _, err := a.db.Allocs()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stored {
		if s.Alloc.ID == batch.ID {
			t.Error("state file still holds the removed allocation")
		}
	}
	finished, _, err := a.db.Finished()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range finished {
		if f.ID == batch.ID {
			t.Error("state file still holds the removed allocation as finished")
		}
	}
}

// dedupe drops consecutive repeats.
func dedupe(s []string) []string { return slices.Compact(slices.Clone(s)) }

func TestAgentRestartReattaches(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	al := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch, execTask("long", "run"), execTask("short", "run")))
	srv.addAlloc(al)
	waitFor(t, 10*time.Second, "running", func() bool { return srv.alloc(al.ID).ClientStatus == caravan.AllocClientRunning })
	a.stop(t) // like kill -9: the tasks go on

	if !w.Running(al.ID+"/long") || !w.Running(al.ID+"/short") {
		t.Fatal("stopping the agent stopped tasks")
	}
	w.Exit(al.ID+"/short", 7) // exits while no agent runs

	b := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "exit reported", func() bool {
		ts := srv.alloc(al.ID).TaskStates["short"]
		return ts != nil && ts.State == caravan.TaskStateFailed
	})
	got := srv.alloc(al.ID)
	if ts := got.TaskStates["short"]; ts.ExitCode != 7 {
		t.Errorf("short exit code = %d, want 7", ts.ExitCode)
	}
	// short failed for good, so long is stopped as its sibling.
	waitFor(t, 10*time.Second, "allocation failed", func() bool { return srv.alloc(al.ID).ClientStatus == caravan.AllocClientFailed })
	var starts int
	for _, c := range w.Calls() {
		if c == "start "+al.ID+"/long" || c == "start "+al.ID+"/short" {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("tasks started %d times in all, want 2 (no restart after the agent restart)", starts)
	}
	events := srv.alloc(al.ID).TaskStates["long"].Events
	var types []string
	for _, e := range events {
		types = append(types, e.Type)
	}
	if !slices.Contains(types, caravan.TaskEventReattached) || !slices.Contains(types, caravan.TaskEventSiblingFailed) {
		t.Errorf("long's events = %v, want reattached and sibling_failed", types)
	}
	_ = b
}

func TestAgentStopsWhatTheServersNoLongerWant(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	keep := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	gone := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	replaced := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	for _, al := range []*caravan.Allocation{keep, gone, replaced} {
		srv.addAlloc(al)
	}
	waitFor(t, 10*time.Second, "all running", func() bool {
		return w.Running(keep.ID+"/t") && w.Running(gone.ID+"/t") && w.Running(replaced.ID+"/t")
	})
	a.stop(t)
	// Meanwhile the servers forgot one and replaced another.
	srv.removeAlloc(gone.ID)
	srv.setDesired(replaced.ID, caravan.AllocDesiredStop)
	startAgent(t, cfg)
	waitFor(t, 10*time.Second, "unwanted tasks stopped", func() bool {
		return !w.Running(gone.ID+"/t") && !w.Running(replaced.ID+"/t")
	})
	if !w.Running(keep.ID + "/t") {
		t.Error("the wanted allocation was stopped")
	}
	waitFor(t, 10*time.Second, "replaced reported", func() bool {
		return srv.alloc(replaced.ID).ClientStatus == caravan.AllocClientComplete
	})
}

func TestAgentDisconnect(t *testing.T) {
	srv, w, cfg := fakeSetup(t, 300*time.Millisecond)
	cfg.MaxClientDisconnect = 1500 * time.Millisecond
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	short := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	long := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("t", "run")))
	srv.addAlloc(short)
	srv.addAlloc(long)
	waitFor(t, 10*time.Second, "running", func() bool {
		return srv.alloc(short.ID).ClientStatus == caravan.AllocClientRunning && srv.alloc(long.ID).ClientStatus == caravan.AllocClientRunning
	})

	// A short outage: tasks go on; the servers replaced one meanwhile.
	srv.setDown(true)
	time.Sleep(600 * time.Millisecond)
	if !w.Running(short.ID+"/t") || !w.Running(long.ID+"/t") {
		t.Fatal("tasks stopped during a short outage")
	}
	regs, _ := srv.counts()
	srv.setDesired(short.ID, caravan.AllocDesiredStop)
	srv.setDown(false)
	waitFor(t, 10*time.Second, "registered again", func() bool { r, _ := srv.counts(); return r > regs })
	waitFor(t, 10*time.Second, "replaced allocation stopped", func() bool { return !w.Running(short.ID + "/t") })
	if !w.Running(long.ID + "/t") {
		t.Fatal("the other allocation stopped")
	}

	// A long outage: after max_client_disconnect every task stops, lost.
	srv.setDown(true)
	waitFor(t, 10*time.Second, "tasks stopped", func() bool { return !w.Running(long.ID + "/t") })
	srv.setDown(false)
	waitFor(t, 10*time.Second, "lost reported", func() bool { return srv.alloc(long.ID).ClientStatus == caravan.AllocClientLost })
	got := srv.alloc(long.ID)
	if got.TerminalReason != caravan.TaskStateLost || got.TaskStates["t"].State != caravan.TaskStateLost {
		t.Errorf("after a long outage: %s/%s, task %s", got.ClientStatus, got.TerminalReason, got.TaskStates["t"].State)
	}
}

func TestAgentNoticesDriverHealth(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	cfg.FingerprintInterval = 50 * time.Millisecond
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	if n := srv.node(a.NodeID()); !n.Drivers["docker"].Healthy {
		t.Fatal("docker unhealthy at start")
	}
	w.SetHealthy("docker", false)
	waitFor(t, 10*time.Second, "docker reported unhealthy", func() bool {
		n := srv.node(a.NodeID())
		return !n.Drivers["docker"].Healthy && n.Attributes["driver.docker"] == "" && n.Attributes["driver.exec"] == "1"
	})
	w.SetHealthy("docker", true)
	waitFor(t, 10*time.Second, "docker healthy again", func() bool { return srv.node(a.NodeID()).Drivers["docker"].Healthy })
}

func TestAgentRegistersAgainWhenForgotten(t *testing.T) {
	srv, _, cfg := fakeSetup(t, 200*time.Millisecond)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	srv.forgetNodes()
	waitFor(t, 10*time.Second, "registered again", func() bool { return srv.node(a.NodeID()) != nil })
}

func TestAgentRefusesAnAllocationWithoutItsJob(t *testing.T) {
	srv, _, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	bad := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch, execTask("t", "run")))
	bad.Job = nil
	srv.addAlloc(bad)
	waitFor(t, 10*time.Second, "failure reported", func() bool { return srv.alloc(bad.ID).ClientStatus == caravan.AllocClientFailed })
}

func TestNewChecksConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no data dir", Config{Servers: []string{"127.0.0.1:1"}}},
		{"no servers", Config{DataDir: "/tmp/x"}},
		{"bad server", Config{DataDir: "/tmp/x", Servers: []string{"nope"}}},
		{"bad http addr", Config{DataDir: "/tmp/x", Servers: []string{"127.0.0.1:1"}, HTTPAddr: "8501"}},
		{"bad pool", Config{DataDir: "/tmp/x", Servers: []string{"127.0.0.1:1"}, NodePool: "a b"}},
		{"negative reservation", Config{DataDir: "/tmp/x", Servers: []string{"127.0.0.1:1"}, ReservedCPU: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, nil); !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("New = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestSecondAgentOnTheSameDataDirFails(t *testing.T) {
	_, _, cfg := fakeSetup(t, time.Second)
	startAgent(t, cfg)
	cfg.HTTPAddr = "127.0.0.1:0"
	b, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Run(ctx); err == nil {
		t.Error("a second agent ran on a data dir in use")
	}
}
