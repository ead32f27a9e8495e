package httpapi

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
)

// The example bodies of docs/api.md, verbatim.
const (
	nomadNode = `{
  "name": "worker-1",
  "resources": {"cpu": 4000, "memory": 8192},
  "drivers": {"exec": {"detected": true, "healthy": true}, "docker": {"detected": true, "healthy": true}}
}`
	nomadProcessJob = `{
  "id": "hello",
  "task_groups": [{
    "name": "greeter",
    "count": 2,
    "tasks": [{
      "name": "say",
      "resources": {"cpu": 100, "memory": 64},
      "config": {"command": "echo hello && sleep 3600"}
    }]
  }]
}`
	nomadContainerJob = `{
  "id": "web",
  "task_groups": [{
    "name": "frontend",
    "count": 1,
    "tasks": [{
      "name": "nginx",
      "resources": {"cpu": 200, "memory": "128M"},
      "config": {"image": "nginx:alpine", "port": 80}
    }]
  }]
}`
)

func TestMyNomadDialect(t *testing.T) {
	ts := startLeader(t)

	// An agent-style registration and heartbeat.
	a := call(t, http.MethodPost, ts.url+"/register", nomadNode)
	if a.status != http.StatusOK {
		t.Fatalf("register: %d %s", a.status, a.body)
	}
	var reg caravan.NodeRegisterResponse
	a.into(t, &reg)
	if !caravan.ValidUUID(reg.NodeID) || reg.HeartbeatTTL <= 0 {
		t.Fatalf("register answer %s", a.body)
	}
	a = call(t, http.MethodPost, ts.url+"/heartbeat", `{"node_id": "`+reg.NodeID+`"}`)
	var hb caravan.NodeRegisterResponse
	if a.status != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", a.status, a.body)
	}
	a.into(t, &hb)
	if hb.HeartbeatTTL <= 0 {
		t.Errorf("heartbeat answer %s", a.body)
	}

	// A process job and a container job.
	for _, tt := range []struct{ id, body string }{{"hello", nomadProcessJob}, {"web", nomadContainerJob}} {
		a := call(t, http.MethodPost, ts.url+"/jobs", tt.body)
		if a.status != http.StatusOK {
			t.Fatalf("POST /jobs %s: %d %s", tt.id, a.status, a.body)
		}
		var resp nomadJobResponse
		a.into(t, &resp)
		if resp.JobID != tt.id || resp.EvalID == "" || resp.Status == "" {
			t.Errorf("POST /jobs %s answered %s", tt.id, a.body)
		}
	}
	a = call(t, http.MethodGet, ts.url+"/jobs", "")
	var list []caravan.JobStub
	a.into(t, &list)
	if len(list) != 2 || list[0].ID != "hello" || list[1].ID != "web" {
		t.Errorf("GET /jobs: %s", a.body)
	}

	// GET /jobs/{id}: the job, its status, its allocations.
	var job struct {
		ID          string                          `json:"id"`
		Status      string                          `json:"status"`
		Version     uint64                          `json:"version"`
		TaskGroups  []*caravan.TaskGroup            `json:"task_groups"`
		Summary     map[string]caravan.GroupSummary `json:"summary"`
		Allocations []*caravan.Allocation           `json:"allocations"`
	}
	waitFor(t, 10*time.Second, "the allocations of hello", func() bool {
		call(t, http.MethodGet, ts.url+"/jobs/hello", "").into(t, &job)
		return len(job.Allocations) == 2
	})
	if job.ID != "hello" || job.Status != caravan.JobStatusPending && job.Status != caravan.JobStatusRunning ||
		job.Summary["greeter"].Pending != 2 || job.TaskGroups[0].Tasks[0].Driver != caravan.DriverExec {
		t.Errorf("GET /jobs/hello: %+v", job)
	}
	call(t, http.MethodGet, ts.url+"/jobs/web", "").into(t, &job)
	if got := job.TaskGroups[0].Tasks[0]; got.Driver != caravan.DriverDocker || got.Config.Port != 80 {
		t.Errorf("container task: driver %q, port %d", got.Driver, got.Config.Port)
	}

	// PUT updates, restart makes a new version.
	update := strings.Replace(nomadProcessJob, `"count": 2`, `"count": 3`, 1)
	a = call(t, http.MethodPut, ts.url+"/jobs/hello", update)
	var resp nomadJobResponse
	a.into(t, &resp)
	if a.status != http.StatusOK || resp.JobVersion != 1 {
		t.Errorf("PUT /jobs/hello: %d %s", a.status, a.body)
	}
	a = call(t, http.MethodPut, ts.url+"/jobs/other", update)
	if e := a.errBody(t); a.status != http.StatusBadRequest || e.Fields[0].Path != "id" {
		t.Errorf("PUT with another id: %d %s", a.status, a.body)
	}
	a = call(t, http.MethodPost, ts.url+"/jobs", `{"task_groups": [{"tasks": [{"confg": {}}]}]}`)
	if e := a.errBody(t); a.status != http.StatusBadRequest || e.Fields[0].Path != "task_groups[0].tasks[0].confg" {
		t.Errorf("POST /jobs with a typo: %d %s", a.status, a.body)
	}
	a = call(t, http.MethodPost, ts.url+"/jobs/hello/restart", "")
	a.into(t, &resp)
	if a.status != http.StatusOK || resp.JobVersion != 2 {
		t.Errorf("restart: %d %s", a.status, a.body)
	}

	// DELETE and POST .../delete stop.
	for _, tt := range []struct{ method, path, id string }{
		{http.MethodDelete, "/jobs/hello", "hello"},
		{http.MethodPost, "/jobs/web/delete", "web"},
	} {
		a := call(t, tt.method, ts.url+tt.path, "")
		var stop nomadStopResponse
		a.into(t, &stop)
		if a.status != http.StatusOK || stop.JobID != tt.id || stop.Status != caravan.JobStatusStopped || stop.EvalID == "" {
			t.Errorf("%s %s: %d %s", tt.method, tt.path, a.status, a.body)
		}
		call(t, http.MethodGet, ts.url+"/jobs/"+tt.id, "").into(t, &job)
		if job.Status != caravan.JobStatusStopped {
			t.Errorf("%s after stop: status %q", tt.id, job.Status)
		}
	}

	// GET /nodes, without secrets.
	a = call(t, http.MethodGet, ts.url+"/nodes", "")
	var nodes []caravan.Node
	a.into(t, &nodes)
	if len(nodes) != 1 || nodes[0].ID != reg.NodeID || nodes[0].Name != "worker-1" || nodes[0].Status != caravan.NodeStatusReady {
		t.Errorf("GET /nodes: %s", a.body)
	}
}

func TestMyNomadHeartbeatWithSecret(t *testing.T) {
	ts := startLeader(t)
	id, secret := caravan.NewID(), caravan.NewID()
	body := `{"id": "` + id + `", "secret_id": "` + secret + `", "name": "n", "resources": {"cpu": 1000, "memory": 1024}}`
	if a := call(t, http.MethodPost, ts.url+"/register", body); a.status != http.StatusOK {
		t.Fatalf("register: %d %s", a.status, a.body)
	}
	tests := []struct {
		name, body, header string
		want               int
	}{
		{"secret in the body", `{"node_id": "` + id + `", "secret_id": "` + secret + `"}`, "", 200},
		{"secret in the header", `{"node_id": "` + id + `"}`, "X-Caravan-Node-Secret: " + secret, 200},
		{"no secret", `{"node_id": "` + id + `"}`, "", 403},
		{"no node id", `{}`, "", 400},
		{"unknown field", `{"node": "x"}`, "", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var headers []string
			if tt.header != "" {
				headers = append(headers, tt.header)
			}
			if a := call(t, http.MethodPost, ts.url+"/heartbeat", tt.body, headers...); a.status != tt.want {
				t.Errorf("status %d, want %d: %s", a.status, tt.want, a.body)
			}
		})
	}
}
