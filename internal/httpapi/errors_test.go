package httpapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// TestFailurePaths sends bad requests to every kind of route and checks
// the status, the field path in the error body, and the request id.
func TestFailurePaths(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	node := registerNode(t, ts, 0)
	if _, err := c.RegisterJob(ctx, sleepJob("web", 1)); err != nil {
		t.Fatal(err)
	}
	alloc := waitAllocs(t, ts, "web", 1)[0]
	if _, err := c.RegisterJob(ctx, sleepJob("old", 1)); err != nil {
		t.Fatal(err)
	}
	// An allocation that finished, so stopping it conflicts.
	done := waitAllocs(t, ts, "old", 1)[0]
	if _, err := c.StopJob(ctx, "old", false); err != nil {
		t.Fatal(err)
	}
	agent := ts.client(t, node.SecretID)
	if _, err := agent.UpdateAllocations(ctx, node.ID, []*caravan.AllocClientUpdate{{ID: done.ID, ClientStatus: caravan.AllocClientComplete}}); err != nil {
		t.Fatal(err)
	}

	secret := api.HeaderNodeSecret + ": " + node.SecretID
	wrong := api.HeaderNodeSecret + ": " + caravan.NewID()
	unknown := caravan.NewID()
	goodJob := `{"job":{"id":"x","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"true"}}]}]}}`
	tests := []struct {
		name         string
		method, path string
		body         string
		header       string
		want         int
		wantPath     string // the first field path, when the answer is 400
	}{
		// Bodies.
		{"syntax", "POST", "/v1/jobs", `{"job":`, "", 400, ""},
		{"empty body", "POST", "/v1/jobs", ``, "", 400, ""},
		{"unknown field", "POST", "/v1/jobs", `{"job":{"task_groups":[{"tasks":[{"confg":{}}]}]}}`, "", 400, "job.task_groups[0].tasks[0].confg"},
		{"wrong type", "POST", "/v1/jobs", `{"job":{"task_groups":[{"count":"two"}]}}`, "", 400, "job.task_groups[0].count"},
		{"bad memory", "POST", "/v1/jobs", `{"job":{"task_groups":[{"tasks":[{"resources":{"memory":"lots"}}]}]}}`, "", 400, "job.task_groups[0].tasks[0].resources.memory"},
		{"invalid job", "POST", "/v1/jobs", `{"job":{"priority":500,"task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"true"}}]}]}}`, "", 400, "job.priority"},
		{"missing job", "POST", "/v1/jobs", `{}`, "", 400, "job"},
		{"job is an array", "POST", "/v1/jobs", `{"job":[]}`, "", 400, "job"},
		{"type change", "POST", "/v1/jobs", `{"job":{"id":"web","type":"batch","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"true"}}]}]}}`, "", 400, "job.type"},
		{"path id mismatch", "PUT", "/v1/job/y", goodJob, "", 400, "job.id"},
		{"evaluate with fields", "POST", "/v1/job/web/evaluate", `{"force":true}`, "", 400, "force"},
		{"node missing", "POST", "/v1/node/register", `{}`, "", 400, "node"},
		{"node bad id", "POST", "/v1/node/register", `{"node":{"id":"nope","resources":{"cpu":1,"memory":1}}}`, "", 400, "node.id"},
		{"node wrong type", "POST", "/v1/node/register", `{"node":{"resources":{"cpu":"fast"}}}`, "", 400, "node.resources.cpu"},
		{"alloc update bad status", "POST", "/v1/node/" + node.ID + "/allocations", `{"allocs":[{"id":"` + alloc.ID + `","client_status":"dancing"}]}`, secret, 400, "allocs[0].client_status"},
		{"alloc update null", "POST", "/v1/node/" + node.ID + "/allocations", `{"allocs":[null]}`, secret, 400, "allocs[0]"},
		{"alloc update none", "POST", "/v1/node/" + node.ID + "/allocations", `{"allocs":[]}`, secret, 400, "allocs"},
		{"eligibility", "POST", "/v1/node/" + node.ID + "/eligibility", `{"eligibility":"maybe"}`, "", 400, "eligibility"},
		{"drain wrong type", "POST", "/v1/node/" + node.ID + "/drain", `{"drain":{"deadline":"soon"}}`, "", 400, "drain.deadline"},
		{"heartbeat status", "POST", "/v1/node/" + node.ID + "/heartbeat", `{"status":"down"}`, secret, 400, "status"},
		{"join", "POST", "/v1/operator/raft/join", `{"id":"s9","raft_addr":"nowhere","http_addr":"127.0.0.1:1"}`, "", 400, "raft_addr"},

		// Query parameters.
		{"per_page zero", "GET", "/v1/jobs?per_page=0", "", "", 400, "per_page"},
		{"per_page text", "GET", "/v1/allocations?per_page=ten", "", "", 400, "per_page"},
		{"index negative", "GET", "/v1/jobs?index=-1", "", "", 400, "index"},
		{"wait bad", "GET", "/v1/nodes?wait=soon", "", "", 400, "wait"},
		{"wait negative", "GET", "/v1/job/web?index=1&wait=-5s", "", "", 400, "wait"},
		{"job status", "GET", "/v1/jobs?status=sleepy", "", "", 400, "status"},
		{"job type", "GET", "/v1/jobs?type=cron", "", "", 400, "type"},
		{"alloc status", "GET", "/v1/allocations?client_status=x", "", "", 400, "client_status"},
		{"eval status", "GET", "/v1/evaluations?status=x", "", "", 400, "status"},
		{"node status", "GET", "/v1/nodes?status=x", "", "", 400, "status"},
		{"purge", "DELETE", "/v1/job/web?purge=maybe", "", "", 400, "purge"},
		{"topic", "GET", "/v1/event/stream?topic=Weather", "", "", 400, "topic"},
		{"topic empty key", "GET", "/v1/event/stream?topic=Job:", "", "", 400, "topic"},
		{"event index", "GET", "/v1/event/stream?index=x", "", "", 400, "index"},
		{"empty id", "GET", "/v1/evaluation/", "", "", 404, ""},

		// Unknown ids.
		{"job", "GET", "/v1/job/nope", "", "", 404, ""},
		{"job versions", "GET", "/v1/job/nope/versions", "", "", 404, ""},
		{"job allocations", "GET", "/v1/job/nope/allocations", "", "", 404, ""},
		{"job evaluations", "GET", "/v1/job/nope/evaluations", "", "", 404, ""},
		{"job summary", "GET", "/v1/job/nope/summary", "", "", 404, ""},
		{"job stop", "DELETE", "/v1/job/nope", "", "", 404, ""},
		{"job evaluate", "POST", "/v1/job/nope/evaluate", "{}", "", 404, ""},
		{"job restart", "POST", "/v1/job/nope/restart", "", "", 404, ""},
		{"allocation", "GET", "/v1/allocation/" + unknown, "", "", 404, ""},
		{"allocation stop", "POST", "/v1/allocation/" + unknown + "/stop", "{}", "", 404, ""},
		{"allocation logs", "GET", "/v1/client/allocation/" + unknown + "/logs", "", "", 404, ""},
		{"evaluation", "GET", "/v1/evaluation/" + unknown, "", "", 404, ""},
		{"evaluation allocations", "GET", "/v1/evaluation/" + unknown + "/allocations", "", "", 404, ""},
		{"node", "GET", "/v1/node/" + unknown, "", "", 404, ""},
		{"node heartbeat", "POST", "/v1/node/" + unknown + "/heartbeat", "{}", "", 404, ""},
		{"node allocations", "GET", "/v1/node/" + unknown + "/allocations", "", "", 404, ""},
		{"node update", "POST", "/v1/node/" + unknown + "/allocations", `{"allocs":[{"id":"` + alloc.ID + `","client_status":"running"}]}`, "", 404, ""},
		{"node drain", "POST", "/v1/node/" + unknown + "/drain", `{"drain":null}`, "", 404, ""},
		{"node eligibility", "POST", "/v1/node/" + unknown + "/eligibility", `{"eligibility":"eligible"}`, "", 404, ""},
		{"node deregister", "DELETE", "/v1/node/" + unknown, "", "", 404, ""},
		{"raft peer", "DELETE", "/v1/operator/raft/peer/s9", "", "", 404, ""},
		{"route", "GET", "/v1/nothing", "", "", 404, ""},
		{"mynomad job", "GET", "/jobs/nope", "", "", 404, ""},
		{"mynomad stop", "DELETE", "/jobs/nope", "", "", 404, ""},
		{"mynomad heartbeat", "POST", "/heartbeat", `{"node_id":"` + unknown + `"}`, "", 404, ""},

		// Node secrets.
		{"allocations wrong secret", "GET", "/v1/node/" + node.ID + "/allocations", "", wrong, 403, ""},
		{"allocations no secret", "GET", "/v1/node/" + node.ID + "/allocations", "", "", 403, ""},
		{"heartbeat wrong secret", "POST", "/v1/node/" + node.ID + "/heartbeat", "{}", wrong, 403, ""},
		{"update wrong secret", "POST", "/v1/node/" + node.ID + "/allocations", `{"allocs":[{"id":"` + alloc.ID + `","client_status":"running"}]}`, wrong, 403, ""},
		{"register over another secret", "POST", "/v1/node/register", mustJSON(t, caravan.NodeRegisterRequest{Node: &caravan.Node{
			ID: node.ID, SecretID: caravan.NewID(), Resources: node.Resources}}), "", 403, ""},
		{"mynomad heartbeat wrong secret", "POST", "/heartbeat", `{"node_id":"` + node.ID + `","secret_id":"nope"}`, "", 403, ""},

		// Conflicts.
		{"restart a stopped job", "POST", "/v1/job/old/restart", "{}", "", 409, ""},
		{"stop a finished allocation", "POST", "/v1/allocation/" + done.ID + "/stop", "", "", 409, ""},

		// Methods.
		{"patch jobs", "PATCH", "/v1/jobs", "{}", "", 405, ""},
		{"delete jobs", "DELETE", "/v1/jobs", "", "", 405, ""},
		{"put health", "PUT", "/v1/health", "", "", 405, ""},
		{"get gc", "GET", "/v1/system/gc", "", "", 405, ""},
		{"post nodes", "POST", "/nodes", "{}", "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := []string{api.HeaderRequestID + ": test-" + strings.ReplaceAll(tt.name, " ", "-")}
			if tt.header != "" {
				headers = append(headers, tt.header)
			}
			a := call(t, tt.method, ts.url+tt.path, tt.body, headers...)
			if a.status != tt.want {
				t.Fatalf("status %d, want %d: %s", a.status, tt.want, a.body)
			}
			e := a.errBody(t)
			if e.Error == "" {
				t.Errorf("no error message: %s", a.body)
			}
			wantID := "test-" + strings.ReplaceAll(tt.name, " ", "-")
			if e.RequestID != wantID || a.header.Get(api.HeaderRequestID) != wantID {
				t.Errorf("request id %q (header %q), want %q", e.RequestID, a.header.Get(api.HeaderRequestID), wantID)
			}
			if tt.want == 400 && tt.wantPath != "" {
				if len(e.Fields) == 0 || e.Fields[0].Path != tt.wantPath {
					t.Errorf("fields %+v, want the path %q first", e.Fields, tt.wantPath)
				}
			}
			if tt.want == 405 && a.header.Get("Allow") == "" {
				t.Error("405 without an Allow header")
			}
		})
	}
}

func TestOversizedBodies(t *testing.T) {
	ts := startLeader(t)
	big := `{"job":{"meta":{"x":"` + strings.Repeat("a", maxBodyBytes) + `"}}}`
	for _, path := range []string{"/v1/jobs", "/jobs", "/v1/node/register", "/register"} {
		t.Run(path+" with length", func(t *testing.T) {
			a := call(t, http.MethodPost, ts.url+path, big)
			if a.status != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413: %.200s", a.status, a.body)
			}
		})
		t.Run(path+" chunked", func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, ts.url+path, io.MultiReader(strings.NewReader(big)))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("status %d, want 413", resp.StatusCode)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	ts := startLeader(t)
	tests := []struct {
		name, sent string
		keep       bool
	}{
		{"adopted", "abc-123", true},
		{"made when missing", "", false},
		{"made when too long", strings.Repeat("x", 65), false},
		{"made when it has spaces", "a b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var headers []string
			if tt.sent != "" {
				headers = append(headers, api.HeaderRequestID+": "+tt.sent)
			}
			a := call(t, http.MethodGet, ts.url+"/v1/jobs", "", headers...)
			got := a.header.Get(api.HeaderRequestID)
			if tt.keep && got != tt.sent || !tt.keep && !caravan.ValidUUID(got) {
				t.Errorf("request id %q for %q", got, tt.sent)
			}
		})
	}
}

// TestPanicRecovery checks that a panicking handler gets a 500 with the
// request id, and that net/http's abort panic passes through.
func TestPanicRecovery(t *testing.T) {
	ts := startLeader(t)
	a := New(ts.srv, testLogger()).(*API)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/jobs", nil)
	req.Header.Set(api.HeaderRequestID, "boom-1")
	a.serve(rec, req, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"request_id":"boom-1"`) {
		t.Errorf("panic answer: %d %s", rec.Code, rec.Body)
	}
	defer func() {
		if p := recover(); p != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler to pass through", p)
		}
	}()
	a.serve(httptest.NewRecorder(), req, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
}
