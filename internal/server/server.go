// Package server wires a caravan server: Raft with the FSM over the state
// store, and, on the leader, the evaluation broker, the scheduler workers,
// the plan applier, heartbeat timers, the drainer and garbage collection. It
// serves the HTTP API through internal/httpapi.
//
// A server's life:
//
//	New ──▶ Run: HTTP listener, Raft (bootstrap or join)
//	          │
//	          ├── becomes leader ──▶ establishLeadership: enable queues, refill
//	          │                       them from state, arm heartbeat timers,
//	          │                       start workers, plan applier, drainer, GC
//	          │         ▲                      │
//	          │         └── loses leadership ◀─┘ revokeLeadership: stop them all,
//	          │                                  disable queues
//	          └── ctx ends ──▶ stop HTTP, leader duties, Raft
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/broker"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// Server is one caravan server.
type Server struct {
	cfg    *config.Config
	logger *slog.Logger

	events *events.Broker
	store  *state.Store
	fsm    *fsm.FSM
	raft   *raftNode

	evalBroker *broker.EvalBroker
	blocked    *broker.BlockedEvals
	planQueue  *broker.PlanQueue
	heartbeats *heartbeats
	// registrations batches job registrations (jobbatch.go).
	registrations registrations

	metrics  *prometheus.Registry
	counters *serverMetrics

	// handler serves the HTTP API; set by SetHandler before Run.
	handler  http.Handler
	httpAddr atomic.Value // string: the bound HTTP address, once listening

	leaderMu     sync.Mutex
	leaderCancel context.CancelFunc
	leaderDone   chan struct{}
}

// New builds a server from its configuration. It opens Raft's stores but
// starts nothing; Run does.
func New(cfg *config.Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "server", "server", cfg.Name)
	dir := filepath.Join(cfg.DataDir, "server")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	evb := events.NewBroker(0)
	store, err := state.New(logger.With("component", "state"), evb)
	if err != nil {
		return nil, fmt.Errorf("create state store: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		logger:     logger,
		events:     evb,
		store:      store,
		fsm:        fsm.New(store, logger.With("component", "fsm")),
		evalBroker: broker.NewEvalBroker(broker.Config{}),
		planQueue:  broker.NewPlanQueue(),
		metrics:    prometheus.NewRegistry(),
	}
	s.blocked = broker.NewBlockedEvals(s.evalBroker)
	s.heartbeats = newHeartbeats(
		config.Duration(cfg.Server.MinHeartbeatTTL),
		cfg.Server.MaxHeartbeatsPerSecond,
		config.Duration(cfg.Server.HeartbeatGrace),
		s.nodeExpired,
	)
	s.counters = newServerMetrics(s)

	s.raft, err = openRaft(raftOptions{
		ID:                cfg.Name,
		BindAddr:          cfg.RaftAddr(),
		AdvertiseAddr:     cfg.AdvertiseRaft(),
		Dir:               filepath.Join(dir, "raft"),
		Bootstrap:         len(cfg.Server.Join) == 0,
		Fast:              cfg.Server.FastRaft,
		SnapshotThreshold: uint64(cfg.Server.RaftSnapshotEntries),
		TrailingLogs:      uint64(cfg.Server.RaftTrailingLogs),
	}, s.fsm, logger)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// SetHandler sets the HTTP handler Run serves (the API and UI, built by
// internal/httpapi over this server).
func (s *Server) SetHandler(h http.Handler) { s.handler = h }

// Run serves until ctx ends, then shuts everything down.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr())
	if err != nil {
		s.raft.Close()
		return fmt.Errorf("listen on %s: %w", s.cfg.HTTPAddr(), err)
	}
	s.httpAddr.Store(ln.Addr().String())
	handler := s.handler
	if handler == nil {
		handler = http.NotFoundHandler()
	}
	httpSrv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
		// Long requests (blocking queries, event streams, log follows)
		// end when the server stops.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	s.logger.Info("server started", "http", ln.Addr().String(), "raft", s.cfg.AdvertiseRaft())

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := httpSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error { return s.evalBroker.Run(gctx) })
	g.Go(func() error { return s.monitorLeadership(gctx) })
	if len(s.cfg.Server.Join) > 0 {
		g.Go(func() error { return s.joinLoop(gctx) })
	}
	<-gctx.Done()

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(shutdownCtx)
	s.revokeLeadership()
	err = g.Wait()
	if cerr := s.raft.Close(); cerr != nil {
		s.logger.Warn("close raft", "error", cerr)
	}
	s.events.Close()
	if ctx.Err() != nil {
		return nil // asked to stop
	}
	return err
}

// HTTPAddr returns the address the HTTP listener is bound to (useful when
// the configured port was 0). Empty before Run has started listening.
func (s *Server) HTTPAddr() string {
	addr, _ := s.httpAddr.Load().(string)
	return addr
}

// State returns the state store (reads only; writes go through Raft).
func (s *Server) State() *state.Store { return s.store }

// Events returns the broker of state change events.
func (s *Server) Events() *events.Broker { return s.events }

// Metrics returns the Prometheus registry of this server.
func (s *Server) Metrics() *prometheus.Registry { return s.metrics }

// Name is this server's Raft id.
func (s *Server) Name() string { return s.cfg.Name }

// IsLeader reports whether this server is the Raft leader now.
func (s *Server) IsLeader() bool { return s.raft.raft.State() == raft.Leader }

// LeaderHTTPAddr returns the HTTP address of the leader, for forwarding
// writes, or caravan.ErrNoLeader.
func (s *Server) LeaderHTTPAddr() (string, error) {
	_, id := s.raft.raft.LeaderWithID()
	if id == "" {
		return "", fmt.Errorf("no leader elected: %w", caravan.ErrNoLeader)
	}
	if string(id) == s.cfg.Name {
		return s.cfg.AdvertiseHTTP(), nil
	}
	members, err := s.store.Snapshot().Servers()
	if err != nil {
		return "", err
	}
	for _, m := range members {
		if m.ID == string(id) && m.HTTPAddr != "" {
			return m.HTTPAddr, nil
		}
	}
	return "", fmt.Errorf("leader %s has no known HTTP address yet: %w", id, caravan.ErrNoLeader)
}

// LeaderRaftAddr returns the Raft address of the leader ("" when none).
func (s *Server) LeaderRaftAddr() string {
	addr, _ := s.raft.raft.LeaderWithID()
	return string(addr)
}

// numWorkers is how many scheduler workers the leader runs. A worker spends
// most of its time waiting for its plan to be committed, and the plan
// applier can only batch what workers have submitted, so there are many
// more workers than CPUs: computing a plan takes tens of microseconds,
// committing one a few milliseconds.
func (s *Server) numWorkers() int {
	if n := s.cfg.Server.NumSchedulers; n > 0 {
		return n
	}
	return 32 * runtime.GOMAXPROCS(0)
}
