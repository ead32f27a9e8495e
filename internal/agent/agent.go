// Package agent is caravan's node agent: it fingerprints the machine,
// registers the node with the servers and heartbeats, watches the node's
// allocations with a blocking query and runs each one with an allocation
// runner, batches status updates back to the servers, keeps its state in a
// bbolt file so that a restarted agent re-attaches to its tasks, and
// serves the agent HTTP API (allocations, health, logs).
//
// What Run does, in order:
//
//	open state (data dir/agent.db) ─▶ node identity ─▶ listen (agent API)
//	─▶ drivers ─▶ fingerprint ─▶ restore allocation runners ─▶ Ready
//	─▶ under one errgroup until ctx ends:
//	     HTTP server · register + heartbeat · watch allocations
//	     · send updates · stop tasks after max_client_disconnect
//	─▶ detach from the tasks (or stop them: StopTasksOnShutdown)
//
// Cancelling Run's context leaves the tasks running, as kill -9 does; a new
// agent on the same data dir re-attaches to them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/agent/localstate"
	"github.com/caravan-sched/caravan/internal/allocrunner"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/driver/docker"
	execdriver "github.com/caravan-sched/caravan/internal/driver/exec"
)

// Names inside the data dir.
const (
	stateFile    = "agent.db"
	allocDirName = "alloc"
	execStateDir = "exec"
)

// Timeouts of the agent's shutdown.
const (
	httpShutdownTimeout = 5 * time.Second
	finalFlushTimeout   = 3 * time.Second
	// stopTasksGrace is added to the longest kill timeout when tasks are
	// stopped on shutdown.
	stopTasksGrace = 15 * time.Second
)

// Agent is a node agent. Create it with New and run it with Run.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	ready chan struct{}

	// Set by Run before ready is closed, read-only after.
	db        *localstate.DB
	identity  localstate.Identity
	client    *api.Client
	drivers   map[string]driver.Driver
	httpAddr  string
	allocRoot string
	updates   *batcher
	// runCtx is the context of the allocation runners: it ends after the
	// agent's other parts, once the runners may detach.
	runCtx context.Context

	conn connState

	// node is replaced, never changed, when fingerprints change.
	nodeMu sync.Mutex
	node   *caravan.Node
	// firstRegistration is closed when the node registered the first time;
	// registration gets a value after every registration (the watch then
	// starts over); reregister asks the server loop to register again.
	firstRegistration chan struct{}
	registration      chan struct{}
	reregister        chan struct{}

	// known maps every allocation id the servers list for the node to its
	// alloc_modify_index (the watch loop's only).
	known map[string]uint64

	mu      sync.Mutex
	runners map[string]*allocEntry
	// tracked counts the goroutines that run or destroy allocations.
	tracked sync.WaitGroup
}

// New checks the configuration and returns an agent; it does no I/O.
func New(cfg Config, logger *slog.Logger) (*Agent, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Agent{
		cfg:               cfg,
		log:               logger.With("component", "agent"),
		ready:             make(chan struct{}),
		firstRegistration: make(chan struct{}),
		registration:      make(chan struct{}, 1),
		reregister:        make(chan struct{}, 1),
		runners:           map[string]*allocEntry{},
		known:             map[string]uint64{},
	}, nil
}

// Ready is closed once Run has restored its state and listens.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// HTTPAddr is the address ("host:port") of the agent API; valid once Ready
// is closed.
func (a *Agent) HTTPAddr() string { return a.httpAddr }

// NodeID is the node's id; valid once Ready is closed.
func (a *Agent) NodeID() string { return a.identity.NodeID }

// Node returns a copy of the node as the agent registers it (without the
// secret); valid once Ready is closed.
func (a *Agent) Node() *caravan.Node {
	n := *a.currentNode()
	n.SecretID = ""
	return &n
}

// currentNode returns the node as the agent registers it now. The value
// is never changed; treat it as read-only.
func (a *Agent) currentNode() *caravan.Node {
	a.nodeMu.Lock()
	defer a.nodeMu.Unlock()
	return a.node
}

// Run runs the agent until ctx ends. It returns an error when the agent
// cannot start (state file, listener, drivers) or a part of it fails.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("agent data dir: %w", err)
	}
	a.allocRoot = filepath.Join(a.cfg.DataDir, allocDirName)
	if err := os.MkdirAll(a.allocRoot, 0o755); err != nil {
		return fmt.Errorf("agent data dir: %w", err)
	}
	if dir := unsearchable(a.allocRoot); dir != "" {
		a.log.Warn("tasks running as an unprivileged user cannot reach their directories: a folder above the data dir is closed to other users",
			"folder", dir, "data_dir", a.cfg.DataDir)
	}
	db, err := localstate.Open(filepath.Join(a.cfg.DataDir, stateFile))
	if err != nil {
		return err
	}
	defer db.Close()
	a.db = db
	if a.identity, err = db.Identity(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("agent http listener: %w", err)
	}
	defer ln.Close()
	a.httpAddr = advertiseAddr(a.cfg.AdvertiseAddr, ln.Addr())
	drivers, closeDrivers, err := a.buildDrivers()
	if err != nil {
		return err
	}
	defer closeDrivers()
	a.drivers = make(map[string]driver.Driver, len(drivers))
	for _, d := range drivers {
		a.drivers[d.Name()] = d
	}
	a.client, err = api.New(api.Config{Addresses: append([]string(nil), a.cfg.Servers...), NodeSecret: a.identity.SecretID})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	node := buildNode(ctx, a.cfg, readHost(), drivers)
	node.ID, node.SecretID, node.HTTPAddr = a.identity.NodeID, a.identity.SecretID, a.httpAddr
	a.node = node
	a.conn.init(time.Now())
	a.updates = newBatcher(a.sendUpdates, a.cfg.UpdateInterval, a.conn.registered, a.log)

	runCtx, stopRunners := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRunners()
	a.runCtx = runCtx
	a.restore()
	a.log.Info("agent started", "node_id", a.identity.NodeID, "node_name", node.Name, "http_addr", a.httpAddr, "drivers", len(drivers))
	close(a.ready)

	g, gctx := errgroup.WithContext(ctx)
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return gctx },
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("agent http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), httpShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		return nil
	})
	g.Go(func() error { return a.serverLoop(gctx) })
	g.Go(func() error { return a.watchLoop(gctx) })
	g.Go(func() error { return a.updates.Run(gctx) })
	g.Go(func() error { return a.disconnectLoop(gctx) })
	g.Go(func() error { return a.fingerprintLoop(gctx, drivers) })
	err = g.Wait()
	a.shutdownRunners(stopRunners)
	return err
}

// fingerprintLoop asks the drivers again every FingerprintInterval; when
// one's detection or health changed (a Docker Engine came up or went
// away), the node registers again so that placement sees it.
func (a *Agent) fingerprintLoop(ctx context.Context, drivers []driver.Driver) error {
	t := time.NewTicker(a.cfg.FingerprintInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		infos := fingerprintDrivers(ctx, drivers)
		if ctx.Err() != nil {
			return nil
		}
		cur := a.currentNode()
		if !driversChanged(cur.Drivers, infos) {
			continue
		}
		next := *cur
		next.Attributes = maps.Clone(cur.Attributes)
		applyDrivers(&next, infos)
		a.nodeMu.Lock()
		a.node = &next
		a.nodeMu.Unlock()
		for name, info := range infos {
			a.log.Info("driver fingerprint", "driver", name, "detected", info.Detected, "healthy", info.Healthy, "description", info.HealthDescription)
		}
		a.requestRegister()
	}
}

// unsearchable returns a folder on the path to dir (dir included) that
// other users may not enter, or "".
func unsearchable(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	for p := abs; ; p = filepath.Dir(p) {
		if info, err := os.Stat(p); err == nil && info.Mode().Perm()&0o001 == 0 {
			return p
		}
		if p == filepath.Dir(p) {
			return ""
		}
	}
}

// advertiseAddr is the address servers use for the agent API.
func advertiseAddr(configured string, listen net.Addr) string {
	if configured != "" {
		return configured
	}
	tcp, ok := listen.(*net.TCPAddr)
	if !ok {
		return listen.String()
	}
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

// buildDrivers returns the injected drivers, or builds exec and docker.
// The returned function closes the ones built here.
func (a *Agent) buildDrivers() ([]driver.Driver, func(), error) {
	if len(a.cfg.Drivers) > 0 {
		return a.cfg.Drivers, func() {}, nil
	}
	var out []driver.Driver
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			if err := c.Close(); err != nil {
				a.log.Warn("close driver", "error", err)
			}
		}
	}
	ex, err := execdriver.New(execdriver.Config{
		SupervisorCommand:  a.cfg.SupervisorCommand,
		SupervisorEnv:      a.cfg.SupervisorEnv,
		StateDir:           filepath.Join(a.cfg.DataDir, execStateDir),
		DefaultUser:        a.cfg.TaskUser,
		AllowRoot:          a.cfg.AllowRoot,
		CgroupParent:       a.cfg.CgroupParent,
		TasksPerSupervisor: a.cfg.TasksPerSupervisor,
		Logger:             a.log,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("agent: %w", err)
	}
	out, closers = append(out, ex), append(closers, ex)
	if !a.cfg.DisableDocker {
		dk, err := docker.New(docker.Config{KeepContainers: a.cfg.DockerKeepContainers, DisablePull: a.cfg.DisableDockerPull, Logger: a.log})
		if err != nil {
			a.log.Warn("docker driver unavailable", "error", err)
		} else {
			out, closers = append(out, dk), append(closers, dk)
		}
	}
	return out, closeAll, nil
}

// shutdownRunners ends the allocation runners: it stops every task first
// when the configuration says so, then detaches, and sends what updates
// are left.
func (a *Agent) shutdownRunners(detach context.CancelFunc) {
	if a.cfg.StopTasksOnShutdown {
		var running []*allocrunner.Runner
		for _, e := range a.entries() {
			if r := a.runnerOf(e); r != nil {
				running = append(running, r)
			}
		}
		longest := caravan.DefaultKillTimeout.D()
		for _, r := range running {
			r.Stop(stopKill("the agent shuts down"))
			longest = max(longest, maxKillTimeout(r.ServerAlloc()))
		}
		deadline := time.After(longest + stopTasksGrace)
	wait:
		for _, r := range running {
			select {
			case <-r.Done():
			case <-deadline:
				a.log.Warn("tasks did not stop in time on shutdown")
				break wait
			}
		}
	}
	detach()
	a.tracked.Wait()
	if a.updates.Len() > 0 && a.conn.registered() {
		ctx, cancel := context.WithTimeout(context.Background(), finalFlushTimeout)
		defer cancel()
		a.updates.Flush(ctx)
	}
}

func maxKillTimeout(al *caravan.Allocation) time.Duration {
	var out time.Duration
	if al == nil || al.Job == nil {
		return out
	}
	if tg := al.Job.LookupTaskGroup(al.TaskGroup); tg != nil {
		for _, t := range tg.Tasks {
			if t != nil {
				out = max(out, t.KillTimeout.D())
			}
		}
	}
	return out
}

// sendUpdates sends a batch of allocation updates. Not found means the
// servers do not know the node (any more): register again.
func (a *Agent) sendUpdates(ctx context.Context, updates []*caravan.AllocClientUpdate) error {
	_, err := a.client.UpdateAllocations(ctx, a.identity.NodeID, updates)
	if err == nil {
		a.conn.contact(time.Now())
		return nil
	}
	if errors.Is(err, caravan.ErrNotFound) {
		a.requestRegister()
	}
	return err
}
