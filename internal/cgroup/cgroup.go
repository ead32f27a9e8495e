// Package cgroup puts a task's processes in a Linux control group with
// limits, and lists, kills, measures and deletes them, on hosts with cgroup
// v1 (legacy or hybrid) and cgroup v2 (unified) alike. It reads and writes
// the cgroup file systems itself: the few files caravan needs do not call
// for a library, and a task's start and end pay for every file touched.
//
// Layout. Every task gets one leaf group below a parent that caravan owns,
// such as "caravan/<alloc id>.<task>". On v1 the leaf exists in each
// hierarchy caravan uses (freezer, cpu, cpuacct, memory; cpuset and pids
// when the task's limits need them). On
// v2 the parent and its ancestors enable the controllers in
// cgroup.subtree_control and never hold a process themselves; processes only
// ever live in the leaves, as v2's no-internal-processes rule demands.
//
//	/sys/fs/cgroup/                 (v2; on v1 the same below each hierarchy)
//	└── caravan/                    subtree_control: +cpu +cpuset +memory +pids
//	    ├── 3f2a….web/              cgroup.procs: the task and its children
//	    └── 9b41….batch/
//
// A process is started inside its group from its first instruction
// (Group.ForkExec): with CLONE_INTO_CGROUP on v2; on v1 one thread of the
// calling process moves itself into the group, forks, and moves back; on
// old v2 kernels without clone3 the whole calling process does.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors.
var (
	// ErrNotFound means the named group does not exist.
	ErrNotFound = errors.New("cgroup not found")
	// ErrInvalidName means a group name is empty, absolute, or holds a
	// segment that is not a plain file name.
	ErrInvalidName = errors.New("invalid cgroup name")
	// ErrUnsupported means the host has no usable cgroup hierarchy.
	ErrUnsupported = errors.New("no usable cgroup hierarchy")
)

// DefaultRoot is where the cgroup file systems are mounted.
const DefaultRoot = "/sys/fs/cgroup"

// Version is a host's cgroup mode.
type Version int

// Cgroup versions.
const (
	// V1 is the legacy (or hybrid) layout: one hierarchy per controller.
	V1 Version = 1
	// V2 is the unified hierarchy.
	V2 Version = 2
)

// String returns "v1" or "v2".
func (v Version) String() string {
	switch v {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return "v" + strconv.Itoa(int(v))
}

// v1Controllers returns the v1 hierarchies caravan uses, in the order they
// are created and joined.
func v1Controllers() []string {
	return []string{"freezer", "pids", "cpuset", "cpu", "cpuacct", "memory"}
}

// Detect reports the cgroup version of the host whose cgroup file systems
// are mounted at root: V2 when root is a unified hierarchy, V1 when it holds
// a v1 memory or cpu hierarchy (a hybrid host counts as V1).
func Detect(root string) (Version, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return V2, nil
	}
	for _, c := range []string{"memory", "cpu"} {
		if _, err := os.Stat(filepath.Join(root, c, "cgroup.procs")); err == nil {
			return V1, nil
		}
	}
	return 0, fmt.Errorf("%s: %w", root, ErrUnsupported)
}

// Limits are what a group enforces. Zero values mean no limit.
type Limits struct {
	// MemoryBytes is a hard memory limit. Swap is turned off for the group
	// where the host accounts for it.
	MemoryBytes int64
	// CPUShares is the v1 cpu.shares weight; on v2 it is mapped to
	// cpu.weight. caravan passes the task's MHz.
	CPUShares uint64
	// Cpus is an exclusive cpuset: the only cores the group may run on.
	Cpus []int
	// Pids caps the number of processes and threads.
	Pids int64
}

// Stats are a group's resource figures.
type Stats struct {
	// CPUUser and CPUSystem are the CPU time used in user and kernel mode.
	CPUUser   time.Duration
	CPUSystem time.Duration
	// MemoryBytes is the current and MaxMemoryBytes the peak memory use
	// (0 where the kernel does not record a peak).
	MemoryBytes    int64
	MaxMemoryBytes int64
	// OOMKills counts processes the kernel killed for exceeding the
	// memory limit.
	OOMKills uint64
}

// CPUTime is user plus system CPU time.
func (s Stats) CPUTime() time.Duration { return s.CPUUser + s.CPUSystem }

// Manager creates and loads groups on one host. It is safe for concurrent
// use.
type Manager struct {
	version Version
	root    string
	// controllers are the v1 hierarchies present on the host.
	controllers []string
	// startMu serialises ForkExec calls that move this process into a
	// group and back.
	startMu sync.Mutex
}

// NewManager returns a manager for the cgroup file systems mounted at root
// (DefaultRoot when empty). Version 0 detects the version; tests pass V2
// with the root of a spare unified hierarchy.
func NewManager(version Version, root string) (*Manager, error) {
	if root == "" {
		root = DefaultRoot
	}
	if version == 0 {
		v, err := Detect(root)
		if err != nil {
			return nil, err
		}
		version = v
	}
	m := &Manager{version: version, root: root}
	switch version {
	case V1:
		for _, c := range v1Controllers() {
			if _, err := os.Stat(filepath.Join(root, c, "cgroup.procs")); err == nil {
				m.controllers = append(m.controllers, c)
			}
		}
		if !slices.Contains(m.controllers, "memory") && !slices.Contains(m.controllers, "freezer") {
			return nil, fmt.Errorf("%s: neither a memory nor a freezer hierarchy: %w", root, ErrUnsupported)
		}
	case V2:
		if _, err := os.Stat(filepath.Join(root, "cgroup.procs")); err != nil {
			return nil, fmt.Errorf("%s is not a cgroup v2 hierarchy: %w", root, ErrUnsupported)
		}
	default:
		return nil, fmt.Errorf("cgroup version %d: %w", version, ErrUnsupported)
	}
	return m, nil
}

// Version is the host's cgroup version.
func (m *Manager) Version() Version { return m.version }

// Root is where the cgroup file systems are mounted.
func (m *Manager) Root() string { return m.root }

// Controllers lists the v1 hierarchies in use, or the controllers the v2
// root offers.
func (m *Manager) Controllers() []string {
	if m.version == V1 {
		return slices.Clone(m.controllers)
	}
	b, err := os.ReadFile(filepath.Join(m.root, "cgroup.controllers"))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// Group is one control group. Its methods are safe for concurrent use,
// except that a group must not be used after Delete.
type Group struct {
	m    *Manager
	name string
	b    backend
}

// backend is what differs between v1 and v2.
type backend interface {
	// dirs are the directories whose cgroup.procs a process writes itself
	// into to join the group (one per v1 hierarchy, one on v2).
	dirs() []hierarchyDir
	pids() ([]int, error)
	stats() (Stats, error)
	freeze(frozen bool) error
	// killAll kills every process at once where the kernel can
	// (cgroup.kill); false means it cannot.
	killAll() (bool, error)
	remove() error
}

// hierarchyDir is a group's directory in one hierarchy; controller is ""
// on v2.
type hierarchyDir struct {
	controller string
	dir        string
}

// Name is the group's name below the root, such as "caravan/x.web".
func (g *Group) Name() string { return g.name }

// Version is the cgroup version of the group's host.
func (g *Group) Version() Version { return g.m.version }

// Pids lists the processes in the group and its descendants.
func (g *Group) Pids() ([]int, error) {
	pids, err := g.b.pids()
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("list processes of %s: %w", g.name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", g.name, err)
	}
	return pids, nil
}

// Stats reads the group's resource figures.
func (g *Group) Stats() (Stats, error) {
	s, err := g.b.stats()
	if err != nil {
		return Stats{}, fmt.Errorf("read stats of %s: %w", g.name, err)
	}
	return s, nil
}

// Delete removes the group. It fails while processes remain in it; Kill
// first. Deleting a group that is gone already succeeds.
func (g *Group) Delete() error {
	if err := g.b.remove(); err != nil {
		return fmt.Errorf("delete cgroup %s: %w", g.name, err)
	}
	return nil
}

// Create makes the group name (creating its parents as needed) with the
// limits l. Creating a group that exists updates its limits.
func (m *Manager) Create(name string, l Limits) (*Group, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	for _, c := range l.Cpus {
		if c < 0 {
			return nil, fmt.Errorf("cpuset core %d: must not be negative", c)
		}
	}
	if l.MemoryBytes < 0 || l.Pids < 0 {
		return nil, fmt.Errorf("cgroup limits must not be negative")
	}
	var b backend
	var err error
	if m.version == V1 {
		b, err = m.createV1(name, l)
	} else {
		b, err = m.createV2(name, l)
	}
	if err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	return &Group{m: m, name: name, b: b}, nil
}

// Load opens an existing group, for example after a restart. A group that
// does not exist gives ErrNotFound.
func (m *Manager) Load(name string) (*Group, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	var b backend
	var err error
	if m.version == V1 {
		b, err = m.loadV1(name)
	} else {
		b, err = m.loadV2(name)
	}
	if err != nil {
		return nil, fmt.Errorf("load cgroup %s: %w", name, err)
	}
	return &Group{m: m, name: name, b: b}, nil
}

// ValidateName checks a group name: slash-separated segments, relative,
// none empty, "." or "..", each made of letters, digits and "._-@:+".
func ValidateName(name string) error {
	if name == "" || len(name) > 1024 {
		return fmt.Errorf("%q: %w", name, ErrInvalidName)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." || len(seg) > 255 {
			return fmt.Errorf("%q: %w", name, ErrInvalidName)
		}
		for _, r := range seg {
			if !nameRune(r) {
				return fmt.Errorf("%q: character %q: %w", name, r, ErrInvalidName)
			}
		}
	}
	return nil
}

func nameRune(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("._-@:+", r)
}

// Segment turns any string into one valid name segment, replacing what is
// not allowed with "_" and shortening it to 200 bytes.
func Segment(s string) string {
	b := []byte(s)
	if len(b) > 200 {
		b = b[:200]
	}
	for i, c := range b {
		if c >= 0x80 || !nameRune(rune(c)) {
			b[i] = '_'
		}
	}
	out := string(b)
	if out == "" || out == "." || out == ".." {
		return strings.Repeat("_", max(1, len(out)))
	}
	return out
}

// FormatCPUList renders cores as a cpuset list ("0,2,3"), sorted, without
// duplicates.
func FormatCPUList(cpus []int) string {
	s := slices.Clone(cpus)
	slices.Sort(s)
	s = slices.Compact(s)
	parts := make([]string, len(s))
	for i, c := range s {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, ",")
}

// ParseCPUList reads a cpuset list such as "0-2,5" (the format of
// cpuset.cpus and of Cpus_allowed_list).
func ParseCPUList(s string) ([]int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("cpu list %q: bad entry %q", s, part)
		}
		b := a
		if isRange {
			b, err = strconv.Atoi(hi)
			if err != nil || b < a || b-a > 1<<16 {
				return nil, fmt.Errorf("cpu list %q: bad range %q", s, part)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}
