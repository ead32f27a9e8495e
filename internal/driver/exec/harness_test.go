package exec

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// testCgroupParent keeps test groups apart from a real agent's.
const testCgroupParent = "caravan-test-exec"

// harness runs tasks for one test in a directory every user may enter.
type harness struct {
	t        testing.TB
	base     string
	stateDir string
	// supervisor overrides the supervisor command (the real binary).
	supervisor []string
	allowRoot  bool
	// perSupervisor is the drivers' TasksPerSupervisor.
	perSupervisor int
	cgroups       *cgroup.Manager
	seq           atomic.Int64
	// current is the driver Cleanup destroys tasks with.
	current atomic.Pointer[Driver]
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	testenv.RequireCgroups(t)
	base, err := os.MkdirTemp("", "caravan-exec-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, base: base, stateDir: filepath.Join(base, "state")}
	t.Cleanup(func() {
		os.RemoveAll(base)
		removeTestParent()
	})
	return h
}

// removeTestParent removes the tests' cgroup parent once it is empty.
func removeTestParent() {
	m, err := cgroup.NewManager(0, "")
	if err != nil {
		return
	}
	if m.Version() == cgroup.V2 {
		_ = os.Remove(filepath.Join(m.Root(), testCgroupParent, supervisorGroup))
		_ = os.Remove(filepath.Join(m.Root(), testCgroupParent))
		return
	}
	for _, c := range m.Controllers() {
		_ = os.Remove(filepath.Join(m.Root(), c, testCgroupParent))
	}
}

// newDriver makes a driver, as a (re)started agent would.
func (h *harness) newDriver() *Driver {
	h.t.Helper()
	sup := h.supervisor
	var env []string
	if sup == nil {
		self, err := os.Executable()
		if err != nil {
			h.t.Fatal(err)
		}
		sup = []string{self, "supervise"}
		env = []string{superviseEnv + "=1"}
	}
	d, err := New(Config{
		SupervisorCommand:  sup,
		SupervisorEnv:      env,
		StateDir:           h.stateDir,
		AllowRoot:          h.allowRoot,
		CgroupParent:       testCgroupParent,
		Cgroups:            h.cgroups,
		TasksPerSupervisor: h.perSupervisor,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.current.Store(d)
	h.t.Cleanup(func() { d.Close() })
	return d
}

// taskConfig returns a config for a task in a fresh allocation.
func (h *harness) taskConfig(task *caravan.Task) *driver.TaskConfig {
	n := h.seq.Add(1)
	alloc := fmt.Sprintf("alloc%d", n)
	allocDir := filepath.Join(h.base, alloc)
	if task.Name == "" {
		task.Name = "t"
	}
	if task.KillTimeout == 0 {
		task.KillTimeout = caravan.Duration(2 * time.Second)
	}
	return &driver.TaskConfig{
		ID:          alloc + "/" + task.Name,
		AllocID:     alloc,
		JobID:       "job",
		TaskGroup:   "g",
		Task:        task,
		Env:         map[string]string{"PATH": "/usr/bin:/bin", "CARAVAN_TEST": "1"},
		AllocDir:    allocDir,
		TaskDir:     filepath.Join(allocDir, task.Name),
		CPU:         100,
		Memory:      64,
		KillTimeout: task.KillTimeout.D(),
		TimeLimit:   task.TimeLimit.D(),
		Logs:        driver.LogConfig{Dir: filepath.Join(allocDir, "alloc", "logs")},
	}
}

// start starts cfg on d and destroys it when the test ends.
func (h *harness) start(d *Driver, cfg *driver.TaskConfig) (*driver.Handle, handleState) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	handle, err := d.Start(ctx, cfg)
	if err != nil {
		h.t.Fatalf("Start: %v", err)
	}
	var st handleState
	if err := json.Unmarshal(handle.State, &st); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if d := h.current.Load(); d != nil {
			_ = d.Destroy(ctx, cfg.ID)
		}
		// Supervisors whose driver was closed are still our children.
		_, _ = syscall.Wait4(st.SupervisorPid, nil, syscall.WNOHANG, nil)
	})
	return handle, st
}

// wait waits at most a minute for the task's result.
func (h *harness) wait(d *Driver, id string) *driver.ExitResult {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := d.Wait(ctx, id)
	if err != nil {
		h.t.Fatalf("Wait: %v", err)
	}
	return res
}

// readLog returns a task's whole rotated stream ("stdout" or "stderr").
func readLog(t *testing.T, cfg *driver.TaskConfig, stream string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cfg.Logs.Dir, cfg.Task.Name+"."+stream+".0"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond every 20ms for at most 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	st, err := readProcStat(pid)
	return err == nil && st.state != 'Z' && st.state != 'X'
}

// readPidFile reads a pid a task wrote.
func readPidFile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	waitFor(t, path, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		_, err = fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &pid)
		return err == nil && pid > 0
	})
	return pid
}
