package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/server"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestMain fails the package when handlers, streams or proxies outlive
// their servers.
func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testLogger() *slog.Logger {
	if os.Getenv("CARAVAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is a server on free loopback ports with fast Raft; join
// lists HTTP addresses to join.
func testConfig(t testing.TB, name string, join ...string) *config.Config {
	t.Helper()
	c := config.Default()
	c.Name = name
	c.DataDir = t.TempDir()
	c.Server.HTTPPort = freePort(t)
	c.Server.RaftPort = freePort(t)
	c.Server.FastRaft = true
	c.Server.MinHeartbeatTTL = "2s"
	c.Server.HeartbeatGrace = "1s"
	c.Server.RetryInterval = "200ms"
	c.Server.Join = join
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	return c
}

// testServer is a server running with this package's API.
type testServer struct {
	srv  *server.Server
	cfg  *config.Config
	addr string // HTTP "host:port"
	url  string // "http://host:port"
	stop func()
}

// runServer runs a server with the API until stop or the end of the test,
// and waits until it serves HTTP.
func runServer(t testing.TB, cfg *config.Config) *testServer {
	t.Helper()
	srv, err := server.New(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv.SetHandler(New(srv, testLogger()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	stopped := false
	ts := &testServer{srv: srv, cfg: cfg, addr: cfg.AdvertiseHTTP(), url: "http://" + cfg.AdvertiseHTTP()}
	ts.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server %s: %v", cfg.Name, err)
		}
	}
	t.Cleanup(ts.stop)
	waitFor(t, 10*time.Second, "the HTTP listener of "+cfg.Name, func() bool {
		c, err := net.DialTimeout("tcp", ts.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return ts
}

// startLeader runs a one-server cluster and waits for its leadership.
func startLeader(t testing.TB) *testServer {
	t.Helper()
	ts := runServer(t, testConfig(t, "s1"))
	waitFor(t, 10*time.Second, "leadership", ts.srv.IsLeader)
	return ts
}

func (ts *testServer) client(t testing.TB, secret string) *api.Client {
	t.Helper()
	c, err := api.New(api.Config{Addresses: []string{ts.addr}, NodeSecret: secret})
	if err != nil {
		t.Fatal(err)
	}
	return c
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

// answer is an HTTP response read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// errBody decodes the answer as an error body.
func (a answer) errBody(t testing.TB) caravan.ErrorResponse {
	t.Helper()
	var e caravan.ErrorResponse
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatalf("error body %q: %v", a.body, err)
	}
	return e
}

// into decodes the answer's body into out.
func (a answer) into(t testing.TB, out any) {
	t.Helper()
	if err := json.Unmarshal(a.body, out); err != nil {
		t.Fatalf("body %q: %v", a.body, err)
	}
}

var httpClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil}}

// call sends one request with a string body and optional headers as
// "Name: value" strings.
func call(t testing.TB, method, url, body string, headers ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ":")
		req.Header.Set(k, strings.TrimSpace(v))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// simNode is a ready node with exec and docker drivers and its secret.
func simNode(i int) *caravan.Node {
	return &caravan.Node{
		ID:       caravan.NewID(),
		SecretID: caravan.NewID(),
		Name:     fmt.Sprintf("sim-%d", i),
		Status:   caravan.NodeStatusReady,
		Resources: caravan.NodeResources{
			CPU: 4000, Memory: 8192, Cores: []int{0, 1, 2, 3},
		},
		Attributes: map[string]string{"os": "linux", "arch": "amd64"},
		Drivers: map[string]caravan.DriverInfo{
			"exec":   {Detected: true, Healthy: true},
			"docker": {Detected: true, Healthy: true},
		},
	}
}

// sleepJob is a service job of count copies of "sleep 100".
func sleepJob(id string, count int) *caravan.Job {
	return &caravan.Job{ID: id, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Count: &count,
		Tasks: []*caravan.Task{{Name: "t", Config: caravan.TaskConfig{Command: "sleep 100"}}},
	}}}
}

// registerNode registers a simulated node through the API.
func registerNode(t testing.TB, ts *testServer, i int) *caravan.Node {
	t.Helper()
	n := simNode(i)
	if _, err := ts.client(t, n.SecretID).RegisterNode(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitAllocs waits until a job has n allocations and returns them.
func waitAllocs(t testing.TB, ts *testServer, jobID string, n int) []*caravan.Allocation {
	t.Helper()
	var allocs []*caravan.Allocation
	waitFor(t, 10*time.Second, fmt.Sprintf("%d allocations of job %s", n, jobID), func() bool {
		allocs, _ = ts.srv.State().Snapshot().AllocsByJob(jobID)
		return len(allocs) == n
	})
	return allocs
}
