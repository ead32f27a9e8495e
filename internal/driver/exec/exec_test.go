package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/testenv"
)

func TestOutputAndUser(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	cfg := h.taskConfig(&caravan.Task{
		Name:   "out",
		Config: caravan.TaskConfig{Command: "id -u; echo to-stderr >&2; exit 3"},
	})
	extra := filepath.Join(h.base, "user-out", "nested", "job.out")
	if err := os.MkdirAll(filepath.Dir(filepath.Dir(extra)), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(filepath.Dir(extra)), 0o777); err != nil {
		t.Fatal(err)
	}
	cfg.Logs.StdoutPath = extra
	h.start(d, cfg)
	res := h.wait(d, cfg.ID)
	if res.ExitCode != 3 || res.State() != caravan.TaskStateFailed || res.Err != "" {
		t.Errorf("result = %+v, want exit 3, failed", res)
	}
	if got := readLog(t, cfg, "stdout"); got != "65534\n" {
		t.Errorf("stdout log = %q, want nobody's uid", got)
	}
	if got := readLog(t, cfg, "stderr"); got != "to-stderr\n" {
		t.Errorf("stderr log = %q", got)
	}
	b, err := os.ReadFile(extra)
	if err != nil || string(b) != "65534\n" {
		t.Errorf("extra stdout file = %q, %v", b, err)
	}
	for _, p := range []string{extra, filepath.Dir(extra)} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st := info.Sys().(*syscall.Stat_t); st.Uid != 65534 {
			t.Errorf("%s is owned by uid %d, not the task user", p, st.Uid)
		}
	}
	if res.Stats == nil {
		t.Errorf("no final stats")
	}
}

func TestSuccessAndScript(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	tests := []struct {
		name   string
		config caravan.TaskConfig
		out    string
	}{
		{"program with args", caravan.TaskConfig{Command: "echo", Args: []string{"a b", "c"}}, "a b c\n"},
		{"shebang script", caravan.TaskConfig{Script: "#!/bin/sh -e\necho \"script $1\"\n", Args: []string{"x"}}, "script x\n"},
		{"script without shebang", caravan.TaskConfig{Script: "echo plain; pwd"}, "plain\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.taskConfig(&caravan.Task{Name: "s", Config: tt.config})
			h.start(d, cfg)
			res := h.wait(d, cfg.ID)
			if !res.Successful() || res.State() != caravan.TaskStateComplete {
				t.Fatalf("result = %+v, stderr %q", res, readLog(t, cfg, "stderr"))
			}
			if got := readLog(t, cfg, "stdout"); !strings.HasPrefix(got, tt.out) {
				t.Errorf("stdout = %q, want prefix %q", got, tt.out)
			}
		})
	}
}

func TestStartErrors(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	tests := []struct {
		name string
		task caravan.Task
		want error
	}{
		{"missing user", caravan.Task{User: "no-such-user-caravan", Config: caravan.TaskConfig{Command: "/bin/true"}}, ErrUnknownUser},
		{"root refused", caravan.Task{User: "root", Config: caravan.TaskConfig{Command: "/bin/true"}}, ErrRootRefused},
		{"uid 0 refused", caravan.Task{User: "0", Config: caravan.TaskConfig{Command: "/bin/true"}}, ErrRootRefused},
		{"missing program", caravan.Task{Config: caravan.TaskConfig{Command: "/nonexistent/prog"}}, ErrProgramNotFound},
		{"program not in PATH", caravan.Task{Config: caravan.TaskConfig{Command: "no-such-prog-caravan"}}, ErrProgramNotFound},
		{"missing program in a command line", caravan.Task{Config: caravan.TaskConfig{Command: "no-such-prog-caravan --flag"}}, ErrProgramNotFound},
		{"missing interpreter", caravan.Task{Config: caravan.TaskConfig{Script: "#!/no/such/shell\necho hi\n"}}, ErrProgramNotFound},
		{"not executable", caravan.Task{Config: caravan.TaskConfig{Command: "/etc/passwd"}}, ErrProgramNotFound},
		{"nothing to run", caravan.Task{}, ErrInvalidTask},
		{"missing work dir", caravan.Task{WorkDir: "/nonexistent/dir", Config: caravan.TaskConfig{Command: "/bin/true"}}, ErrInvalidTask},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := tt.task
			cfg := h.taskConfig(&task)
			_, err := d.Start(context.Background(), cfg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Start error = %v, want %v", err, tt.want)
			}
			if _, err := d.Wait(context.Background(), cfg.ID); !errors.Is(err, driver.ErrTaskNotFound) {
				t.Errorf("Wait after a failed start: %v", err)
			}
		})
	}
	if _, err := d.Start(context.Background(), nil); !errors.Is(err, ErrInvalidTask) {
		t.Errorf("Start(nil) = %v", err)
	}
}

func TestRootAllowed(t *testing.T) {
	h := newHarness(t)
	h.allowRoot = true
	d := h.newDriver()
	cfg := h.taskConfig(&caravan.Task{User: "root", Config: caravan.TaskConfig{Command: "id -u; id -G"}})
	h.start(d, cfg)
	if res := h.wait(d, cfg.ID); !res.Successful() {
		t.Fatalf("result = %+v", res)
	}
	// Root, with its supplementary groups cleared (only the primary 0).
	if got := readLog(t, cfg, "stdout"); got != "0\n0\n" {
		t.Errorf("stdout = %q", got)
	}
}

func TestOOM(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "tail /dev/zero"}})
	cfg.Memory = 32
	h.start(d, cfg)
	res := h.wait(d, cfg.ID)
	if !res.OOMKilled || res.State() != caravan.TaskStateOOM {
		t.Fatalf("result = %+v, want OOM killed", res)
	}
	if res.Stats == nil || res.Stats.MaxMemoryBytes < 16<<20 {
		t.Errorf("stats = %+v, want a peak near the 32 MB limit", res.Stats)
	}
}

func TestTimeLimit(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	const limit, kill = time.Second, 2 * time.Second
	tests := []struct {
		name    string
		command string
		signal  int
		within  time.Duration
	}{
		{"exits on SIGTERM", "sleep 60", int(syscall.SIGTERM), limit + time.Second},
		{"ignores SIGTERM", "trap '' TERM; sleep 60; echo survived", int(syscall.SIGKILL), limit + kill + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.taskConfig(&caravan.Task{
				Config:      caravan.TaskConfig{Command: tt.command},
				TimeLimit:   caravan.Duration(limit),
				KillTimeout: caravan.Duration(kill),
			})
			h.start(d, cfg)
			res := h.wait(d, cfg.ID)
			if !res.TimedOut || res.State() != caravan.TaskStateTimeout || res.Signal != tt.signal {
				t.Fatalf("result = %+v, want timed out by signal %d", res, tt.signal)
			}
			if took := res.FinishedAt.Sub(res.StartedAt); took < limit || took > tt.within {
				t.Errorf("task ran %v, want between %v and %v", took, limit, tt.within)
			}
			if strings.Contains(readLog(t, cfg, "stdout"), "survived") {
				t.Errorf("the task survived")
			}
		})
	}
}

func TestStopKillsTree(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{
		// A grandchild that double-forks away and starts its own session.
		Command: `(setsid sh -c 'echo $$ > local/daemon.pid; exec sleep 300' &); exec sleep 300`,
	}})
	_, st := h.start(d, cfg)
	daemon := readPidFile(t, filepath.Join(cfg.TaskDir, "local", "daemon.pid"))
	if !alive(st.TaskPid) || !alive(daemon) {
		t.Fatalf("task %d or daemon %d not running", st.TaskPid, daemon)
	}
	if s, err := d.Stats(context.Background(), cfg.ID); err != nil || s.MemoryBytes <= 0 {
		t.Errorf("Stats = %+v, %v", s, err)
	}
	if err := d.Stop(context.Background(), cfg.ID, 2*time.Second, 0); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	res := h.wait(d, cfg.ID)
	if !res.Killed || res.State() != caravan.TaskStateCancelled {
		t.Fatalf("result = %+v, want killed", res)
	}
	for _, pid := range []int{st.TaskPid, daemon} {
		if alive(pid) {
			t.Errorf("pid %d survived Stop", pid)
		}
	}
	if _, err := d.cgroups.Load(st.Cgroup.Name); !errors.Is(err, cgroup.ErrNotFound) {
		t.Errorf("cgroup left after the task: %v", err)
	}
	if err := d.Destroy(context.Background(), cfg.ID); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	if _, err := os.Stat(st.Dir); !os.IsNotExist(err) {
		t.Errorf("state dir left after Destroy: %v", err)
	}
	if err := d.Destroy(context.Background(), cfg.ID); !errors.Is(err, driver.ErrTaskNotFound) {
		t.Errorf("second Destroy: %v", err)
	}
}

func TestCpusetAndMemoryLimit(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	cpus, err := cgroup.ParseCPUList(readFile(t, "/sys/devices/system/cpu/online"))
	if err != nil || len(cpus) == 0 {
		t.Fatalf("online cpus: %v %v", cpus, err)
	}
	core := cpus[len(cpus)-1]
	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{
		Command: "grep Cpus_allowed_list /proc/self/status; exec sleep 300",
	}})
	cfg.Cores = []int{core}
	cfg.Memory = 48
	_, st := h.start(d, cfg)
	want := "Cpus_allowed_list:\t" + strconv.Itoa(core) + "\n"
	waitFor(t, "cpus in the log", func() bool { return readLog(t, cfg, "stdout") != "" })
	if got := readLog(t, cfg, "stdout"); got != want {
		t.Errorf("task sees %q, want %q", got, want)
	}
	m := d.cgroups
	file := filepath.Join(m.Root(), st.Cgroup.Name, "memory.max")
	if m.Version() == cgroup.V1 {
		file = filepath.Join(m.Root(), "memory", st.Cgroup.Name, "memory.limit_in_bytes")
	}
	if got := readFile(t, file); got != strconv.Itoa(48<<20) {
		t.Errorf("%s = %q, want 48 MB", file, got)
	}
	if err := d.Destroy(context.Background(), cfg.ID); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	if alive(st.TaskPid) {
		t.Errorf("task survived Destroy")
	}
	if _, err := m.Load(st.Cgroup.Name); !errors.Is(err, cgroup.ErrNotFound) {
		t.Errorf("cgroup left after Destroy: %v", err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestStartFollowsNoSymlink(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	target := filepath.Join(h.base, "precious")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}

	// A symlink where the script goes is replaced, not followed.
	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Script: "echo ran"}})
	if err := os.MkdirAll(filepath.Join(cfg.TaskDir, "local"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(cfg.TaskDir, "local", scriptName)); err != nil {
		t.Fatal(err)
	}
	h.start(d, cfg)
	if res := h.wait(d, cfg.ID); !res.Successful() {
		t.Errorf("result = %+v", res)
	}
	if got := readFile(t, target); got != "keep" {
		t.Errorf("the symlink's target was written: %q", got)
	}

	// A task directory replaced by a symlink is refused.
	cfg = h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "/bin/true"}})
	if err := os.MkdirAll(cfg.TaskDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(h.base, filepath.Join(cfg.TaskDir, "local")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Start(context.Background(), cfg); !errors.Is(err, ErrInvalidTask) {
		t.Errorf("Start with a symlinked local/ = %v", err)
	}
	if info, err := os.Stat(h.base); err != nil || info.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("the symlink's target changed owner")
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	tests := []struct {
		name   string
		change func(*driver.TaskConfig)
	}{
		{"task name with a slash", func(c *driver.TaskConfig) { c.Task.Name = "../x" }},
		{"no log dir", func(c *driver.TaskConfig) { c.Logs.Dir = "" }},
		{"relative task dir", func(c *driver.TaskConfig) { c.TaskDir = "rel" }},
		{"no id", func(c *driver.TaskConfig) { c.ID = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "/bin/true"}})
			tt.change(cfg)
			if _, err := d.Start(context.Background(), cfg); !errors.Is(err, ErrInvalidTask) {
				t.Errorf("Start = %v, want ErrInvalidTask", err)
			}
		})
	}
}

// TestUnifiedHierarchy runs the driver on cgroup v2: the host's own on a v2
// host, or a hybrid host's spare unified hierarchy (which has no
// controllers, so the task gets no limits there).
func TestUnifiedHierarchy(t *testing.T) {
	h := newHarness(t)
	root := testenv.UnifiedHierarchy(t)
	m, err := cgroup.NewManager(cgroup.V2, root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(filepath.Join(root, testCgroupParent, supervisorGroup))
		_ = os.Remove(filepath.Join(root, testCgroupParent))
	})
	h.cgroups = m
	d := h.newDriver()
	if got := d.Fingerprint(context.Background()).Attributes["driver.exec.cgroup_version"]; got != "v2" {
		t.Errorf("fingerprint cgroup version = %q", got)
	}

	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{
		Command: `(setsid sh -c 'echo $$ > local/daemon.pid; exec sleep 300' &); cat /proc/self/cgroup; exec sleep 300`,
	}})
	cfg.CPU, cfg.Memory = 0, 0
	_, st := h.start(d, cfg)
	daemon := readPidFile(t, filepath.Join(cfg.TaskDir, "local", "daemon.pid"))
	waitFor(t, "output", func() bool { return readLog(t, cfg, "stdout") != "" })
	if got := readLog(t, cfg, "stdout"); !strings.Contains(got, "0::/"+st.Cgroup.Name+"\n") {
		t.Errorf("task's cgroups:\n%s\nwant 0::/%s", got, st.Cgroup.Name)
	}
	// The supervisor runs outside the agent's group, in its own.
	if got := readFile(t, "/proc/"+strconv.Itoa(st.SupervisorPid)+"/cgroup"); !strings.Contains(got, "0::/"+testCgroupParent+"/"+supervisorGroup+"\n") && !strings.HasSuffix(got, "0::/"+testCgroupParent+"/"+supervisorGroup) {
		t.Errorf("supervisor's cgroups:\n%s", got)
	}
	if err := d.Stop(context.Background(), cfg.ID, time.Second, 0); err != nil {
		t.Fatal(err)
	}
	if res := h.wait(d, cfg.ID); !res.Killed {
		t.Errorf("result = %+v", res)
	}
	for _, pid := range []int{st.TaskPid, daemon} {
		if alive(pid) {
			t.Errorf("pid %d survived", pid)
		}
	}
	if _, err := m.Load(st.Cgroup.Name); !errors.Is(err, cgroup.ErrNotFound) {
		t.Errorf("cgroup left: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	info := d.Fingerprint(context.Background())
	if !info.Detected || !info.Healthy {
		t.Fatalf("fingerprint = %+v", info)
	}
	if v := info.Attributes["driver.exec.cgroup_version"]; v != d.cgroups.Version().String() {
		t.Errorf("cgroup version attribute = %q", v)
	}
	broken, err := New(Config{StateDir: h.stateDir, SupervisorCommand: []string{"/nonexistent/caravan", "supervise"}})
	if err != nil {
		t.Fatal(err)
	}
	if info := broken.Fingerprint(context.Background()); info.Healthy {
		t.Errorf("a missing supervisor program is healthy: %+v", info)
	}
}

// TestCaravanBinary runs a task through the real `caravan supervise`, as an
// agent does.
func TestCaravanBinary(t *testing.T) {
	h := newHarness(t)
	h.supervisor = []string{testenv.CaravanBinary(t), "supervise"}
	d := h.newDriver()
	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "echo", Args: []string{"hello"}}})
	h.start(d, cfg)
	if res := h.wait(d, cfg.ID); !res.Successful() {
		t.Fatalf("result = %+v", res)
	}
	if got := readLog(t, cfg, "stdout"); got != "hello\n" {
		t.Errorf("stdout = %q", got)
	}
}
