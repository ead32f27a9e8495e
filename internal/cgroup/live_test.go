package cgroup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan/internal/testenv"
	"github.com/google/go-cmp/cmp"
)

// testParent holds the groups tests create.
const testParent = "caravan-test"

// liveGroup creates a group for the test on m and removes it (and anything
// left in it) when the test ends.
func liveGroup(t *testing.T, m *Manager, l Limits) *Group {
	t.Helper()
	name := testParent + "/" + Segment(fmt.Sprintf("%s-%d", t.Name(), os.Getpid()))
	g, err := m.Create(name, l)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := g.Kill(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := g.Delete(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		// The shared parent goes when the last test's group is gone.
		if m.Version() == V1 {
			for _, c := range m.controllers {
				_ = os.Remove(filepath.Join(m.root, c, testParent))
			}
		} else {
			_ = os.Remove(filepath.Join(m.root, testParent))
		}
	})
	return g
}

// startIn starts argv in g and reaps it when the test ends.
func startIn(t *testing.T, g *Group, argv ...string) int {
	t.Helper()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{
		Env:   []string{"PATH=/usr/bin:/bin"},
		Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	pid, err := g.ForkExec(argv[0], argv, attr)
	if err != nil {
		t.Fatalf("ForkExec: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_, _ = syscall.Wait4(pid, nil, 0, nil)
	})
	return pid
}

// waitPids polls g until it holds n processes, for at most 5 seconds.
func waitPids(t *testing.T, g *Group, n int) []int {
	t.Helper()
	var pids []int
	for range 500 {
		var err error
		pids, err = g.Pids()
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == n {
			return pids
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("group holds %v, want %d processes", pids, n)
	return nil
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := parseProcCgroup(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHostGroup runs a process tree under limits in the host's own cgroup
// version and kills it, double-forked daemon included.
func TestHostGroup(t *testing.T) {
	testenv.RequireCgroups(t)
	m, err := NewManager(0, "")
	if err != nil {
		t.Fatal(err)
	}
	own := procCgroups(t, os.Getpid())
	core := 0
	if n, _ := ParseCPUList(readTrimOr(filepath.Join(DefaultRoot, "cpuset", "cpuset.effective_cpus"), "0")); len(n) > 1 {
		core = n[len(n)-1]
	}
	g := liveGroup(t, m, Limits{MemoryBytes: 32 << 20, CPUShares: 512, Cpus: []int{core}, Pids: 64})

	// Limits are in the files.
	var files map[string]string
	if m.Version() == V1 {
		files = map[string]string{
			"memory/memory.limit_in_bytes": "33554432",
			"cpu/cpu.shares":               "512",
			"cpuset/cpuset.cpus":           strconv.Itoa(core),
			"pids/pids.max":                "64",
		}
		if fileExists(filepath.Join(m.root, "memory", "memory.memsw.limit_in_bytes")) {
			files["memory/memory.memsw.limit_in_bytes"] = "33554432"
		}
	} else {
		files = map[string]string{
			"memory.max":  "33554432",
			"cpu.weight":  strconv.FormatUint(CPUWeight(512), 10),
			"cpuset.cpus": strconv.Itoa(core),
			"pids.max":    "64",
		}
	}
	for file, want := range files {
		dir, base := filepath.Split(file)
		path := filepath.Join(m.root, dir, g.Name(), base)
		if got := readTrim(t, path); got != want {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
	}

	pid := startIn(t, g, "/bin/sh", "-c", "setsid sleep 300 & exec sleep 301")
	pids := waitPids(t, g, 2)
	if !slices.Contains(pids, pid) {
		t.Errorf("group holds %v, not the started pid %d", pids, pid)
	}
	// The child is in the group in every hierarchy; this process is home.
	child := procCgroups(t, pid)
	for _, d := range g.b.dirs() {
		if got := child[d.controller]; got != "/"+g.Name() {
			t.Errorf("child's %q cgroup = %q, want /%s", d.controller, got, g.Name())
		}
	}
	if diff := cmp.Diff(own, procCgroups(t, os.Getpid())); diff != "" {
		t.Errorf("this process moved (-before +after):\n%s", diff)
	}
	// No thread of this process stayed in the group (on v1 one thread
	// moves in to fork the child).
	threads, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range threads {
		b, err := os.ReadFile("/proc/self/task/" + th.Name() + "/cgroup")
		if err == nil && strings.Contains(string(b), g.Name()) {
			t.Errorf("thread %s is still in the group:\n%s", th.Name(), b)
		}
	}
	status := readTrim(t, "/proc/"+strconv.Itoa(pid)+"/status")
	if !strings.Contains(status, "Cpus_allowed_list:\t"+strconv.Itoa(core)+"\n") {
		t.Errorf("child's cpus are not {%d}:\n%s", core, status)
	}
	if _, err := g.Stats(); err != nil {
		t.Errorf("Stats: %v", err)
	}

	loaded, err := m.Load(g.Name())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := loaded.Kill(ctx); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if left, _ := g.Pids(); len(left) != 0 {
		t.Fatalf("after Kill the group holds %v", left)
	}
	_, _ = syscall.Wait4(pid, nil, 0, nil)
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d survived Kill", p)
		}
	}
	if err := g.Delete(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := m.Load(g.Name()); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load after Delete: %v", err)
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// alive reports whether pid runs; a zombie waiting for its reaper does not.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

func readTrimOr(path, def string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return def
	}
	return strings.TrimSpace(string(b))
}

// TestUnifiedGroup exercises the v2 code on a hybrid host's spare unified
// hierarchy (no controllers there, but cgroup.procs, clone3 into a cgroup
// and cgroup.kill all work).
func TestUnifiedGroup(t *testing.T) {
	root := testenv.UnifiedHierarchy(t)
	m, err := NewManager(V2, root)
	if err != nil {
		t.Fatal(err)
	}
	for _, joined := range []bool{false, true} {
		t.Run(fmt.Sprintf("joined=%v", joined), func(t *testing.T) {
			g := liveGroup(t, m, Limits{})
			var pid int
			if joined {
				pid = startJoined(t, g)
			} else {
				pid = startIn(t, g, "/bin/sh", "-c", "setsid sleep 300 & exec sleep 301")
			}
			waitPids(t, g, 2)
			if got := procCgroups(t, pid)[""]; got != "/"+g.Name() {
				t.Errorf("child's cgroup = %q", got)
			}
			if got := procCgroups(t, os.Getpid())[""]; strings.Contains(got, testParent) {
				t.Errorf("this process stayed in %q", got)
			}
			if _, err := g.Stats(); err != nil {
				t.Errorf("Stats: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := g.Kill(ctx); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			_, _ = syscall.Wait4(pid, nil, 0, nil)
			if err := g.Delete(); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		})
	}
}

func startJoined(t *testing.T, g *Group) int {
	t.Helper()
	g.m.startMu.Lock()
	defer g.m.startMu.Unlock()
	argv := []string{"/bin/sh", "-c", "setsid sleep 300 & exec sleep 301"}
	pid, err := g.forkExecJoined(argv[0], argv, &syscall.ProcAttr{Sys: &syscall.SysProcAttr{Setsid: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		_, _ = syscall.Wait4(pid, nil, 0, nil)
	})
	return pid
}
