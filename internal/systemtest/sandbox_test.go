package systemtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/testcluster"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// Bounds of the waits on processes.
const (
	// exitWait bounds the wait for a process we killed with SIGKILL.
	exitWait = 10 * time.Second
	// stopWait bounds a graceful stop (SIGTERM) before SIGKILL.
	stopWait = 30 * time.Second
	// startWait bounds the wait for a process to serve.
	startWait = 30 * time.Second
)

// sandbox is one test's world: a base directory open to others (exec
// tasks run as nobody and must reach their folders below it), the caravan
// processes the test started, and the cgroup parents its agents use.
// Everything is removed when the test ends, in this order: processes,
// what they left running (supervisors, tasks), cgroups, files.
type sandbox struct {
	t    *testing.T
	bin  string
	base string
	http *http.Client

	mu      sync.Mutex
	seq     int
	procs   []*proc
	parents []string
}

// newSandbox makes a sandbox for t. It first arranges the goroutine leak
// check, so that it runs after every other cleanup.
func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	checkGoroutines(t)
	testenv.RequireLinux(t)
	bin := testenv.CaravanBinary(t)
	base, err := os.MkdirTemp("", "caravan-systest-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(base, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
	}
	s := &sandbox{t: t, bin: bin, base: base, http: &http.Client{Transport: tr}}
	t.Cleanup(s.cleanup)
	return s
}

// dir makes a folder below the base, open to others.
func (s *sandbox) dir(name string) string {
	s.t.Helper()
	d := filepath.Join(s.base, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		s.t.Fatal(err)
	}
	return d
}

// file writes a file below the base and returns its path.
func (s *sandbox) file(name, content string) string {
	s.t.Helper()
	p := filepath.Join(s.base, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// cgroupParent names a cgroup parent for one agent of this test, removed
// (with everything below it) when the test ends.
func (s *sandbox) cgroupParent(name string) string {
	p := "caravan-systest-" + filepath.Base(s.base)[len("caravan-systest-"):] + "-" + name
	s.mu.Lock()
	s.parents = append(s.parents, p)
	s.mu.Unlock()
	return p
}

// client returns an API client for the addresses, on the sandbox's HTTP
// client (whose idle connections are closed at the end).
func (s *sandbox) client(addrs ...string) *api.Client {
	s.t.Helper()
	c, err := api.New(api.Config{Addresses: slices.Clone(addrs), HTTPClient: s.http})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// proc is one caravan process.
type proc struct {
	name    string
	args    []string
	logPath string
	cmd     *exec.Cmd
	started time.Time
	done    chan struct{}

	mu      sync.Mutex
	stopped bool // we killed or stopped it
	waitErr error
}

// start runs the caravan binary with args, its output in a log file, in
// its own process group.
func (s *sandbox) start(name string, args ...string) *proc {
	s.t.Helper()
	s.mu.Lock()
	s.seq++
	logPath := filepath.Join(s.base, "logs", fmt.Sprintf("%02d-%s.log", s.seq, name))
	s.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.base
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = filterEnv(os.Environ(), "CARAVAN_ADDR")
	// Pdeathsig ends the child when this test process dies (a timeout
	// panic) before its cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, args: args, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	p.started = time.Now()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start caravan %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p
}

func filterEnv(env []string, drop ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(drop, k) {
			out = append(out, kv)
		}
	}
	return out
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// running reports whether the process has not ended.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 sends SIGKILL to the process alone (not its group: what it
// started in other sessions goes on), as `kill -9 PID` does, and waits
// for it to end.
func (p *proc) kill9(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	_ = syscall.Kill(p.Pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(exitWait):
		t.Fatalf("%s (pid %d) still runs %v after SIGKILL", p.name, p.Pid(), exitWait)
	}
}

// terminate stops the process with SIGTERM, and SIGKILL after timeout. It
// reports whether SIGTERM was enough and how long it took.
func (p *proc) terminate(timeout time.Duration) (bool, time.Duration) {
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	start := time.Now()
	if !p.running() {
		return true, 0
	}
	_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return true, time.Since(start)
	case <-time.After(timeout):
	}
	_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(exitWait):
	}
	return false, time.Since(start)
}

// logTail returns the end of the process's output.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// cleanup ends what the test left: processes (by pid, and their groups),
// supervisors and tasks their agents started, cgroups, files.
func (s *sandbox) cleanup() {
	t := s.t
	start := time.Now()
	defer func() {
		if took := time.Since(start); took > 2*time.Second {
			t.Logf("cleanup took %v", took.Round(time.Millisecond))
		}
	}()
	s.mu.Lock()
	procs := slices.Clone(s.procs)
	parents := slices.Clone(s.parents)
	s.mu.Unlock()
	for _, p := range procs {
		p.mu.Lock()
		stopped, err := p.stopped, p.waitErr
		p.mu.Unlock()
		if !p.running() && !stopped {
			t.Errorf("caravan %s (%s) ended on its own: %v\n%s", p.name, strings.Join(p.args, " "), err, p.logTail(4096))
		}
		if p.running() {
			p.mu.Lock()
			p.stopped = true
			p.mu.Unlock()
			_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(exitWait):
				t.Errorf("caravan %s (pid %d) did not end after SIGKILL", p.name, p.Pid())
			}
		}
	}
	if t.Failed() {
		for _, p := range procs {
			t.Logf("--- end of the output of caravan %s (%s):\n%s", p.name, strings.Join(p.args, " "), p.logTail(6000))
		}
	}
	// Supervisors (and anything else) started for this test name its
	// unique base directory on their command line.
	for _, pid := range pidsMentioning(s.base) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, parent := range parents {
		if err := removeCgroupTree(parent); err != nil {
			t.Errorf("remove cgroup %s: %v", parent, err)
		}
	}
	// SIGKILL is delivered at once but a process takes a moment to go.
	deadline := time.Now().Add(exitWait)
	for left := pidsMentioning(s.base); len(left) > 0; left = pidsMentioning(s.base) {
		if time.Now().After(deadline) {
			t.Errorf("processes of the test still run %v after SIGKILL: %v", exitWait, left)
			break
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.http.CloseIdleConnections()
	if err := os.RemoveAll(s.base); err != nil {
		t.Errorf("remove %s: %v", s.base, err)
	}
}

// pidsMentioning lists the live processes whose command line contains
// s (a zombie has an empty one).
func pidsMentioning(s string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, pid)
		}
	}
	return out
}

// cgroups returns the host's cgroup manager, or nil without cgroups.
func cgroups() *cgroup.Manager {
	m, err := cgroup.NewManager(0, "")
	if err != nil {
		return nil
	}
	return m
}

// groupDirs are the directories of a group name in every hierarchy.
func groupDirs(m *cgroup.Manager, name string) []string {
	if m.Version() == cgroup.V2 {
		return []string{filepath.Join(m.Root(), name)}
	}
	var out []string
	for _, c := range m.Controllers() {
		out = append(out, filepath.Join(m.Root(), c, name))
	}
	return out
}

// removeCgroupTree kills every process below the group parent and
// removes its groups, leaves first, in every hierarchy. It works on the
// directories themselves, since an agent killed while it deleted a group
// can leave it in some hierarchies only.
func removeCgroupTree(parent string) error {
	m := cgroups()
	if m == nil {
		return nil
	}
	var left []string
	deadline := time.Now().Add(exitWait)
	for {
		left = left[:0]
		for _, top := range groupDirs(m, parent) {
			var dirs []string
			_ = filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, path)
				}
				return nil
			})
			slices.Reverse(dirs) // leaves first
			for _, dir := range dirs {
				if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
					for _, f := range strings.Fields(string(b)) {
						if pid, err := strconv.Atoi(f); err == nil {
							_ = syscall.Kill(pid, syscall.SIGKILL)
						}
					}
				}
				if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
					left = append(left, dir)
				}
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still there after %v: %s", exitWait, strings.Join(left, ", "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// taskPids lists the processes in the cgroup of one task of an
// allocation (the exec driver names it <parent>/<alloc id>.<task>); none
// when the group does not exist.
func taskPids(parent, allocID, task string) []int {
	m := cgroups()
	if m == nil {
		return nil
	}
	g, err := m.Load(parent + "/" + cgroup.Segment(allocID+"."+task))
	if err != nil {
		return nil
	}
	pids, err := g.Pids()
	if err != nil {
		return nil
	}
	slices.Sort(pids)
	return pids
}

// procID is a process told apart from a later one with the same pid by
// its start time.
type procID struct {
	Pid   int
	Start uint64 // clock ticks after boot
	Comm  string
}

// processes describes the pids, skipping those that are gone.
func processes(pids []int) []procID {
	var out []procID
	for _, pid := range pids {
		if p, ok := readProc(pid); ok {
			out = append(out, p)
		}
	}
	return out
}

// readProc reads a process's start time and name from /proc/PID/stat.
func readProc(pid int) (procID, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procID{}, false
	}
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return procID{}, false
	}
	fields := strings.Fields(s[rp+1:])
	// fields[0] is field 3 (state); starttime is field 22.
	if len(fields) < 20 || fields[0] == "Z" {
		return procID{}, false
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procID{}, false
	}
	return procID{Pid: pid, Start: start, Comm: s[lp+1 : rp]}, true
}

// alive reports whether the very process p still runs.
func alive(p procID) bool {
	now, ok := readProc(p.Pid)
	return ok && now.Start == p.Start
}

// waitFor polls cond every 50ms until it holds, or fails the test after
// timeout. It returns how long it waited.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// freePort is a TCP port free on 127.0.0.1 now.
func freePort(t testing.TB) int { return testcluster.FreePort(t) }

// reqCtx is the context of one API call.
func reqCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// checkGoroutines fails the test when, after all its other cleanups,
// goroutines running caravan's code (this package's included) are left.
func checkGoroutines(t *testing.T) {
	t.Cleanup(func() {
		if err := testenv.CheckGoroutines(10 * time.Second); err != nil {
			t.Error(err)
		}
	})
}

// TestMain checks for leaked goroutines once more after all the tests.
func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }
