package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/server"
)

func TestStatusRoutes(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")

	h, err := c.Health(ctx)
	if err != nil || !h.OK || h.Server != "s1" || h.Leader != ts.cfg.AdvertiseRaft() {
		t.Errorf("health = %+v, %v", h, err)
	}
	leader, err := c.Leader(ctx)
	if err != nil || leader != ts.cfg.AdvertiseRaft() {
		t.Errorf("leader = %q, %v", leader, err)
	}
	peers, err := c.Peers(ctx)
	if err != nil || len(peers) != 1 || peers[0] != ts.cfg.AdvertiseRaft() {
		t.Errorf("peers = %v, %v", peers, err)
	}
	members, err := c.Members(ctx)
	if err != nil || len(members) != 1 || !members[0].Leader || members[0].HTTPAddr != ts.addr {
		t.Errorf("members = %s, %v", mustJSON(t, members), err)
	}

	// GC removes a stopped job.
	registerNode(t, ts, 0)
	if _, err := c.RegisterJob(ctx, sleepJob("old", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StopJob(ctx, "old", false); err != nil {
		t.Fatal(err)
	}
	var a answer
	waitFor(t, 20*time.Second, "garbage collection of the stopped job", func() bool {
		a = call(t, http.MethodPost, ts.url+"/v1/system/gc", "")
		var res server.GCResult
		a.into(t, &res)
		return a.status == http.StatusOK && res.Jobs == 1
	})

	// Metrics: the server's and the API's own, per route and code.
	a = call(t, http.MethodGet, ts.url+"/v1/metrics", "")
	body := string(a.body)
	for _, want := range []string{
		`caravan_http_requests_total{code="200",route="GET /v1/health"} 1`,
		`caravan_http_request_duration_seconds_count{route="POST /v1/system/gc"}`,
		`caravan_is_leader 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	call(t, http.MethodGet, ts.url+"/v1/nowhere", "")
	a = call(t, http.MethodGet, ts.url+"/v1/metrics", "")
	if !strings.Contains(string(a.body), `caravan_http_requests_total{code="404",route="unmatched"} 1`) {
		t.Error("metrics lack the unmatched request")
	}
	// A second API over the same server reuses the metrics.
	_ = New(ts.srv, nil)
}

// fakeAgent serves the agent's log route: one line at once, the next
// when released.
type fakeAgent struct {
	*httptest.Server
	release chan struct{}
	mu      sync.Mutex
	query   string
}

func newFakeAgent(t *testing.T) *fakeAgent {
	fa := &fakeAgent{release: make(chan struct{})}
	fa.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/client/allocation/") {
			http.NotFound(w, r)
			return
		}
		fa.mu.Lock()
		fa.query = r.URL.RawQuery
		fa.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "line 1")
		w.(http.Flusher).Flush()
		select {
		case <-fa.release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		fmt.Fprintln(w, "line 2")
	}))
	t.Cleanup(fa.Close)
	return fa
}

// nodeWithAlloc registers a node at httpAddr and places one allocation of
// a job pinned to it.
func nodeWithAlloc(t *testing.T, ts *testServer, i int, httpAddr string) *caravan.Allocation {
	t.Helper()
	n := simNode(i)
	n.HTTPAddr = httpAddr
	if _, err := ts.client(t, n.SecretID).RegisterNode(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	job := sleepJob(fmt.Sprintf("pinned-%d", i), 1)
	job.Constraints = []caravan.Constraint{{Attribute: "${node.id}", Operator: "=", Value: n.ID}}
	if _, err := ts.client(t, "").RegisterJob(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	return waitAllocs(t, ts, job.ID, 1)[0]
}

func TestLogsProxy(t *testing.T) {
	ts := startLeader(t)
	fa := newFakeAgent(t)
	al := nodeWithAlloc(t, ts, 0, fa.Listener.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := ts.client(t, "").Raw(ctx, http.MethodGet, "/v1/client/allocation/"+al.ID[:8]+"/logs",
		map[string][]string{"task": {"t"}, "follow": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	first, err := rd.ReadString('\n')
	if err != nil || first != "line 1\n" {
		t.Fatalf("first line %q, %v: the proxy must stream before the agent is done", first, err)
	}
	close(fa.release)
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "line 2\n" {
		t.Errorf("rest %q, %v", rest, err)
	}
	fa.mu.Lock()
	if fa.query != "follow=true&task=t" {
		t.Errorf("agent got the query %q", fa.query)
	}
	fa.mu.Unlock()

	// An agent that does not answer: 502; a node without an address: 503.
	dead := nodeWithAlloc(t, ts, 1, "127.0.0.1:"+fmt.Sprint(freePort(t)))
	a := call(t, http.MethodGet, ts.url+"/v1/client/allocation/"+dead.ID+"/logs", "")
	if a.status != http.StatusBadGateway || !strings.Contains(a.errBody(t).Error, "sim-1") {
		t.Errorf("dead agent: %d %s", a.status, a.body)
	}
	nowhere := nodeWithAlloc(t, ts, 2, "")
	a = call(t, http.MethodGet, ts.url+"/v1/client/allocation/"+nowhere.ID+"/logs", "")
	if a.status != http.StatusServiceUnavailable || a.errBody(t).RequestID == "" {
		t.Errorf("node without an address: %d %s", a.status, a.body)
	}
}
