package cgroup

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
)

// v2Group is a leaf of the unified hierarchy.
type v2Group struct {
	dir string
	mgr *cgroup2.Manager
}

// resourcesV2 maps limits to containerd's v2 resources. Enabling a
// controller in the ancestors' cgroup.subtree_control follows from which
// fields are set.
func resourcesV2(l Limits) *cgroup2.Resources {
	res := &cgroup2.Resources{}
	if l.MemoryBytes > 0 {
		limit := l.MemoryBytes
		res.Memory = &cgroup2.Memory{Max: &limit}
	}
	if l.CPUShares > 0 || len(l.Cpus) > 0 {
		res.CPU = &cgroup2.CPU{}
		if l.CPUShares > 0 {
			w := CPUWeight(l.CPUShares)
			res.CPU.Weight = &w
		}
		if len(l.Cpus) > 0 {
			res.CPU.Cpus = FormatCPUList(l.Cpus)
		}
	}
	if l.Pids > 0 {
		res.Pids = &cgroup2.Pids{Max: l.Pids}
	}
	return res
}

// CPUWeight maps v1 cpu.shares to v2 cpu.weight (1 to 10000, with the
// defaults 1024 and 100 matching), the mapping runc and crun use.
func CPUWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	return cgroup2.ConvertCPUSharesToCgroupV2Value(shares)
}

func (m *Manager) createV2(name string, l Limits) (backend, error) {
	mgr, err := cgroup2.NewManager(m.root, "/"+name, resourcesV2(l))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(m.root, name)
	if l.MemoryBytes > 0 {
		// Swap off where the host accounts for it.
		if swap := filepath.Join(dir, "memory.swap.max"); fileExists(swap) {
			if err := os.WriteFile(swap, []byte("0"), 0); err != nil {
				return nil, err
			}
		}
	}
	return &v2Group{dir: dir, mgr: mgr}, nil
}

func (m *Manager) loadV2(name string) (backend, error) {
	dir := filepath.Join(m.root, name)
	if !fileExists(filepath.Join(dir, "cgroup.procs")) {
		return nil, ErrNotFound
	}
	mgr, err := cgroup2.Load("/"+name, cgroup2.WithMountpoint(m.root))
	if err != nil {
		return nil, err
	}
	return &v2Group{dir: dir, mgr: mgr}, nil
}

func (g *v2Group) dirs() []hierarchyDir { return []hierarchyDir{{dir: g.dir}} }

func (g *v2Group) pids() ([]int, error) {
	procs, err := g.mgr.Procs(true)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(procs))
	for _, p := range procs {
		out = append(out, int(p))
	}
	return out, nil
}

func (g *v2Group) stats() (Stats, error) {
	m, err := g.mgr.StatFiltered(cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if m.CPU != nil {
		s.CPUUser = time.Duration(m.CPU.UserUsec) * time.Microsecond
		s.CPUSystem = time.Duration(m.CPU.SystemUsec) * time.Microsecond
	}
	if m.Memory != nil {
		s.MemoryBytes = clampInt64(m.Memory.Usage)
		s.MaxMemoryBytes = clampInt64(m.Memory.MaxUsage)
	}
	if m.MemoryEvents != nil {
		s.OOMKills = m.MemoryEvents.OomKill
	}
	return s, nil
}

func (g *v2Group) freeze(frozen bool) error {
	file := filepath.Join(g.dir, "cgroup.freeze")
	if !fileExists(file) {
		return nil // before Linux 5.2
	}
	want, value := "0", "0"
	if frozen {
		want, value = "1", "1"
	}
	return writeAndWait(file, value, func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.events"))
		if err != nil {
			return false, err
		}
		return eventValue(b, "frozen") == want, nil
	})
}

func (g *v2Group) killAll() (bool, error) {
	file := filepath.Join(g.dir, "cgroup.kill")
	if !fileExists(file) {
		return false, nil // before Linux 5.14
	}
	return true, os.WriteFile(file, []byte("1"), 0)
}

func (g *v2Group) remove() error {
	if !fileExists(g.dir) {
		return nil
	}
	return g.mgr.Delete()
}

// eventValue returns the value of key in a flat keyed file such as
// cgroup.events ("populated 1\nfrozen 0\n"), or "".
func eventValue(b []byte, key string) string {
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), " ")
		if ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
