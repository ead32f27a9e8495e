package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// v1Group is a group on a v1 host: one directory per hierarchy.
type v1Group struct {
	root        string
	name        string
	controllers []string
	cg          cgroup1.Cgroup
}

// hierarchyV1 lists the subsystems caravan uses that the host has.
func (m *Manager) hierarchyV1() cgroup1.Hierarchy {
	return func() ([]cgroup1.Subsystem, error) {
		var subs []cgroup1.Subsystem
		for _, c := range m.controllers {
			switch c {
			case "freezer":
				subs = append(subs, cgroup1.NewFreezer(m.root))
			case "pids":
				subs = append(subs, cgroup1.NewPids(m.root))
			case "cpuset":
				subs = append(subs, cgroup1.NewCpuset(m.root))
			case "cpu":
				subs = append(subs, cgroup1.NewCpu(m.root))
			case "cpuacct":
				subs = append(subs, cgroup1.NewCpuacct(m.root))
			case "memory":
				subs = append(subs, cgroup1.NewMemory(m.root, cgroup1.OptionalSwap()))
			}
		}
		return subs, nil
	}
}

// resourcesV1 maps limits to the OCI resources containerd writes.
func (m *Manager) resourcesV1(l Limits) *specs.LinuxResources {
	res := &specs.LinuxResources{}
	if l.MemoryBytes > 0 {
		limit := l.MemoryBytes
		res.Memory = &specs.LinuxMemory{Limit: &limit}
		if fileExists(filepath.Join(m.root, "memory", "memory.memsw.limit_in_bytes")) {
			// memsw limits memory plus swap: equal to the memory limit,
			// it leaves no room for swap.
			swap := limit
			res.Memory.Swap = &swap
		}
	}
	if l.CPUShares > 0 || len(l.Cpus) > 0 {
		res.CPU = &specs.LinuxCPU{}
		if l.CPUShares > 0 {
			shares := min(max(2, l.CPUShares), 262144) // the kernel's range
			res.CPU.Shares = &shares
		}
		if len(l.Cpus) > 0 {
			res.CPU.Cpus = FormatCPUList(l.Cpus)
		}
	}
	if l.Pids > 0 {
		pids := l.Pids
		res.Pids = &specs.LinuxPids{Limit: &pids}
	}
	return res
}

func (m *Manager) createV1(name string, l Limits) (backend, error) {
	res := m.resourcesV1(l)
	if len(l.Cpus) > 0 && !slices.Contains(m.controllers, "cpuset") {
		return nil, errors.New("a cpuset needs the v1 cpuset hierarchy, which this host lacks")
	}
	cg, err := cgroup1.New(cgroup1.StaticPath("/"+name), res, cgroup1.WithHierarchy(m.hierarchyV1()))
	if err != nil {
		return nil, err
	}
	return &v1Group{root: m.root, name: name, controllers: m.controllers, cg: cg}, nil
}

func (m *Manager) loadV1(name string) (backend, error) {
	found := false
	for _, c := range m.controllers {
		if fileExists(filepath.Join(m.root, c, name)) {
			found = true
		}
	}
	if !found {
		return nil, ErrNotFound
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath("/"+name), cgroup1.WithHierarchy(m.hierarchyV1()))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &v1Group{root: m.root, name: name, controllers: m.controllers, cg: cg}, nil
}

func (g *v1Group) dirs() []hierarchyDir {
	var out []hierarchyDir
	for _, c := range g.controllers {
		out = append(out, hierarchyDir{controller: c, dir: filepath.Join(g.root, c, g.name)})
	}
	return out
}

// listController is the hierarchy whose cgroup.procs is read: the freezer,
// since Kill freezes it, or else memory.
func (g *v1Group) listController() string {
	for _, c := range []string{"freezer", "memory", "pids", "cpu"} {
		if slices.Contains(g.controllers, c) {
			return c
		}
	}
	return g.controllers[0]
}

func (g *v1Group) pids() ([]int, error) {
	procs, err := g.cg.Processes(cgroup1.Name(g.listController()), true)
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil, os.ErrNotExist
	}
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(procs))
	for _, p := range procs {
		out = append(out, p.Pid)
	}
	return out, nil
}

func (g *v1Group) stats() (Stats, error) {
	m, err := g.cg.Stat(cgroup1.IgnoreNotExist)
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return Stats{}, ErrNotFound
	}
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if m.CPU != nil && m.CPU.Usage != nil {
		s.CPUUser = time.Duration(m.CPU.Usage.User)
		s.CPUSystem = time.Duration(m.CPU.Usage.Kernel)
	}
	if m.Memory != nil && m.Memory.Usage != nil {
		s.MemoryBytes = clampInt64(m.Memory.Usage.Usage)
		s.MaxMemoryBytes = clampInt64(m.Memory.Usage.Max)
	}
	if m.MemoryOomControl != nil {
		s.OOMKills = m.MemoryOomControl.OomKill
	}
	return s, nil
}

func (g *v1Group) freeze(frozen bool) error {
	if !slices.Contains(g.controllers, "freezer") {
		return nil
	}
	want := "THAWED"
	if frozen {
		want = "FROZEN"
	}
	file := filepath.Join(g.root, "freezer", g.name, "freezer.state")
	return writeAndWait(file, want, func() (bool, error) {
		b, err := os.ReadFile(file)
		if err != nil {
			return false, err
		}
		return string(trimSpace(b)) == want, nil
	})
}

func (g *v1Group) killAll() (bool, error) { return false, nil }

func (g *v1Group) remove() error {
	err := g.cg.Delete()
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return nil
	}
	return err
}

// writeAndWait writes value to file and polls done until it reports true,
// for at most a second: a freeze that does not finish in that time is left
// to the caller's next attempt.
func writeAndWait(file, value string, done func() (bool, error)) error {
	if err := os.WriteFile(file, []byte(value), 0); err != nil {
		return err
	}
	for range 100 {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s did not become %s within a second", file, value)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

func clampInt64(v uint64) int64 {
	if v > 1<<62 {
		return 1 << 62
	}
	return int64(v)
}
