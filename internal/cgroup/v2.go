package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// v2Group is a leaf of the unified hierarchy.
type v2Group struct {
	dir string
}

// limitsV2 maps limits to the v2 files that enforce them. Swap is turned
// off with the memory limit where the host accounts for it (memory.swap.max
// exists only then; the caller skips it when missing).
func limitsV2(l Limits) []limitFile {
	var out []limitFile
	if l.MemoryBytes > 0 {
		out = append(out, limitFile{"memory", "memory.max", strconv.FormatInt(l.MemoryBytes, 10)},
			limitFile{"memory", "memory.swap.max", "0"})
	}
	if l.CPUShares > 0 {
		out = append(out, limitFile{"cpu", "cpu.weight", strconv.FormatUint(CPUWeight(l.CPUShares), 10)})
	}
	if len(l.Cpus) > 0 {
		out = append(out, limitFile{"cpuset", "cpuset.cpus", FormatCPUList(l.Cpus)})
	}
	if l.Pids > 0 {
		out = append(out, limitFile{"pids", "pids.max", strconv.FormatInt(l.Pids, 10)})
	}
	return out
}

// controllersV2 are the controllers the limits need enabled in every
// ancestor's cgroup.subtree_control, sorted.
func controllersV2(l Limits) []string {
	var out []string
	for _, f := range limitsV2(l) {
		if !slices.Contains(out, f.controller) {
			out = append(out, f.controller)
		}
	}
	slices.Sort(out)
	return out
}

// CPUWeight maps v1 cpu.shares to v2 cpu.weight (1 to 10000, with the
// defaults 1024 and 100 matching), the mapping runc and crun use.
func CPUWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	if shares <= 2 {
		return 1
	}
	if shares >= 262144 {
		return 10000
	}
	// The quadratic through (2, 1), (1024, 100) and (262144, 10000).
	l := math.Log2(float64(shares))
	exp := (l*l+125*l)/612.0 - 7.0/34.0
	return uint64(math.Ceil(math.Pow(10, exp)))
}

func (m *Manager) createV2(name string, l Limits) (backend, error) {
	enable := controllersV2(l)
	dir := m.root
	for seg := range strings.SplitSeq(name, "/") {
		if len(enable) > 0 {
			if err := enableControllers(dir, enable); err != nil {
				return nil, err
			}
		}
		dir = filepath.Join(dir, seg)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	for _, f := range limitsV2(l) {
		path := filepath.Join(dir, f.file)
		if f.file == "memory.swap.max" && !fileExists(path) {
			continue
		}
		if err := writeFile(path, []byte(f.value)); err != nil {
			return nil, fmt.Errorf("set %s: %w", f.file, err)
		}
	}
	return &v2Group{dir: dir}, nil
}

// enableControllers enables controllers for the children of the group at
// dir, those already enabled left alone.
func enableControllers(dir string, controllers []string) error {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	on := strings.Fields(string(b))
	var add []string
	for _, c := range controllers {
		if !slices.Contains(on, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(add, " "))); err != nil {
		return fmt.Errorf("enable %s in %s: %w", strings.Join(add, " "), dir, err)
	}
	return nil
}

func (m *Manager) loadV2(name string) (backend, error) {
	dir := filepath.Join(m.root, name)
	if !fileExists(filepath.Join(dir, "cgroup.procs")) {
		return nil, ErrNotFound
	}
	return &v2Group{dir: dir}, nil
}

func (g *v2Group) dirs() []hierarchyDir { return []hierarchyDir{{dir: g.dir}} }

func (g *v2Group) pids() ([]int, error) { return treePids(g.dir) }

func (g *v2Group) stats() (Stats, error) {
	var s Stats
	read := func(file string) ([]byte, bool, error) {
		b, err := os.ReadFile(filepath.Join(g.dir, file))
		if errors.Is(err, os.ErrNotExist) {
			if !fileExists(g.dir) {
				return nil, false, ErrNotFound
			}
			return nil, false, nil // a controller not enabled, or a newer file
		}
		return b, err == nil, err
	}
	if b, ok, err := read("cpu.stat"); err != nil {
		return Stats{}, err
	} else if ok {
		s.CPUUser = time.Duration(clampInt64(keyedValue(b, "user_usec"))) * time.Microsecond
		s.CPUSystem = time.Duration(clampInt64(keyedValue(b, "system_usec"))) * time.Microsecond
	}
	for _, f := range []struct {
		file string
		dst  *int64
	}{{"memory.current", &s.MemoryBytes}, {"memory.peak", &s.MaxMemoryBytes}} {
		if b, ok, err := read(f.file); err != nil {
			return Stats{}, err
		} else if ok {
			*f.dst = clampInt64(parseUint(trimSpace(b)))
		}
	}
	if b, ok, err := read("memory.events"); err != nil {
		return Stats{}, err
	} else if ok {
		s.OOMKills = keyedValue(b, "oom_kill")
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
	return true, writeFile(file, []byte("1"))
}

func (g *v2Group) remove() error { return removeTree(g.dir) }

// eventValue returns the value of key in a flat keyed file such as
// cgroup.events ("populated 1\nfrozen 0\n"), or "".
func eventValue(b []byte, key string) string {
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
