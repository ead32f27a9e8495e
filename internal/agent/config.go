package agent

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/driver"
)

// Defaults of Config.
const (
	DefaultHTTPPort            = 8501
	DefaultMaxClientDisconnect = 5 * time.Minute
	DefaultUpdateInterval      = 200 * time.Millisecond
	DefaultStatsInterval       = 10 * time.Second
	DefaultBlockingWait        = 5 * time.Minute
	DefaultFingerprintInterval = 30 * time.Second
	// DefaultHeartbeatTTL is used until a server names one.
	DefaultHeartbeatTTL = 10 * time.Second
)

// Config configures an Agent.
type Config struct {
	// DataDir holds the state file, allocation directories and the exec
	// driver's per-task state.
	DataDir string
	// Servers are HTTP addresses ("host:port") of servers; the agent
	// learns the rest from them.
	Servers []string
	// HTTPAddr is where the agent API listens ("host:port"; port 0 picks
	// a free port). AdvertiseAddr is how servers reach it; by default the
	// listener's address, with 127.0.0.1 for an unspecified host.
	HTTPAddr      string
	AdvertiseAddr string

	NodeName   string
	Datacenter string
	NodePool   string
	Meta       map[string]string

	// MaxClientDisconnect is how long tasks go on running while no server
	// answers; then they are stopped (lost).
	MaxClientDisconnect time.Duration
	// TaskUser runs exec tasks that name no user; AllowRoot lets jobs run
	// tasks as root.
	TaskUser  string
	AllowRoot bool
	// ReservedCPU (MHz) and ReservedMemory are kept back from the node's
	// capacity.
	ReservedCPU    int
	ReservedMemory caravan.MemoryMB
	// LogMaxFileSize (bytes) and LogMaxFiles bound each task's log files.
	LogMaxFileSize int64
	LogMaxFiles    int
	// CgroupParent names the cgroup that holds task cgroups.
	CgroupParent string
	// DockerKeepContainers leaves stopped containers until destroyed;
	// DisableDocker turns the docker driver off.
	DockerKeepContainers bool
	DisableDocker        bool
	// DisableDockerPull makes a missing image an error at once instead of
	// a pull.
	DisableDockerPull bool
	// TasksPerSupervisor is how many exec tasks share a supervisor; 0 is
	// the exec driver's default.
	TasksPerSupervisor int
	// SupervisorCommand runs `caravan supervise` for the exec driver; by
	// default this executable. SupervisorEnv is added to its environment.
	SupervisorCommand []string
	SupervisorEnv     []string

	// Drivers, when set, replace the exec and docker drivers the agent
	// would build (tests). The agent does not close them.
	Drivers []driver.Driver
	// StopTasksOnShutdown stops every task when Run ends (dev mode).
	// Otherwise tasks keep running for the next agent to re-attach.
	StopTasksOnShutdown bool

	// UpdateInterval is how often status updates are sent, StatsInterval
	// how often task stats are sampled, BlockingWait how long one watch
	// of the node's allocations may block, FingerprintInterval how often
	// the drivers' health is checked again.
	UpdateInterval      time.Duration
	StatsInterval       time.Duration
	BlockingWait        time.Duration
	FingerprintInterval time.Duration
}

// FromConfig makes an agent Config from the agent block of a caravan
// configuration (which Finish has validated).
func FromConfig(c *config.Config) Config {
	a := c.Agent
	cfg := Config{
		DataDir:              c.DataDir,
		Servers:              append([]string(nil), a.Servers...),
		HTTPAddr:             c.AgentHTTPAddr(),
		NodeName:             a.NodeName,
		Datacenter:           a.Datacenter,
		NodePool:             a.NodePool,
		Meta:                 a.Meta,
		MaxClientDisconnect:  config.Duration(a.MaxClientDisconnect),
		TaskUser:             a.TaskUser,
		AllowRoot:            a.AllowRoot,
		ReservedCPU:          a.ReservedCPU,
		ReservedMemory:       caravan.MemoryMB(a.ReservedMemory),
		LogMaxFileSize:       int64(a.LogMaxFileSize) << 20,
		LogMaxFiles:          a.LogMaxFiles,
		CgroupParent:         a.CgroupParent,
		DockerKeepContainers: a.DockerRemoveContainers != nil && !*a.DockerRemoveContainers,
		DisableDocker:        a.DisableDocker,
		DisableDockerPull:    a.DisableDockerPull,
		TasksPerSupervisor:   a.TasksPerSupervisor,
	}
	if c.Advertise != "" {
		cfg.AdvertiseAddr = net.JoinHostPort(c.Advertise, strconv.Itoa(a.HTTPPort))
	}
	return cfg
}

// withDefaults fills in defaults and checks what must be set.
func (c Config) withDefaults() (Config, error) {
	if c.DataDir == "" {
		return c, fmt.Errorf("agent config: %w", caravan.Invalidf("data_dir", "missing"))
	}
	if len(c.Servers) == 0 {
		return c, fmt.Errorf("agent config: %w", caravan.Invalidf("servers", "missing: give at least one server address"))
	}
	for i, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return c, fmt.Errorf("agent config: %w", caravan.Invalidf(fmt.Sprintf("servers[%d]", i), "%q is not host:port", s))
		}
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(DefaultHTTPPort))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return c, fmt.Errorf("agent config: %w", caravan.Invalidf("http_addr", "%q is not host:port", c.HTTPAddr))
	}
	if c.Datacenter == "" {
		c.Datacenter = "dc1"
	}
	if c.NodePool == "" {
		c.NodePool = caravan.DefaultNodePool
	}
	if !caravan.ValidID(c.Datacenter) {
		return c, fmt.Errorf("agent config: %w", caravan.Invalidf("datacenter", "%q is not a valid name", c.Datacenter))
	}
	if !caravan.ValidID(c.NodePool) {
		return c, fmt.Errorf("agent config: %w", caravan.Invalidf("node_pool", "%q is not a valid name", c.NodePool))
	}
	if c.ReservedCPU < 0 || c.ReservedMemory < 0 {
		return c, fmt.Errorf("agent config: %w", caravan.Invalidf("reserved_cpu", "reservations must not be negative"))
	}
	if c.MaxClientDisconnect <= 0 {
		c.MaxClientDisconnect = DefaultMaxClientDisconnect
	}
	if c.TaskUser == "" {
		c.TaskUser = "nobody"
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "caravan"
	}
	if c.UpdateInterval <= 0 {
		c.UpdateInterval = DefaultUpdateInterval
	}
	if c.StatsInterval <= 0 {
		c.StatsInterval = DefaultStatsInterval
	}
	if c.BlockingWait <= 0 {
		c.BlockingWait = DefaultBlockingWait
	}
	if c.FingerprintInterval <= 0 {
		c.FingerprintInterval = DefaultFingerprintInterval
	}
	return c, nil
}
