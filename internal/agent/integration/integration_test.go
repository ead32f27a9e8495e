// Package integration_test runs a real caravan server in-process on
// loopback with a real agent (exec driver, cgroups) beside it: jobs go
// through registration, scheduling, the agent's watch, the task runners and
// back to the servers through batched updates. It lives apart from the
// agent's own tests so that they build without the server.
package integration_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/agent"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/supervisor"
	"github.com/caravan-sched/caravan/internal/testcluster"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// superviseEnv makes the test binary act as `caravan supervise`.
const superviseEnv = "CARAVAN_TEST_INTEGRATION_SUPERVISE"

const testCgroupParent = "caravan-test-integration"

func TestMain(m *testing.M) {
	if os.Getenv(superviseEnv) == "1" {
		os.Exit(supervisor.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// startAgent runs an agent with the real exec driver against the servers
// until the test ends; the end stops its tasks. The supervisor is this
// test binary.
func startAgent(t testing.TB, servers []string) *agent.Agent {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return startAgentWith(t, servers, agent.Config{
		SupervisorCommand: []string{self, "supervise"}, SupervisorEnv: []string{superviseEnv + "=1"},
		UpdateInterval: 50 * time.Millisecond, BlockingWait: 5 * time.Second,
	})
}

// startAgentWith runs an agent on cfg, filled in with a fresh data dir, the
// servers and the test's cgroup parent.
func startAgentWith(t testing.TB, servers []string, cfg agent.Config) *agent.Agent {
	t.Helper()
	testenv.RequireCgroups(t)
	base, err := os.MkdirTemp("", "caravan-integration-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.DataDir, cfg.Servers, cfg.HTTPAddr, cfg.NodeName = base, servers, "127.0.0.1:0", "integration"
	cfg.CgroupParent, cfg.DisableDocker, cfg.StopTasksOnShutdown = testCgroupParent, true, true
	a, err := agent.New(cfg, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("agent Run: %v", err)
		}
		os.RemoveAll(base)
		removeCgroupParent()
	})
	select {
	case <-a.Ready():
	case err := <-errc:
		t.Fatalf("agent Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("agent not ready")
	}
	return a
}

func removeCgroupParent() {
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

func execJob(id, typ, command string) *caravan.Job {
	one := 1
	return &caravan.Job{ID: id, Type: typ, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Count: &one,
		Tasks: []*caravan.Task{{Name: "t", Driver: caravan.DriverExec, Config: caravan.TaskConfig{Command: command},
			Resources: caravan.Resources{CPU: 100, Memory: 64}, KillTimeout: caravan.Duration(2 * time.Second)}},
	}}}
}

// onlyAlloc returns the job's one allocation, once there is one.
func onlyAlloc(t *testing.T, c *api.Client, jobID string) *caravan.Allocation {
	t.Helper()
	var al *caravan.Allocation
	testcluster.WaitFor(t, 30*time.Second, "an allocation of "+jobID, func() bool {
		allocs, _, err := c.JobAllocations(context.Background(), jobID, nil)
		if err != nil || len(allocs) == 0 {
			return false
		}
		al = allocs[0]
		return true
	})
	return al
}

// TestAgentWithServer runs a batch job to completion and a service job
// until it is stopped, through a real server and a real agent.
func TestAgentWithServer(t *testing.T) {
	cluster := testcluster.Start(t, testcluster.Options{})
	a := startAgent(t, cluster.Addrs())
	c := cluster.Client()
	ctx := context.Background()
	testcluster.WaitFor(t, 30*time.Second, "the node ready", func() bool {
		n, _, err := c.Node(ctx, a.NodeID(), nil)
		return err == nil && n.Status == caravan.NodeStatusReady && n.Drivers["exec"].Healthy
	})

	// A batch job runs and completes; its output is read through the
	// servers, which proxy to the agent.
	if _, err := c.RegisterJob(ctx, execJob("batch1", caravan.JobTypeBatch, `echo "hello from $CARAVAN_JOB_ID on $CARAVAN_NODE_NAME"`)); err != nil {
		t.Fatal(err)
	}
	al := onlyAlloc(t, c, "batch1")
	testcluster.WaitFor(t, 30*time.Second, "the batch allocation complete", func() bool {
		got, _, err := c.Allocation(ctx, al.ID, nil)
		return err == nil && got.ClientStatus == caravan.AllocClientComplete
	})
	got, _, err := c.Allocation(ctx, al.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID != a.NodeID() || got.TerminalReason != caravan.TaskStateComplete || got.TaskStates["t"].State != caravan.TaskStateComplete {
		t.Errorf("batch allocation: node %s, %s/%s, task %+v", got.NodeID, got.ClientStatus, got.TerminalReason, got.TaskStates["t"])
	}
	testcluster.WaitFor(t, 30*time.Second, "the batch job complete", func() bool {
		j, _, err := c.Job(ctx, "batch1", nil)
		return err == nil && j.Status == caravan.JobStatusComplete
	})
	var out bytes.Buffer
	if err := c.Logs(ctx, al.ID, api.LogOptions{Task: "t"}, &out); err != nil {
		t.Errorf("logs through the servers: %v", err)
	} else if want := "hello from batch1 on integration\n"; out.String() != want {
		t.Errorf("logs = %q, want %q", out.String(), want)
	}

	// A service job runs until it is stopped.
	if _, err := c.RegisterJob(ctx, execJob("svc1", caravan.JobTypeService, "sleep 300")); err != nil {
		t.Fatal(err)
	}
	svc := onlyAlloc(t, c, "svc1")
	testcluster.WaitFor(t, 30*time.Second, "the service running", func() bool {
		got, _, err := c.Allocation(ctx, svc.ID, nil)
		return err == nil && got.ClientStatus == caravan.AllocClientRunning
	})
	if _, err := c.StopJob(ctx, "svc1", false); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 30*time.Second, "the service stopped", func() bool {
		got, _, err := c.Allocation(ctx, svc.ID, nil)
		return err == nil && got.ClientStatus == caravan.AllocClientComplete && got.TerminalReason == caravan.TaskStateCancelled
	})
	if ts := mustAlloc(t, c, svc.ID).TaskStates["t"]; ts.State != caravan.TaskStateCancelled || !strings.Contains(eventTypes(ts), "killed") {
		t.Errorf("service task = %s, events %s", ts.State, eventTypes(ts))
	}
}

func mustAlloc(t *testing.T, c *api.Client, id string) *caravan.Allocation {
	t.Helper()
	a, _, err := c.Allocation(context.Background(), id, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func eventTypes(ts *caravan.TaskState) string {
	var types []string
	for _, e := range ts.Events {
		types = append(types, e.Type)
	}
	return strings.Join(types, ",")
}
