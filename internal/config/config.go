// Package config holds the configuration of a caravan server and agent:
// defaults, an HCL (or JSON) file, and command-line flags on top, in that
// order, then Validate. docs/configuration.md documents every field.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsimple"

	"github.com/caravan-sched/caravan"
)

// Config is the whole configuration of one caravan process. A server, an
// agent, or both (dev mode) read the blocks that concern them.
type Config struct {
	// Name identifies this server in the Raft cluster and defaults to the
	// host name.
	Name string `hcl:"name,optional"`
	// DataDir holds Raft data, snapshots, the agent's state and task
	// directories.
	DataDir string `hcl:"data_dir,optional"`
	// Bind is the address the HTTP and Raft listeners bind to.
	Bind string `hcl:"bind,optional"`
	// Advertise is the address other servers and agents use to reach this
	// one; defaults to Bind (or 127.0.0.1 when Bind is 0.0.0.0).
	Advertise string `hcl:"advertise,optional"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `hcl:"log_level,optional"`
	// LogJSON writes logs as JSON lines.
	LogJSON bool `hcl:"log_json,optional"`

	Server *Server `hcl:"server,block"`
	Agent  *Agent  `hcl:"agent,block"`
}

// Server configures the control plane.
type Server struct {
	// HTTPPort serves the API and the web UI; default 8500.
	HTTPPort int `hcl:"http_port,optional"`
	// RaftPort carries Raft traffic between servers; default HTTPPort-200
	// (8300).
	RaftPort int `hcl:"raft_port,optional"`
	// Join lists HTTP addresses of servers to join; retried every
	// RetryInterval until it works. Empty: bootstrap a new cluster when
	// there is no Raft state yet.
	Join []string `hcl:"join,optional"`
	// RetryJoin is another name for Join, as Nomad users write it.
	RetryJoin     []string `hcl:"retry_join,optional"`
	RetryInterval string   `hcl:"retry_interval,optional"`
	// NumSchedulers is the number of scheduler workers; default the
	// number of CPUs.
	NumSchedulers int `hcl:"num_schedulers,optional"`
	// DefaultAlgorithm places jobs that name none: binpack (default),
	// spread, first-fit or most-free-memory.
	DefaultAlgorithm string `hcl:"default_algorithm,optional"`

	// MinHeartbeatTTL, MaxHeartbeatsPerSecond and HeartbeatGrace set how
	// long a node may stay silent: TTL = max(min, nodes/max_per_second),
	// plus jitter; a node is down after TTL + grace.
	MinHeartbeatTTL        string  `hcl:"min_heartbeat_ttl,optional"`
	MaxHeartbeatsPerSecond float64 `hcl:"max_heartbeats_per_second,optional"`
	HeartbeatGrace         string  `hcl:"heartbeat_grace,optional"`

	// GC thresholds: terminal evaluations, allocations and stopped or
	// finished jobs older than these are removed, and so are the oldest
	// beyond the count limits.
	GCInterval          string `hcl:"gc_interval,optional"`
	EvalGCThreshold     string `hcl:"eval_gc_threshold,optional"`
	JobGCThreshold      string `hcl:"job_gc_threshold,optional"`
	MaxTerminalAllocs   int    `hcl:"max_terminal_allocs,optional"`
	MaxTerminalEvals    int    `hcl:"max_terminal_evals,optional"`
	MaxJobVersions      int    `hcl:"max_job_versions,optional"`
	RaftSnapshotEntries int    `hcl:"raft_snapshot_threshold,optional"`
	RaftTrailingLogs    int    `hcl:"raft_trailing_logs,optional"`
	// FastRaft shortens Raft's election timeouts, for a single server on
	// one machine (dev mode) or clusters on loopback in tests.
	FastRaft bool `hcl:"fast_raft,optional"`
}

// Agent configures the node agent.
type Agent struct {
	// Servers lists HTTP addresses of servers ("host:port").
	Servers []string `hcl:"servers,optional"`
	// HTTPPort serves the agent API (logs, allocations); default 8501.
	HTTPPort   int               `hcl:"http_port,optional"`
	NodeName   string            `hcl:"node_name,optional"`
	Datacenter string            `hcl:"datacenter,optional"`
	NodePool   string            `hcl:"node_pool,optional"`
	Meta       map[string]string `hcl:"meta,optional"`
	// MaxClientDisconnect is how long tasks go on running while no server
	// answers; then they are stopped. Default 5m.
	MaxClientDisconnect string `hcl:"max_client_disconnect,optional"`
	// TaskUser runs tasks that name no user; default "nobody".
	TaskUser string `hcl:"task_user,optional"`
	// AllowRoot lets jobs run tasks as root.
	AllowRoot bool `hcl:"allow_root,optional"`
	// ReservedCPU (MHz) and ReservedMemory (MB) are kept back for the
	// system.
	ReservedCPU    int `hcl:"reserved_cpu,optional"`
	ReservedMemory int `hcl:"reserved_memory,optional"`
	// LogMaxFileSize (MB) and LogMaxFiles bound each task's log files.
	LogMaxFileSize int `hcl:"log_max_file_size,optional"`
	LogMaxFiles    int `hcl:"log_max_files,optional"`
	// CgroupParent names the cgroup that holds task cgroups.
	CgroupParent string `hcl:"cgroup_parent,optional"`
	// DockerRemoveContainers removes containers once their task ended.
	DockerRemoveContainers *bool `hcl:"docker_remove_containers,optional"`
	// DisableDocker turns the docker driver off.
	DisableDocker bool `hcl:"disable_docker,optional"`
	// DisableDockerPull never pulls images: a task whose image is not on
	// the machine fails at once with a clear error.
	DisableDockerPull bool `hcl:"disable_docker_pull,optional"`
	// TasksPerSupervisor is how many exec tasks share one supervisor
	// process; 0 takes the driver's default (8), 1 gives every task its
	// own.
	TasksPerSupervisor int `hcl:"tasks_per_supervisor,optional"`
}

// Default returns the defaults for a server and an agent.
func Default() *Config {
	host, _ := os.Hostname()
	return &Config{
		Name:     host,
		DataDir:  "caravan-data",
		Bind:     "127.0.0.1",
		LogLevel: "info",
		Server: &Server{
			HTTPPort:               8500,
			RetryInterval:          "5s",
			DefaultAlgorithm:       caravan.AlgorithmBinpack,
			MinHeartbeatTTL:        "10s",
			MaxHeartbeatsPerSecond: 50,
			HeartbeatGrace:         "10s",
			GCInterval:             "5m",
			EvalGCThreshold:        "1h",
			JobGCThreshold:         "4h",
			MaxTerminalAllocs:      50_000,
			MaxTerminalEvals:       50_000,
			MaxJobVersions:         10,
			RaftSnapshotEntries:    8192,
			RaftTrailingLogs:       10_240,
		},
		Agent: &Agent{
			Servers:             []string{"127.0.0.1:8500"},
			HTTPPort:            8501,
			Datacenter:          "dc1",
			NodePool:            caravan.DefaultNodePool,
			MaxClientDisconnect: "5m",
			TaskUser:            "nobody",
			LogMaxFileSize:      10,
			LogMaxFiles:         5,
			CgroupParent:        "caravan",
		},
	}
}

// LoadFile reads an HCL (.hcl) or JSON (.json) file over c. Unknown fields
// are errors that name the file, line and field.
func (c *Config) LoadFile(path string) error {
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	var file Config
	if err := hclsimple.Decode(filepath.Base(path), src, nil, &file); err != nil {
		var diags hcl.Diagnostics
		if errors.As(err, &diags) {
			return fmt.Errorf("config %s: %w: %s", path, caravan.ErrInvalid, diags.Error())
		}
		return fmt.Errorf("config %s: %w: %v", path, caravan.ErrInvalid, err)
	}
	c.merge(&file)
	return nil
}

// merge copies every field that o sets over c.
func (c *Config) merge(o *Config) {
	setString(&c.Name, o.Name)
	setString(&c.DataDir, o.DataDir)
	setString(&c.Bind, o.Bind)
	setString(&c.Advertise, o.Advertise)
	setString(&c.LogLevel, o.LogLevel)
	c.LogJSON = c.LogJSON || o.LogJSON
	if o.Server != nil {
		c.Server.merge(o.Server)
	}
	if o.Agent != nil {
		c.Agent.merge(o.Agent)
	}
}

func (s *Server) merge(o *Server) {
	setInt(&s.HTTPPort, o.HTTPPort)
	setInt(&s.RaftPort, o.RaftPort)
	if len(o.Join) > 0 || len(o.RetryJoin) > 0 {
		s.Join = append(append([]string(nil), o.Join...), o.RetryJoin...)
	}
	setString(&s.RetryInterval, o.RetryInterval)
	setInt(&s.NumSchedulers, o.NumSchedulers)
	setString(&s.DefaultAlgorithm, o.DefaultAlgorithm)
	setString(&s.MinHeartbeatTTL, o.MinHeartbeatTTL)
	if o.MaxHeartbeatsPerSecond != 0 {
		s.MaxHeartbeatsPerSecond = o.MaxHeartbeatsPerSecond
	}
	setString(&s.HeartbeatGrace, o.HeartbeatGrace)
	setString(&s.GCInterval, o.GCInterval)
	setString(&s.EvalGCThreshold, o.EvalGCThreshold)
	setString(&s.JobGCThreshold, o.JobGCThreshold)
	setInt(&s.MaxTerminalAllocs, o.MaxTerminalAllocs)
	setInt(&s.MaxTerminalEvals, o.MaxTerminalEvals)
	setInt(&s.MaxJobVersions, o.MaxJobVersions)
	setInt(&s.RaftSnapshotEntries, o.RaftSnapshotEntries)
	setInt(&s.RaftTrailingLogs, o.RaftTrailingLogs)
	s.FastRaft = s.FastRaft || o.FastRaft
}

func (a *Agent) merge(o *Agent) {
	if len(o.Servers) > 0 {
		a.Servers = o.Servers
	}
	setInt(&a.HTTPPort, o.HTTPPort)
	setString(&a.NodeName, o.NodeName)
	setString(&a.Datacenter, o.Datacenter)
	setString(&a.NodePool, o.NodePool)
	if len(o.Meta) > 0 {
		a.Meta = o.Meta
	}
	setString(&a.MaxClientDisconnect, o.MaxClientDisconnect)
	setString(&a.TaskUser, o.TaskUser)
	a.AllowRoot = a.AllowRoot || o.AllowRoot
	setInt(&a.ReservedCPU, o.ReservedCPU)
	setInt(&a.ReservedMemory, o.ReservedMemory)
	setInt(&a.LogMaxFileSize, o.LogMaxFileSize)
	setInt(&a.LogMaxFiles, o.LogMaxFiles)
	setString(&a.CgroupParent, o.CgroupParent)
	if o.DockerRemoveContainers != nil {
		a.DockerRemoveContainers = o.DockerRemoveContainers
	}
	a.DisableDocker = a.DisableDocker || o.DisableDocker
	a.DisableDockerPull = a.DisableDockerPull || o.DisableDockerPull
	setInt(&a.TasksPerSupervisor, o.TasksPerSupervisor)
}

func setString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func setInt(dst *int, v int) {
	if v != 0 {
		*dst = v
	}
}

// Finish fills in values derived from others (the Raft port, the advertise
// address) and validates the result.
func (c *Config) Finish() error {
	if c.Server.RaftPort == 0 {
		c.Server.RaftPort = c.Server.HTTPPort - 200
		if c.Server.RaftPort <= 0 {
			c.Server.RaftPort = c.Server.HTTPPort + 1000
		}
	}
	if c.Advertise == "" {
		c.Advertise = c.Bind
		if ip := net.ParseIP(c.Bind); ip != nil && ip.IsUnspecified() {
			c.Advertise = "127.0.0.1"
		}
	}
	if c.Agent.NodeName == "" {
		c.Agent.NodeName = c.Name
	}
	return c.Validate()
}

// Validate reports every bad field at once, by its name in the file.
func (c *Config) Validate() error {
	var errs []caravan.FieldError
	bad := func(path, format string, args ...any) {
		errs = append(errs, caravan.FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if c.Name == "" {
		bad("name", "missing (and the host name is unknown)")
	}
	if c.DataDir == "" {
		bad("data_dir", "missing")
	}
	if net.ParseIP(c.Bind) == nil {
		bad("bind", "%q is not an IP address", c.Bind)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	s := c.Server
	checkPort(bad, "server.http_port", s.HTTPPort)
	checkPort(bad, "server.raft_port", s.RaftPort)
	for i, j := range s.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad("server.join["+strconv.Itoa(i)+"]", "%q is not host:port", j)
		}
	}
	for name, v := range map[string]string{
		"server.retry_interval": s.RetryInterval, "server.min_heartbeat_ttl": s.MinHeartbeatTTL,
		"server.heartbeat_grace": s.HeartbeatGrace, "server.gc_interval": s.GCInterval,
		"server.eval_gc_threshold": s.EvalGCThreshold, "server.job_gc_threshold": s.JobGCThreshold,
		"agent.max_client_disconnect": c.Agent.MaxClientDisconnect,
	} {
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			bad(name, "%q is not a positive duration such as \"30s\"", v)
		}
	}
	if s.NumSchedulers < 0 {
		bad("server.num_schedulers", "must not be negative")
	}
	switch s.DefaultAlgorithm {
	case caravan.AlgorithmBinpack, caravan.AlgorithmSpread, caravan.AlgorithmFirstFit, caravan.AlgorithmMostFreeMemory:
	default:
		bad("server.default_algorithm", "%q: use binpack, spread, first-fit or most-free-memory", s.DefaultAlgorithm)
	}
	if s.MaxHeartbeatsPerSecond <= 0 {
		bad("server.max_heartbeats_per_second", "must be positive")
	}
	for name, v := range map[string]int{
		"server.max_terminal_allocs": s.MaxTerminalAllocs, "server.max_terminal_evals": s.MaxTerminalEvals,
		"server.max_job_versions": s.MaxJobVersions, "server.raft_snapshot_threshold": s.RaftSnapshotEntries,
		"server.raft_trailing_logs": s.RaftTrailingLogs,
	} {
		if v <= 0 {
			bad(name, "must be positive")
		}
	}
	a := c.Agent
	checkPort(bad, "agent.http_port", a.HTTPPort)
	for i, srv := range a.Servers {
		if _, _, err := net.SplitHostPort(srv); err != nil {
			bad("agent.servers["+strconv.Itoa(i)+"]", "%q is not host:port", srv)
		}
	}
	if !caravan.ValidID(a.Datacenter) {
		bad("agent.datacenter", "%q is not a valid name", a.Datacenter)
	}
	if !caravan.ValidID(a.NodePool) {
		bad("agent.node_pool", "%q is not a valid name", a.NodePool)
	}
	if a.ReservedCPU < 0 || a.ReservedMemory < 0 {
		bad("agent.reserved_cpu", "reservations must not be negative")
	}
	if a.LogMaxFileSize <= 0 || a.LogMaxFiles <= 0 {
		bad("agent.log_max_file_size", "log limits must be positive")
	}
	if a.TaskUser == "" {
		bad("agent.task_user", "missing")
	}
	if a.TasksPerSupervisor < 0 || a.TasksPerSupervisor > 1024 {
		bad("agent.tasks_per_supervisor", "%d is out of range (0 for the default, 1 to 1024)", a.TasksPerSupervisor)
	}
	if len(errs) > 0 {
		return fmt.Errorf("configuration: %w", &caravan.ValidationError{Fields: errs})
	}
	return nil
}

func checkPort(bad func(string, string, ...any), name string, p int) {
	if p < 1 || p > 65535 {
		bad(name, "%d is not a port number", p)
	}
}

// Duration parses a duration field that Validate has checked.
func Duration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// HTTPAddr is the server's HTTP listen address.
func (c *Config) HTTPAddr() string {
	return net.JoinHostPort(c.Bind, strconv.Itoa(c.Server.HTTPPort))
}

// RaftAddr is the server's Raft listen address.
func (c *Config) RaftAddr() string {
	return net.JoinHostPort(c.Bind, strconv.Itoa(c.Server.RaftPort))
}

// AdvertiseHTTP and AdvertiseRaft are the addresses others use.
func (c *Config) AdvertiseHTTP() string {
	return net.JoinHostPort(c.Advertise, strconv.Itoa(c.Server.HTTPPort))
}

// AdvertiseRaft is the Raft address other servers dial.
func (c *Config) AdvertiseRaft() string {
	return net.JoinHostPort(c.Advertise, strconv.Itoa(c.Server.RaftPort))
}

// AgentHTTPAddr is the agent's HTTP listen address.
func (c *Config) AgentHTTPAddr() string {
	return net.JoinHostPort(c.Bind, strconv.Itoa(c.Agent.HTTPPort))
}
