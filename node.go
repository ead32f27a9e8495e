package caravan

import (
	"sort"
	"time"
)

// Node liveness statuses.
const (
	NodeStatusInitializing = "initializing" // registered, fingerprinting
	NodeStatusReady        = "ready"        // heartbeating, can take work
	NodeStatusDown         = "down"         // missed its heartbeat TTL
)

// Scheduling eligibility.
const (
	NodeEligible   = "eligible"
	NodeIneligible = "ineligible"
)

// Node is a machine running an agent.
//
// Liveness (Status) and administration (SchedulingEligibility, Drain) are
// kept apart: a draining node can go down and come back still draining.
// DisplayStatus folds them into the one word the CLI and UI show.
type Node struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// SecretID authenticates the agent; it is never returned by reads.
	SecretID   string                `json:"secret_id,omitempty"`
	Datacenter string                `json:"datacenter"`
	NodePool   string                `json:"node_pool"`
	HTTPAddr   string                `json:"http_addr,omitempty"`
	Attributes map[string]string     `json:"attributes,omitempty"`
	Meta       map[string]string     `json:"meta,omitempty"`
	Resources  NodeResources         `json:"resources"`
	Reserved   NodeReserved          `json:"reserved"`
	Drivers    map[string]DriverInfo `json:"drivers,omitempty"`

	Status                string         `json:"status"`
	StatusDescription     string         `json:"status_description,omitempty"`
	SchedulingEligibility string         `json:"scheduling_eligibility"`
	Drain                 *DrainStrategy `json:"drain,omitempty"`
	// LastHeartbeat is when the leader last heard from the agent.
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// StatusUpdatedAt is when Status last changed.
	StatusUpdatedAt time.Time `json:"status_updated_at,omitzero"`
	CreateIndex     uint64    `json:"create_index,omitempty"`
	ModifyIndex     uint64    `json:"modify_index,omitempty"`
}

// NodeResources is a node's capacity.
type NodeResources struct {
	// CPU is the total over all cores, in MHz.
	CPU int `json:"cpu"`
	// Memory in MB.
	Memory MemoryMB `json:"memory"`
	// Cores lists the ids of the node's CPU cores (as the kernel numbers
	// them, for cpusets).
	Cores []int `json:"cores,omitempty"`
	// MinDynamicPort and MaxDynamicPort bound the ports the scheduler may
	// pick for dynamic port requests; defaults 20000 and 32000.
	MinDynamicPort int `json:"min_dynamic_port,omitempty"`
	MaxDynamicPort int `json:"max_dynamic_port,omitempty"`
}

// NodeReserved is capacity kept back for the operating system and the agent.
type NodeReserved struct {
	CPU    int      `json:"cpu,omitempty"`
	Memory MemoryMB `json:"memory,omitempty"`
	Cores  []int    `json:"cores,omitempty"`
	Ports  []int    `json:"ports,omitempty"`
}

// Default dynamic port range.
const (
	DefaultMinDynamicPort = 20000
	DefaultMaxDynamicPort = 32000
)

// DriverInfo is what the agent found out about one driver.
type DriverInfo struct {
	Detected          bool              `json:"detected"`
	Healthy           bool              `json:"healthy"`
	HealthDescription string            `json:"health_description,omitempty"`
	Attributes        map[string]string `json:"attributes,omitempty"`
}

// DrainStrategy migrates a node's allocations away. Allocations still there
// at Deadline are stopped.
type DrainStrategy struct {
	// Deadline is how long migrations may take, from StartedAt; 0 means
	// none, a negative deadline stops everything at once.
	Deadline Duration `json:"deadline"`
	// IgnoreSystemJobs leaves system job allocations running.
	IgnoreSystemJobs bool `json:"ignore_system_jobs,omitempty"`
	// StartedAt and ForceDeadline are set by the server.
	StartedAt     time.Time `json:"started_at,omitzero"`
	ForceDeadline time.Time `json:"force_deadline,omitzero"`
}

// Ready reports whether the node can receive new allocations.
func (n *Node) Ready() bool {
	return n.Status == NodeStatusReady && n.SchedulingEligibility != NodeIneligible && n.Drain == nil
}

// DisplayStatus is the one word the CLI and UI show: down, initializing,
// draining, ineligible or ready.
func (n *Node) DisplayStatus() string {
	switch {
	case n.Status != NodeStatusReady:
		return n.Status
	case n.Drain != nil:
		return "draining"
	case n.SchedulingEligibility == NodeIneligible:
		return NodeIneligible
	}
	return NodeStatusReady
}

// Sanitized returns a copy without the secret, for reads.
func (n *Node) Sanitized() *Node {
	if n.SecretID == "" {
		return n
	}
	c := *n
	c.SecretID = ""
	return &c
}

// Canonicalize fills in defaults for a node an agent registers.
func (n *Node) Canonicalize() {
	if n.NodePool == "" {
		n.NodePool = DefaultNodePool
	}
	if n.Datacenter == "" {
		n.Datacenter = "dc1"
	}
	if n.Name == "" {
		n.Name = n.ID
	}
	if n.Status == "" {
		n.Status = NodeStatusInitializing
	}
	if n.SchedulingEligibility == "" {
		n.SchedulingEligibility = NodeEligible
	}
	if n.Resources.MinDynamicPort == 0 {
		n.Resources.MinDynamicPort = DefaultMinDynamicPort
	}
	if n.Resources.MaxDynamicPort == 0 {
		n.Resources.MaxDynamicPort = DefaultMaxDynamicPort
	}
	sort.Ints(n.Resources.Cores)
}

// Validate checks a node an agent registers.
func (n *Node) Validate() error {
	v := &validator{}
	if !ValidUUID(n.ID) {
		v.addf("id", "%q is not a UUID", n.ID)
	}
	if n.SecretID != "" && !ValidUUID(n.SecretID) {
		v.addf("secret_id", "not a UUID")
	}
	if n.Name == "" || len(n.Name) > 256 {
		v.addf("name", "must have 1 to 256 characters")
	}
	if !ValidID(n.NodePool) {
		v.addf("node_pool", "%q is not a valid pool name", n.NodePool)
	}
	if !ValidID(n.Datacenter) {
		v.addf("datacenter", "%q is not a valid datacenter name", n.Datacenter)
	}
	switch n.Status {
	case NodeStatusInitializing, NodeStatusReady, NodeStatusDown:
	default:
		v.addf("status", "unknown status %q", n.Status)
	}
	switch n.SchedulingEligibility {
	case NodeEligible, NodeIneligible:
	default:
		v.addf("scheduling_eligibility", "unknown eligibility %q", n.SchedulingEligibility)
	}
	r := n.Resources
	if r.CPU < 0 {
		v.addf("resources.cpu", "must not be negative")
	}
	if r.Memory < 0 {
		v.addf("resources.memory", "must not be negative")
	}
	if r.MinDynamicPort < 1 || r.MaxDynamicPort > 65535 || r.MinDynamicPort > r.MaxDynamicPort {
		v.addf("resources.min_dynamic_port", "dynamic port range %d-%d is invalid", r.MinDynamicPort, r.MaxDynamicPort)
	}
	for i, c := range r.Cores {
		if c < 0 || c > 4095 {
			v.addf("resources.cores", "core id %d at %d is out of range", c, i)
		}
	}
	if n.Reserved.CPU < 0 || n.Reserved.Memory < 0 {
		v.addf("reserved", "must not be negative")
	}
	return v.err()
}
