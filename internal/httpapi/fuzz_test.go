package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// fuzzCallLimit bounds one fuzzed request.
const fuzzCallLimit = 20 * time.Second

// fuzzHandler posts arbitrary bodies to one route of a real server's API
// (in-process, without the network) and fails on a 5xx or a body that is
// not JSON. The seeds run as plain tests; `go test -fuzz` explores.
func fuzzHandler(f *testing.F, path string, header string, seeds ...string) {
	ts := startLeader(f)
	h := New(ts.srv, testLogger())
	for _, s := range seeds {
		f.Add(s)
	}
	if strings.Contains(path, "{node}") {
		n := registerNode(f, ts, 0)
		path = strings.ReplaceAll(path, "{node}", n.ID)
		header = n.SecretID
	}
	f.Fuzz(func(t *testing.T, body string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		if header != "" {
			req.Header.Set(api.HeaderNodeSecret, header)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.ServeHTTP(rec, req)
		}()
		select {
		case <-done:
		case <-time.After(fuzzCallLimit):
			buf := make([]byte, 1<<22)
			t.Fatalf("POST %s %q: no answer after %v; goroutines:\n%s", path, body, fuzzCallLimit, buf[:runtime.Stack(buf, true)])
		}
		if rec.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", path, body, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("POST %s %q: the answer is not JSON: %s", path, body, rec.Body)
		}
		if rec.Code >= 400 {
			var e caravan.ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" || e.RequestID == "" {
				t.Fatalf("POST %s %q: error body %s", path, body, rec.Body)
			}
		}
	})
}

func FuzzJobRegister(f *testing.F) {
	fuzzHandler(f, "/v1/jobs", "",
		`{"job":{"id":"web","task_groups":[{"name":"g","count":2,"tasks":[{"name":"t","config":{"command":"sleep 1"}}]}]}}`,
		`{"job":{"type":"batch","task_groups":[{"tasks":[{"config":{"image":"nginx","port":80},"resources":{"memory":"1G"}}]}]}}`,
		`{"job":{"id":"x","priority":0,"constraints":[{"attribute":"${attr.os}","operator":"regexp","value":"("}]}}`,
		`{"job":{"task_groups":[{"count":-1,"restart":{"attempts":-1},"reschedule":{"delay":"-1s"}}]}}`,
		`{"job":{"task_groups":[null,{"tasks":[null]}]}}`,
		`{"job":{"update":{"max_parallel":-5},"spreads":[{"attribute":"","weight":1000}]}}`,
		`{"job":null}`, `[]`, `"x"`, `{"job":{"id":"../../etc"}}`)
}

func FuzzNodeRegister(f *testing.F) {
	fuzzHandler(f, "/v1/node/register", "",
		`{"node":{"id":"`+caravan.NewID()+`","secret_id":"`+caravan.NewID()+`","resources":{"cpu":1000,"memory":"1G"}}}`,
		`{"node":{"id":"`+caravan.NewID()+`","status":"down"}}`,
		`{"node":{"id":"`+caravan.NewID()+`","resources":{"min_dynamic_port":70000,"cores":[-1,5000]}}}`,
		`{"node":{"id":"`+caravan.NewID()+`","drain":{"deadline":-1},"scheduling_eligibility":"maybe"}}`,
		`{"node":{}}`, `{"node":null}`, `{}`)
}

func FuzzNodeUpdateAllocs(f *testing.F) {
	fuzzHandler(f, "/v1/node/{node}/allocations", "",
		`{"allocs":[{"id":"`+caravan.NewID()+`","client_status":"running"}]}`,
		`{"allocs":[{"id":"`+caravan.NewID()+`","client_status":"failed","terminal_reason":"oom","task_states":{"t":{"state":"oom","events":[{"type":"oom","time":"2026-01-01T00:00:00Z"}]}}}]}`,
		`{"allocs":[{"id":"x","client_status":"lost"}]}`,
		`{"allocs":[{"id":"`+caravan.NewID()+`","client_status":"running","task_states":{"t":null}}]}`,
		`{"allocs":[null]}`, `{"allocs":[]}`, `{"allocs":{}}`, `{}`)
}

func FuzzNomadJobs(f *testing.F) {
	fuzzHandler(f, "/jobs", "",
		nomadProcessJob, nomadContainerJob,
		`{"task_groups":[{"tasks":[{"config":{"command":"echo hi | tr a-z A-Z > out.txt"}}]}]}`,
		`{"id":"","task_groups":[]}`, `{"task_groups":[{"count":1000001}]}`, `{}`, `null`)
}

func FuzzNodeDrain(f *testing.F) {
	fuzzHandler(f, "/v1/node/{node}/drain", "",
		`{"drain":{"deadline":"10m"}}`, `{"drain":{"deadline":-1,"ignore_system_jobs":true}}`,
		`{"drain":null,"mark_eligible":true}`, `{"drain":{"deadline":1e300}}`,
		`{"drain":{"started_at":"2026-01-01T00:00:00Z","force_deadline":"0001-01-01T00:00:00Z"}}`, `{}`)
}
