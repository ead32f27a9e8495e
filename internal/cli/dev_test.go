package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/cli"
	"github.com/caravan-sched/caravan/internal/testcluster"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// testCgroupParent keeps the tasks of these tests apart from a real agent's.
const testCgroupParent = "caravan-test-cli"

// devInstance is `caravan dev` running in-process.
type devInstance struct {
	addr   string
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startDev runs `caravan dev` on free ports with dataDir until stop (or
// the end of the test), and waits for its banner.
func startDev(t *testing.T, dataDir string) *devInstance {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "dev.hcl")
	writeFile(t, conf, fmt.Sprintf("agent {\n  cgroup_parent  = %q\n  disable_docker = true\n}\n", testCgroupParent))
	httpPort, agentPort, raftPort := testcluster.FreePort(t), testcluster.FreePort(t), testcluster.FreePort(t)
	d := &devInstance{
		addr:   fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		stdout: &syncBuffer{}, stderr: &syncBuffer{},
		done: make(chan error, 1),
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() {
		d.done <- cli.Run(ctx, []string{"dev", "--config", conf, "--data-dir", dataDir,
			"--http-port", fmt.Sprint(httpPort), "--agent-port", fmt.Sprint(agentPort), "--raft-port", fmt.Sprint(raftPort)},
			nil, strings.NewReader(""), d.stdout, d.stderr)
	}()
	t.Cleanup(func() { d.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(d.stdout.String(), "Press Ctrl-C to stop.") {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("caravan dev stopped: %v\n%s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caravan dev printed no banner within 30s\nstdout:\n%s\nstderr:\n%s", d.stdout.String(), d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

// stop interrupts dev, as Ctrl-C does, and checks that it ends cleanly.
func (d *devInstance) stop(t *testing.T) {
	t.Helper()
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("caravan dev ended with an error: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("caravan dev did not stop within 60s")
	}
}

func (d *devInstance) run(t *testing.T, args ...string) result {
	t.Helper()
	r := runCLI(testContext(t), []string{"CARAVAN_ADDR=" + d.addr}, nil, args...)
	t.Logf("$ caravan %s\n%s%s(exit %d)", strings.Join(args, " "), r.stdout, r.stderr, r.code)
	return r
}

// waitFor polls cond every 50ms for up to timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDevStartsAndStops(t *testing.T) {
	dir := t.TempDir()
	d := startDev(t, dir)
	out := d.stdout.String()
	for _, want := range []string{"API:         " + d.addr, "caravan job run job.hcl", "export CARAVAN_ADDR=" + d.addr} {
		if !strings.Contains(out, want) {
			t.Errorf("banner lacks %q:\n%s", want, out)
		}
	}
	waitFor(t, 30*time.Second, "the dev node in node status", func() bool {
		r := d.run(t, "node", "status", "--json")
		var nodes []*caravan.Node
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &nodes) == nil && len(nodes) == 1
	})
	if r := d.run(t, "server", "members"); r.code != 0 || !strings.Contains(r.stdout, "true") {
		t.Errorf("server members: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A second instance runs beside the first on other ports and data.
	d2 := startDev(t, t.TempDir())
	if r := d2.run(t, "server", "members", "--json"); r.code != 0 || strings.Contains(r.stdout, d.addr[len("http://"):]) {
		t.Errorf("second instance: exit %d, members %s", r.code, r.stdout)
	}
	d2.stop(t)
	if r := d.run(t, "job", "status"); r.code != 0 || !strings.Contains(r.stdout, "No jobs.") {
		t.Errorf("first instance after the second stopped: exit %d\n%s", r.code, r.stdout)
	}

	job := filepath.Join(t.TempDir(), "keep.json")
	writeFile(t, job, `{"id": "keep", "type": "batch", "task_groups": [{"tasks": [{"config": {"command": "true"}}]}]}`)
	if r := d.run(t, "job", "run", "--detach", job); r.code != 0 {
		t.Fatalf("job run --detach: exit %d", r.code)
	}

	d.stop(t)
	for _, sub := range []string{"server", "agent"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Errorf("data dir lacks %s: %v", sub, err)
		}
	}

	// Started again on the same data dir, dev finds its state: the job
	// and the same node.
	d = startDev(t, dir)
	if r := d.run(t, "job", "status"); r.code != 0 || !strings.Contains(r.stdout, "keep") {
		t.Errorf("job status after a restart: exit %d\n%s", r.code, r.stdout)
	}
	waitFor(t, 30*time.Second, "the one dev node after a restart", func() bool {
		r := d.run(t, "node", "status", "--json")
		var nodes []*caravan.Node
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &nodes) == nil && len(nodes) == 1
	})
}

func TestDevRunsARealProcess(t *testing.T) {
	testenv.RequireCgroups(t)
	// Tasks run as nobody and must reach their directories: the data dir
	// and every folder above it must be open to others.
	dir, err := os.MkdirTemp("", "caravan-cli-dev-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.RemoveAll(dir)
		removeTestCgroupParent()
	})
	d := startDev(t, filepath.Join(dir, "data"))
	job := filepath.Join(dir, "hello.hcl")
	writeFile(t, job, `
job "hello" {
  type = "batch"
  group "g" {
    task "say" {
      config {
        script = <<-EOT
          #!/bin/sh
          echo "hello from caravan"
          echo "to stderr" >&2
        EOT
      }
      resources {
        memory = 64
      }
    }
  }
}
`)
	waitFor(t, 30*time.Second, "a ready node with a healthy exec driver", func() bool {
		r := d.run(t, "node", "status", "--json")
		var nodes []*caravan.Node
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &nodes) == nil && len(nodes) == 1 &&
			nodes[0].Status == caravan.NodeStatusReady && nodes[0].Drivers["exec"].Healthy
	})
	if r := d.run(t, "job", "run", job); r.code != 0 || !strings.Contains(r.stdout, "Placed hello.g[0]") {
		t.Fatalf("job run: exit %d", r.code)
	}
	var st struct {
		Job         caravan.Job           `json:"job"`
		Allocations []*caravan.Allocation `json:"allocations"`
	}
	waitFor(t, 60*time.Second, "the job to complete", func() bool {
		r := d.run(t, "job", "status", "--json", "hello")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.Job.Status == caravan.JobStatusComplete
	})
	alloc := st.Allocations[0].ID
	if r := d.run(t, "alloc", "logs", alloc[:8]); r.code != 0 || r.stdout != "hello from caravan\n" {
		t.Errorf("alloc logs: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := d.run(t, "alloc", "logs", "--stderr", alloc, "say"); r.code != 0 || r.stdout != "to stderr\n" {
		t.Errorf("alloc logs --stderr: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := d.run(t, "alloc", "logs", "--tail", "8", alloc); r.code != 0 || r.stdout != "caravan\n" {
		t.Errorf("alloc logs --tail 8: exit %d, stdout %q", r.code, r.stdout)
	}
	r := d.run(t, "alloc", "status", alloc)
	for _, want := range []string{`Task "say" is complete`, "Exit code  = 0", "started"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("alloc status lacks %q", want)
		}
	}
}

// removeTestCgroupParent removes the tests' cgroup parent once empty.
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
