package cli_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/cli"
	"github.com/caravan-sched/caravan/internal/testcluster"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestMain lets this test binary act as the caravan binary when the exec
// driver starts it as `<binary> supervise ...` (dev mode runs real tasks),
// and checks for leaked goroutines after the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "supervise" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := cli.Run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
		stop()
		os.Exit(cli.ExitCode(err, os.Stderr))
	}
	testenv.MainWithLeakCheck(m)
}

// syncBuffer is a bytes.Buffer safe for the many goroutines of a server
// that log into it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// result is what one in-process run of the command line produced.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs the command line in-process, as main does, and returns its
// output and exit code.
func runCLI(ctx context.Context, vars []string, stdin io.Reader, args ...string) result {
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var stdout, stderr syncBuffer
	err := cli.Run(ctx, args, vars, stdin, &stdout, &stderr)
	code := cli.ExitCode(err, &stderr)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// testServer is a server started with `caravan server` in-process.
type testServer struct {
	addr string
	logs *syncBuffer
}

// startServer runs `caravan server` with a config file and flags until the
// test ends, and waits until it leads.
func startServer(t *testing.T) *testServer {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.hcl")
	// The file sets one port, the flag overrides it: flags win.
	writeFile(t, conf, `
log_level = "debug"
server {
  http_port         = 1
  fast_raft         = true
  min_heartbeat_ttl = "2s"
  heartbeat_grace   = "2s"
}
`)
	httpPort, raftPort := testcluster.FreePort(t), testcluster.FreePort(t)
	ts := &testServer{addr: fmt.Sprintf("http://127.0.0.1:%d", httpPort), logs: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- cli.Run(ctx, []string{"server", "--config", conf, "--data-dir", filepath.Join(dir, "data"),
			"--name", "test-server", "--http-port", fmt.Sprint(httpPort), "--raft-port", fmt.Sprint(raftPort)},
			nil, strings.NewReader(""), io.Discard, ts.logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("caravan server: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("caravan server did not stop within 30s")
		}
		if t.Failed() && os.Getenv("CARAVAN_TEST_LOG") != "" {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	c := ts.client(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
		h, err := c.Health(hctx)
		hcancel()
		if err == nil && h.OK {
			return ts
		}
		select {
		case err := <-done:
			t.Fatalf("caravan server stopped: %v\n%s", err, ts.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caravan server did not lead within 20s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (ts *testServer) client(t *testing.T) *api.Client {
	t.Helper()
	c, err := api.New(api.Config{Addresses: []string{ts.addr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testContext ends with the test, or after a minute at most.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testContextWithCancel is testContext with its cancel function.
func testContextWithCancel(t *testing.T) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx, cancel
}

// runAgent runs a process command (agent, server) until ctx ends, with its
// logs in logs.
func runAgent(ctx context.Context, logs io.Writer, args ...string) error {
	return cli.Run(ctx, args, nil, strings.NewReader(""), io.Discard, logs)
}
