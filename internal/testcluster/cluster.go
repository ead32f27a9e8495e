// Package testcluster starts caravan servers in-process on loopback, and
// simulated nodes that speak the real API, for integration tests and
// benchmarks. Servers run through the same server.Run as the binary.
package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/httpapi"
	"github.com/caravan-sched/caravan/internal/server"
)

// Options shape a cluster.
type Options struct {
	// Servers is the number of servers (default 1).
	Servers int
	// Configure, when set, adjusts each server's configuration.
	Configure func(i int, c *config.Config)
}

// Cluster is a set of in-process servers.
type Cluster struct {
	t       testing.TB
	Servers []*Member
}

// Member is one server of a cluster, which can be stopped and started again
// on its data dir.
type Member struct {
	Config *config.Config
	logger *slog.Logger

	mu     sync.Mutex
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
}

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Logger returns a logger for tests: silent unless CARAVAN_TEST_LOG is set.
func Logger() *slog.Logger {
	if os.Getenv("CARAVAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// ServerConfig returns a configuration for one test server on free
// loopback ports with a temporary data dir and short timeouts.
func ServerConfig(t testing.TB, name string) *config.Config {
	t.Helper()
	c := config.Default()
	c.Name = name
	c.DataDir = t.TempDir()
	c.Server.HTTPPort = FreePort(t)
	c.Server.RaftPort = FreePort(t)
	c.Server.FastRaft = true
	c.Server.MinHeartbeatTTL = "2s"
	c.Server.HeartbeatGrace = "1s"
	c.Server.RetryInterval = "200ms"
	return c
}

// Start starts a cluster and waits until it has a leader that knows every
// server. Everything stops when the test ends.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Servers < 1 {
		opts.Servers = 1
	}
	c := &Cluster{t: t}
	var first string
	for i := 0; i < opts.Servers; i++ {
		cfg := ServerConfig(t, fmt.Sprintf("server-%d", i+1))
		if i > 0 {
			cfg.Server.Join = []string{first}
		}
		if opts.Configure != nil {
			opts.Configure(i, cfg)
		}
		if err := cfg.Finish(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = cfg.AdvertiseHTTP()
		}
		m := &Member{Config: cfg, logger: Logger()}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Stop)
		c.Servers = append(c.Servers, m)
		if i == 0 {
			WaitFor(t, 15*time.Second, "the first server to lead", func() bool { return m.Server().IsLeader() })
		}
	}
	c.WaitForMembers(opts.Servers)
	return c
}

// Start runs the member's server on its configuration and data dir.
func (m *Member) Start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		return fmt.Errorf("server %s already running", m.Config.Name)
	}
	srv, err := server.New(m.Config, m.logger)
	if err != nil {
		return err
	}
	srv.SetHandler(httpapi.New(srv, m.logger))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	m.srv, m.cancel, m.done = srv, cancel, done
	// Wait until it listens.
	deadline := time.Now().Add(10 * time.Second)
	for srv.HTTPAddr() == "" {
		select {
		case err := <-done:
			m.srv = nil
			return fmt.Errorf("server %s stopped at once: %v", m.Config.Name, err)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server %s did not listen", m.Config.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// Stop stops the member's server (its data stays for a restart).
func (m *Member) Stop() {
	m.mu.Lock()
	cancel, done := m.cancel, m.done
	m.srv, m.cancel, m.done = nil, nil, nil
	m.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Server returns the running server, or nil when stopped.
func (m *Member) Server() *server.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.srv
}

// Running reports whether the member runs.
func (m *Member) Running() bool { return m.Server() != nil }

// Addr is the member's HTTP address.
func (m *Member) Addr() string { return m.Config.AdvertiseHTTP() }

// Addrs lists the HTTP addresses of the running servers.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, m := range c.Servers {
		if m.Running() {
			out = append(out, m.Addr())
		}
	}
	return out
}

// Client returns an API client that knows every running server.
func (c *Cluster) Client() *api.Client {
	cl, err := api.New(api.Config{Addresses: c.Addrs()})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

// Leader waits for a running server to lead and returns it.
func (c *Cluster) Leader() *Member {
	c.t.Helper()
	var leader *Member
	WaitFor(c.t, 20*time.Second, "a leader", func() bool {
		for _, m := range c.Servers {
			if s := m.Server(); s != nil && s.IsLeader() {
				leader = m
				return true
			}
		}
		return false
	})
	return leader
}

// WaitForMembers waits until the leader's Raft configuration has n voters.
func (c *Cluster) WaitForMembers(n int) {
	c.t.Helper()
	WaitFor(c.t, 30*time.Second, fmt.Sprintf("%d voters", n), func() bool {
		for _, m := range c.Servers {
			s := m.Server()
			if s == nil || !s.IsLeader() {
				continue
			}
			peers, err := s.Peers()
			return err == nil && len(peers) == n
		}
		return false
	})
}

// AddSimNodes registers n simulated nodes through the cluster's API and
// runs them until the test ends. mutate, when set, adjusts each node.
func (c *Cluster) AddSimNodes(n int, behavior Behavior, mutate func(i int, node *SimNodeSpec)) []*SimNode {
	c.t.Helper()
	nodes := make([]*SimNode, 0, n)
	for i := 0; i < n; i++ {
		spec := &SimNodeSpec{Node: NewSimNode(fmt.Sprintf("sim-%d", i), nil, nil)}
		if mutate != nil {
			mutate(i, spec)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		sn, err := StartSimNode(ctx, c.Addrs(), spec.Node, behavior)
		cancel()
		if err != nil {
			c.t.Fatal(err)
		}
		c.t.Cleanup(sn.Stop)
		nodes = append(nodes, sn)
	}
	return nodes
}

// SimNodeSpec is what AddSimNodes lets a test change before registering.
type SimNodeSpec struct {
	Node *caravan.Node
}

// WaitFor polls cond every 10ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
