package cli_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testcluster"
)

// An error answer of the API is printed with its field paths and request
// id.
func TestAPIErrorsShowFieldsAndRequestID(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-Id", "req-42")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(caravan.ErrorResponse{
			Error: "job.priority: 500 is out of range; job.task_groups[0].count: -1 is out of range",
			Fields: []caravan.FieldError{
				{Path: "job.priority", Message: "500 is out of range [1, 100]"},
				{Path: "job.task_groups[0].count", Message: "-1 is out of range [0, 1000000]"},
			},
			RequestID: "req-42",
		})
	}))
	defer srv.Close()
	job := filepath.Join(t.TempDir(), "j.hcl")
	writeFile(t, job, "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      config {\n        command = \"true\"\n      }\n    }\n  }\n}\n")
	r := runCLI(testContext(t), []string{"CARAVAN_ADDR=" + srv.URL}, nil, "job", "run", job)
	want := `Error: submit job: the server refused the request (HTTP 400):
  job.priority: 500 is out of range [1, 100]
  job.task_groups[0].count: -1 is out of range [0, 1000000]
  (request id req-42)
`
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", r.code, r.stderr, want)
	}
}

// caravan agent reads its file and flags, registers its node, and stops
// when interrupted.
func TestAgentCommandRegistersItsNode(t *testing.T) {
	ts := startServer(t)
	t.Cleanup(removeTestCgroupParent)
	dir := t.TempDir()
	conf := filepath.Join(dir, "agent.hcl")
	writeFile(t, conf, fmt.Sprintf("agent {\n  cgroup_parent  = %q\n  disable_docker = true\n  node_pool = \"from-file\"\n}\n", testCgroupParent))
	ctx, cancel := testContextWithCancel(t)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() {
		done <- runAgent(ctx, logs, "agent", "--config", conf, "--data-dir", filepath.Join(dir, "data"),
			"--servers", strings.TrimPrefix(ts.addr, "http://"), "--http-port", fmt.Sprint(testcluster.FreePort(t)),
			"--node-name", "edge-1", "--datacenter", "dc7", "--node-pool", "gpu", "--meta", "rack=r1", "--meta", "zone=z2")
	}()
	c := ts.client(t)
	var node *caravan.Node
	waitFor(t, 30*time.Second, "the agent's node", func() bool {
		nodes, _, err := c.Nodes(ctx, nil)
		if err != nil || len(nodes) != 1 {
			return false
		}
		node = nodes[0]
		return true
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("caravan agent: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("caravan agent did not stop within 30s")
	}
	if node.Name != "edge-1" || node.Datacenter != "dc7" || node.NodePool != "gpu" ||
		node.Meta["rack"] != "r1" || node.Meta["zone"] != "z2" {
		t.Errorf("node = name %q dc %q pool %q meta %v", node.Name, node.Datacenter, node.NodePool, node.Meta)
	}
}
