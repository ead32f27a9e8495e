package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of cpuacct.stat: clock ticks of 1/100 s on every
// Linux architecture caravan runs on.
const userHZ = 100

// v1Group is a group on a v1 host: one directory per hierarchy.
type v1Group struct {
	root        string
	name        string
	controllers []string
}

// limitFile is one file a limit is written to: a hierarchy's (controller,
// "" on v2) file below the group's directory.
type limitFile struct {
	controller, file, value string
}

// limitsV1 maps limits to the v1 files that enforce them, in the order
// they are written. The memory limit comes with an equal memory+swap limit
// where the host accounts for swap, which leaves no room for swap.
func (m *Manager) limitsV1(l Limits) []limitFile {
	var out []limitFile
	if l.MemoryBytes > 0 {
		v := strconv.FormatInt(l.MemoryBytes, 10)
		out = append(out, limitFile{"memory", "memory.limit_in_bytes", v})
		if fileExists(filepath.Join(m.root, "memory", "memory.memsw.limit_in_bytes")) {
			out = append(out, limitFile{"memory", "memory.memsw.limit_in_bytes", v})
		}
	}
	if l.CPUShares > 0 {
		shares := min(max(2, l.CPUShares), 262144) // the kernel's range
		out = append(out, limitFile{"cpu", "cpu.shares", strconv.FormatUint(shares, 10)})
	}
	if len(l.Cpus) > 0 {
		out = append(out, limitFile{"cpuset", "cpuset.cpus", FormatCPUList(l.Cpus)})
	}
	if l.Pids > 0 {
		out = append(out, limitFile{"pids", "pids.max", strconv.FormatInt(l.Pids, 10)})
	}
	return out
}

func (m *Manager) createV1(name string, l Limits) (backend, error) {
	if len(l.Cpus) > 0 && !slices.Contains(m.controllers, "cpuset") {
		return nil, errors.New("a cpuset needs the v1 cpuset hierarchy, which this host lacks")
	}
	// A group lives in the hierarchies its limits need, and in those that
	// measure and kill it: no cpuset without cores, no pids hierarchy
	// without a process limit. Each hierarchy is a directory to make, join
	// and remove for every task.
	var controllers []string
	for _, c := range m.controllers {
		if (c == "cpuset" && len(l.Cpus) == 0) || (c == "pids" && l.Pids == 0) {
			continue
		}
		controllers = append(controllers, c)
	}
	g := &v1Group{root: m.root, name: name, controllers: controllers}
	for _, c := range controllers {
		if err := mkdirV1(filepath.Join(m.root, c), name, c == "cpuset"); err != nil {
			return nil, err
		}
	}
	files := m.limitsV1(l)
	for i, f := range files {
		err := writeFile(filepath.Join(m.root, f.controller, name, f.file), []byte(f.value))
		if err != nil && f.file == "memory.limit_in_bytes" && i+1 < len(files) && files[i+1].file == "memory.memsw.limit_in_bytes" {
			// A limit above the current memory+swap limit: raise that first.
			if err = writeFile(filepath.Join(m.root, "memory", name, files[i+1].file), []byte(files[i+1].value)); err == nil {
				err = writeFile(filepath.Join(m.root, f.controller, name, f.file), []byte(f.value))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("set %s: %w", f.file, err)
		}
	}
	return g, nil
}

// mkdirV1 makes name and its parents below a hierarchy's root. A cpuset
// group gets its parent's cpus and memory nodes: it holds no process until
// they are set. That is checked for groups that exist already too, since
// another start may have just made a shared parent and not set them yet:
// a child copying the parent's empty cpus could not take a process (the
// kernel's "no space left on device").
func mkdirV1(hierarchy, name string, cpuset bool) error {
	dir := hierarchy
	for seg := range strings.SplitSeq(name, "/") {
		parent := dir
		dir = filepath.Join(dir, seg)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if cpuset {
			if err := inheritCpuset(parent, dir); err != nil {
				return err
			}
		}
	}
	return nil
}

// inheritCpuset gives a cpuset group without cpus or memory nodes its
// parent's.
func inheritCpuset(parent, dir string) error {
	for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
		cur, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if len(trimSpace(cur)) > 0 {
			continue
		}
		b, err := os.ReadFile(filepath.Join(parent, f))
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, f), trimSpace(b)); err != nil {
			return fmt.Errorf("set %s: %w", f, err)
		}
	}
	return nil
}

func (m *Manager) loadV1(name string) (backend, error) {
	var controllers []string
	for _, c := range m.controllers {
		if fileExists(filepath.Join(m.root, c, name)) {
			controllers = append(controllers, c)
		}
	}
	if len(controllers) == 0 {
		return nil, ErrNotFound
	}
	return &v1Group{root: m.root, name: name, controllers: controllers}, nil
}

func (g *v1Group) dirs() []hierarchyDir {
	out := make([]hierarchyDir, 0, len(g.controllers))
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
	return treePids(filepath.Join(g.root, g.listController(), g.name))
}

func (g *v1Group) stats() (Stats, error) {
	var s Stats
	read := func(controller, file string) ([]byte, bool, error) {
		if !slices.Contains(g.controllers, controller) {
			return nil, false, nil
		}
		b, err := os.ReadFile(filepath.Join(g.root, controller, g.name, file))
		if errors.Is(err, os.ErrNotExist) {
			if !fileExists(filepath.Join(g.root, controller, g.name)) {
				return nil, false, ErrNotFound
			}
			return nil, false, nil // a file this kernel lacks
		}
		return b, err == nil, err
	}
	if b, ok, err := read("cpuacct", "cpuacct.stat"); err != nil {
		return Stats{}, err
	} else if ok {
		s.CPUUser = ticks(keyedValue(b, "user"))
		s.CPUSystem = ticks(keyedValue(b, "system"))
	}
	for _, f := range []struct {
		file string
		dst  *int64
	}{{"memory.usage_in_bytes", &s.MemoryBytes}, {"memory.max_usage_in_bytes", &s.MaxMemoryBytes}} {
		if b, ok, err := read("memory", f.file); err != nil {
			return Stats{}, err
		} else if ok {
			*f.dst = clampInt64(parseUint(trimSpace(b)))
		}
	}
	if b, ok, err := read("memory", "memory.oom_control"); err != nil {
		return Stats{}, err
	} else if ok {
		s.OOMKills = keyedValue(b, "oom_kill")
	}
	return s, nil
}

func ticks(n uint64) time.Duration {
	return time.Duration(clampInt64(n/userHZ))*time.Second + time.Duration(n%userHZ)*(time.Second/userHZ)
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
	var errs []error
	for _, c := range g.controllers {
		if err := removeTree(filepath.Join(g.root, c, g.name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// treePids lists the processes in the group at dir and in its descendants.
func treePids(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for line := range strings.SplitSeq(string(b), "\n") {
		if pid, err := strconv.Atoi(line); err == nil {
			out = append(out, pid)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		sub, err := treePids(filepath.Join(dir, e.Name()))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		out = append(out, sub...)
	}
	return out, nil
}

// removeTree removes a group's directory and those of its descendants,
// deepest first (a cgroup directory holds only the kernel's files, which
// go with it). A directory that is gone already is fine.
func removeTree(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	err = syscall.Rmdir(dir)
	if err == nil || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return &os.PathError{Op: "rmdir", Path: dir, Err: err}
}

// writeAndWait writes value to file and polls done until it reports true,
// for at most a second: a freeze that does not finish in that time is left
// to the caller's next attempt.
func writeAndWait(file, value string, done func() (bool, error)) error {
	if err := writeFile(file, []byte(value)); err != nil {
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

func parseUint(b []byte) uint64 {
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}

// keyedValue returns the number after key in a flat keyed file such as
// cpuacct.stat ("user 12\nsystem 3\n"), or 0.
func keyedValue(b []byte, key string) uint64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			return parseUint([]byte(strings.TrimSpace(v)))
		}
	}
	return 0
}

func clampInt64(v uint64) int64 {
	if v > 1<<62 {
		return 1 << 62
	}
	return int64(v)
}
