package agent

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// call sends a request to the agent API and returns the status and body.
func call(t *testing.T, method, url string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func TestAgentHTTPAPI(t *testing.T) {
	srv, w, cfg := fakeSetup(t, time.Second)
	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	two := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, execTask("web", "run"), execTask("db", "run")))
	srv.addAlloc(two)
	waitFor(t, 10*time.Second, "running", func() bool { return srv.alloc(two.ID).ClientStatus == caravan.AllocClientRunning })
	base := "http://" + a.HTTPAddr()
	logs := base + "/v1/client/allocation/" + two.ID + "/logs"

	errorTests := []struct {
		name, method, url string
		status            int
		contains          string
	}{
		{"unknown allocation", "GET", base + "/allocations/" + caravan.NewID(), 404, "not found"},
		{"unknown route", "GET", base + "/nope", 404, "no route"},
		{"unknown allocation logs", "GET", base + "/v1/client/allocation/" + caravan.NewID() + "/logs?task=web", 404, "not found"},
		{"logs without task of a two-task group", "GET", logs, 400, "task: missing"},
		{"logs of an unknown task", "GET", logs + "?task=nope", 404, `task "nope"`},
		{"bad type", "GET", logs + "?task=web&type=stdin", 400, "type"},
		{"bad follow", "GET", logs + "?task=web&follow=maybe", 400, "follow"},
		{"negative offset", "GET", logs + "?task=web&offset=-1", 400, "offset"},
		{"bad offset", "GET", logs + "?task=web&offset=ten", 400, "offset"},
		{"bad origin", "GET", logs + "?task=web&origin=middle", 400, "origin"},
		{"delete unknown", "DELETE", base + "/allocations/" + caravan.NewID(), 404, "not found"},
	}
	for _, tc := range errorTests {
		t.Run(tc.name, func(t *testing.T) {
			status, body := call(t, tc.method, tc.url)
			var e caravan.ErrorResponse
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("body %q is not a JSON error: %v", body, err)
			}
			if status != tc.status || !strings.Contains(e.Error, tc.contains) || e.RequestID == "" {
				t.Errorf("%d %+v, want %d containing %q with a request id", status, e, tc.status, tc.contains)
			}
		})
	}

	t.Run("list", func(t *testing.T) {
		status, body := call(t, "GET", base+"/allocations")
		var list []*caravan.Allocation
		if err := json.Unmarshal(body, &list); err != nil || status != 200 {
			t.Fatalf("%d %s: %v", status, body, err)
		}
		if len(list) != 1 || list[0].ID != two.ID || list[0].Job != nil || list[0].ClientStatus != caravan.AllocClientRunning || len(list[0].TaskStates) != 2 {
			t.Errorf("list = %+v", list)
		}
	})
	t.Run("one by prefix", func(t *testing.T) {
		status, body := call(t, "GET", base+"/allocations/"+two.ID[:8])
		var al caravan.Allocation
		if err := json.Unmarshal(body, &al); err != nil || status != 200 {
			t.Fatalf("%d %s: %v", status, body, err)
		}
		if al.ID != two.ID || al.Job == nil || al.TaskStates["web"].State != caravan.TaskStateRunning {
			t.Errorf("allocation = %+v", al)
		}
	})
	t.Run("health", func(t *testing.T) {
		status, body := call(t, "GET", base+"/v1/agent/health")
		var h caravan.Health
		if err := json.Unmarshal(body, &h); err != nil || status != 200 || !h.OK || h.Agent != a.NodeID() {
			t.Errorf("%d %s", status, body)
		}
	})
	t.Run("request id is echoed", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/v1/agent/health", nil)
		req.Header.Set(api.HeaderRequestID, "abc-123")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get(api.HeaderRequestID); got != "abc-123" {
			t.Errorf("request id = %q", got)
		}
	})
	t.Run("delete stops it here and on the servers", func(t *testing.T) {
		status, body := call(t, "DELETE", base+"/allocations/"+two.ID)
		var out StopResponse
		if err := json.Unmarshal(body, &out); err != nil || status != 200 || out.ID != two.ID || out.EvalID == "" || out.Warning != "" {
			t.Fatalf("%d %s", status, body)
		}
		waitFor(t, 10*time.Second, "stopped", func() bool { return !w.Running(two.ID+"/web") && !w.Running(two.ID+"/db") })
		waitFor(t, 10*time.Second, "reported", func() bool {
			al := srv.alloc(two.ID)
			return al.ClientStatus == caravan.AllocClientComplete && al.TerminalReason == caravan.TaskStateCancelled
		})
		if al := srv.alloc(two.ID); al.DesiredStatus != caravan.AllocDesiredStop {
			t.Errorf("desired status on the servers = %s, want stop", al.DesiredStatus)
		}
	})
	t.Run("health without servers", func(t *testing.T) {
		srv.setDown(true)
		defer srv.setDown(false)
		waitFor(t, 10*time.Second, "unhealthy", func() bool {
			status, _ := call(t, "GET", base+"/v1/agent/health")
			return status == http.StatusServiceUnavailable
		})
	})
}
