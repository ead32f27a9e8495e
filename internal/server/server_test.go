package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/config"
)

// freePort returns a port free on 127.0.0.1 right now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testConfig(t testing.TB, name string) *config.Config {
	t.Helper()
	c := config.Default()
	c.Name = name
	c.DataDir = t.TempDir()
	c.Server.HTTPPort = freePort(t)
	c.Server.RaftPort = freePort(t)
	c.Server.FastRaft = true
	c.Server.MinHeartbeatTTL = "2s"
	c.Server.HeartbeatGrace = "1s"
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CARAVAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer runs a server until the test ends and waits for leadership.
func startServer(t testing.TB, cfg *config.Config) *Server {
	t.Helper()
	s, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server Run: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "leadership", func() bool { return s.IsLeader() })
	return s
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func simNode(i int) *caravan.Node {
	n := &caravan.Node{
		ID:       caravan.NewID(),
		SecretID: caravan.NewID(),
		Name:     fmt.Sprintf("sim-%d", i),
		Status:   caravan.NodeStatusReady,
		Resources: caravan.NodeResources{
			CPU: 4000, Memory: 8192, Cores: []int{0, 1, 2, 3},
		},
		Attributes: map[string]string{"os": "linux", "arch": "amd64"},
		Drivers:    map[string]caravan.DriverInfo{"exec": {Detected: true, Healthy: true}},
	}
	return n
}

func TestSingleServerPlacesAJob(t *testing.T) {
	s := startServer(t, testConfig(t, "s1"))
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if _, err := s.RegisterNode(ctx, simNode(i)); err != nil {
			t.Fatal(err)
		}
	}
	count := 5
	job := &caravan.Job{TaskGroups: []*caravan.TaskGroup{{Count: &count, Tasks: []*caravan.Task{{Config: caravan.TaskConfig{Command: "sleep 100"}}}}}}
	resp, err := s.RegisterJob(ctx, job, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp.JobID != "1001" {
		t.Errorf("job id = %q, want 1001", resp.JobID)
	}
	waitFor(t, 10*time.Second, "5 allocations", func() bool {
		allocs, _ := s.State().Snapshot().AllocsByJob(resp.JobID)
		return len(allocs) == 5
	})
	eval, err := s.State().Snapshot().EvalByID(resp.EvalID)
	if err != nil || eval.Status != caravan.EvalStatusComplete {
		t.Errorf("eval = %+v, %v", eval, err)
	}
}
