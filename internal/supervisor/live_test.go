package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// superviseEnv makes the test binary run Run on the spec in its argument.
const superviseEnv = "CARAVAN_TEST_SUPERVISOR"

func TestMain(m *testing.M) {
	if spec := os.Getenv(superviseEnv); spec != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := Run(ctx, spec, os.NewFile(3, "handshake"), slog.New(slog.NewTextHandler(os.Stderr, nil)))
		stop()
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// liveSpec makes a spec for a task as nobody in a fresh cgroup and
// directory, removed when the test ends.
func liveSpec(t *testing.T, argv ...string) *Spec {
	t.Helper()
	return liveSpecNamed(t, "", argv...)
}

// liveSpecNamed is liveSpec for one of several tasks of a test.
func liveSpecNamed(t *testing.T, task string, argv ...string) *Spec {
	t.Helper()
	testenv.RequireCgroups(t)
	dir, err := os.MkdirTemp("", "caravan-supervisor-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := cgroup.NewManager(0, "")
	if err != nil {
		t.Fatal(err)
	}
	const parent = "caravan-test-supervisor"
	name := parent + "/" + cgroup.Segment(fmt.Sprintf("%s-%d%s", t.Name(), os.Getpid(), task))
	g, err := m.Create(name, cgroup.Limits{MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = g.Kill(ctx)
		_ = g.Delete()
		os.RemoveAll(dir)
		_ = os.Remove(filepath.Join(m.Root(), parent))
		for _, c := range m.Controllers() {
			_ = os.Remove(filepath.Join(m.Root(), c, parent))
		}
	})
	s := validSpec(dir)
	if task != "" {
		s.TaskID = "a/" + task
	}
	s.Path, s.Args = argv[0], argv
	s.Dir = dir
	s.Cgroup = CgroupSpec{Name: name}
	s.Logs.Dir = filepath.Join(dir, "logs")
	return s
}

// supervise starts the test binary as the supervisor of s and returns it
// with its handshake.
func supervise(t *testing.T, s *Spec) (*exec.Cmd, *Started, *bytes.Buffer) {
	t.Helper()
	specPath := filepath.Join(filepath.Dir(s.StatusPath), "spec.json")
	if err := WriteSpec(specPath, s); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	cmd := exec.Command(self)
	cmd.Env = []string{superviseEnv + "=" + specPath}
	cmd.ExtraFiles = []*os.File{pw}
	cmd.Stderr = &logBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	started, err := ReadHandshake(pr)
	if err != nil {
		t.Fatalf("handshake: %v; log:\n%s", err, logBuf.String())
	}
	return cmd, started, &logBuf
}

// finish waits (at most a minute) for the supervisor and returns the
// status it wrote.
func finish(t *testing.T, cmd *exec.Cmd, s *Spec) *driver.ExitResult {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("supervisor did not exit")
	}
	res, err := ReadStatus(s.StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestStartFailure(t *testing.T) {
	s := liveSpec(t, "/nonexistent/program")
	cmd, started, _ := supervise(t, s)
	if !strings.Contains(started.Error, "no such file") {
		t.Errorf("handshake = %+v, want the exec error", started)
	}
	if res := finish(t, cmd, s); !strings.Contains(res.Err, "no such file") || res.ExitCode != -1 {
		t.Errorf("status = %+v", res)
	}
	if cmd.ProcessState.ExitCode() != 1 {
		t.Errorf("supervisor exit code %d, want 1", cmd.ProcessState.ExitCode())
	}
}

func TestOutputFileOpenedAsUser(t *testing.T) {
	s := liveSpec(t, "/bin/true")
	// Root may write here, nobody may not.
	rootOnly := filepath.Join(filepath.Dir(s.StatusPath), "root-only")
	if err := os.Mkdir(rootOnly, 0o755); err != nil {
		t.Fatal(err)
	}
	s.Logs.StdoutPath = filepath.Join(rootOnly, "out.txt")
	cmd, started, _ := supervise(t, s)
	if !strings.Contains(started.Error, "permission denied") {
		t.Errorf("handshake = %+v, want permission denied", started)
	}
	finish(t, cmd, s)
	if _, err := os.Stat(s.Logs.StdoutPath); !os.IsNotExist(err) {
		t.Errorf("the file was created: %v", err)
	}
}

func TestStopWithSignal(t *testing.T) {
	s := liveSpec(t, "/bin/sleep", "300")
	shared := filepath.Join(s.Dir, "shared")
	if err := os.Mkdir(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	s.Logs.StdoutPath = filepath.Join(shared, "both.out")
	s.Logs.StderrPath = s.Logs.StdoutPath
	cmd, started, _ := supervise(t, s)
	if started.Error != "" {
		t.Fatalf("handshake: %+v", started)
	}
	if err := RequestStop(s.StopPath, StopRequest{Signal: int(syscall.SIGINT), KillTimeout: caravan.Duration(10 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := finish(t, cmd, s)
	if !res.Killed || res.Signal != int(syscall.SIGINT) || res.ExitCode != 128+int(syscall.SIGINT) {
		t.Errorf("status = %+v, want killed by SIGINT", res)
	}
	if res.Stats == nil {
		t.Error("no stats")
	}
	m, err := cgroup.NewManager(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Load(s.Cgroup.Name); err == nil {
		t.Error("the supervisor left its cgroup")
	}
}

// served is a supervisor serving tasks to the test over a socket, as the
// exec driver does.
type served struct {
	t       *testing.T
	cmd     *exec.Cmd
	conn    *os.File
	enc     *json.Encoder
	answers chan Answer
	log     *lockedWriter
	// waited is closed once exited's Wait returned.
	waited chan struct{}
}

// serveTasks starts the test binary as a supervisor that serves tasks.
func serveTasks(t *testing.T) *served {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Non-blocking, so that closing our end ends the read in progress.
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	sv := &served{t: t, conn: ours, enc: json.NewEncoder(ours), answers: make(chan Answer, 16), log: &lockedWriter{}}
	sv.cmd = exec.Command(self)
	sv.cmd.Env = []string{superviseEnv + "=" + ServeSpecs}
	sv.cmd.ExtraFiles = []*os.File{theirs}
	sv.cmd.Stderr = sv.log
	sv.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := sv.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(sv.answers)
		sc := bufio.NewScanner(ours)
		for sc.Scan() {
			var a Answer
			if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
				return
			}
			sv.answers <- a
		}
	}()
	t.Cleanup(func() {
		_ = sv.cmd.Process.Kill()
		if sv.waited == nil {
			_ = sv.cmd.Wait()
		} else {
			<-sv.waited
		}
		ours.Close()
		<-readDone
	})
	return sv
}

// lockedWriter is a buffer for a child's output that tests may read while
// the child writes.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (sv *served) send(r Request) {
	sv.t.Helper()
	if err := sv.enc.Encode(r); err != nil {
		sv.t.Fatal(err)
	}
}

// next returns the next answer, within 30 seconds.
func (sv *served) next() Answer {
	sv.t.Helper()
	select {
	case a, ok := <-sv.answers:
		if !ok {
			sv.t.Fatalf("the supervisor's connection ended")
		}
		return a
	case <-time.After(30 * time.Second):
		sv.t.Fatalf("no answer within 30s")
	}
	return Answer{}
}

// run sends a task and returns the answer to it.
func (sv *served) run(s *Spec) Answer {
	sv.t.Helper()
	sv.send(Request{Run: s})
	a := sv.next()
	if a.TaskID != s.TaskID {
		sv.t.Fatalf("answer %+v, want one for %s", a, s.TaskID)
	}
	return a
}

// exited waits for the supervisor to exit.
func (sv *served) exited() {
	sv.t.Helper()
	done := make(chan error, 1)
	sv.waited = make(chan struct{})
	go func() {
		defer close(sv.waited)
		done <- sv.cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			sv.t.Errorf("supervisor: %v", err)
		}
	case <-time.After(30 * time.Second):
		sv.t.Fatalf("the supervisor did not exit; log:\n%s", sv.log)
	}
}

// TestServeTasks runs tasks one after another in one supervisor: one that
// completes (its result comes with done, and no status file is written
// while the driver is connected), one stopped on request (a stop for
// another task is ignored), one that cannot start; then the supervisor
// exits when the driver's end closes.
func TestServeTasks(t *testing.T) {
	specs := []*Spec{
		liveSpecNamed(t, "true", "/bin/true"),
		liveSpecNamed(t, "sleep", "/bin/sleep", "300"),
		liveSpecNamed(t, "missing", "/nonexistent/program"),
	}
	sv := serveTasks(t)

	specs[0].LogPath = filepath.Join(filepath.Dir(specs[0].StatusPath), "supervisor.log")
	if a := sv.run(specs[0]); a.Pid <= 0 || a.Error != "" {
		t.Fatalf("first task: %+v", a)
	}
	a := sv.next()
	if a.Done != specs[0].TaskID || a.Result == nil || !a.Result.Successful() || a.Result.Stats == nil {
		t.Fatalf("first task: %+v, want done with a successful result", a)
	}
	sv.send(Request{TaskID: specs[0].TaskID, Release: true})
	if _, err := ReadStatus(specs[0].StatusPath); !errors.Is(err, ErrNoStatus) {
		t.Errorf("first task's status file: %v, want none while the driver is connected", err)
	}
	if b, err := os.ReadFile(specs[0].LogPath); err != nil || !strings.Contains(string(b), "task exited") {
		t.Errorf("first task's supervisor log: %q, %v", b, err)
	}

	a = sv.run(specs[1])
	if a.Pid <= 0 {
		t.Fatalf("second task: %+v", a)
	}
	sv.send(Request{TaskID: specs[0].TaskID, Stop: &StopRequest{Signal: int(syscall.SIGKILL)}})
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(a.Pid, 0); err != nil {
		t.Fatalf("a stop for another task reached this one: %v", err)
	}
	sv.send(Request{TaskID: specs[1].TaskID, Stop: &StopRequest{Signal: int(syscall.SIGINT), KillTimeout: caravan.Duration(10 * time.Second)}})
	if a := sv.next(); a.Done != specs[1].TaskID || a.Result == nil || !a.Result.Killed || a.Result.Signal != int(syscall.SIGINT) {
		t.Fatalf("second task: %+v, want done, killed by SIGINT", a)
	}
	sv.send(Request{TaskID: specs[1].TaskID, Release: true})

	if a := sv.run(specs[2]); !strings.Contains(a.Error, "no such file") {
		t.Errorf("third task: %+v, want the exec error", a)
	}
	for _, s := range specs {
		if _, err := ReadStatus(s.StatusPath); !errors.Is(err, ErrNoStatus) {
			t.Errorf("%s: status file %v, want none", s.TaskID, err)
		}
	}
	sv.conn.Close()
	sv.exited()
}

// TestServeConcurrentTasks holds three tasks in one supervisor at once: a
// stop request and a stop file with SIGUSR1 each end only the task they
// name; when the driver's connection ends, the result it did not release
// goes to its task's status file, the task still running goes on, and
// its status file is written when it ends; then the supervisor exits.
func TestServeConcurrentTasks(t *testing.T) {
	gate := func(name string) *Spec {
		s := liveSpecNamed(t, name, "/bin/sh", "-c", "while [ ! -e go ]; do sleep 0.05; done; exit 3")
		if err := os.Chmod(s.Dir, 0o777); err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, c := gate("a"), gate("b"), gate("c")
	sv := serveTasks(t)
	pids := map[string]int{}
	for _, s := range []*Spec{a, b, c} {
		ans := sv.run(s)
		if ans.Pid <= 0 {
			t.Fatalf("%s: %+v", s.TaskID, ans)
		}
		pids[s.TaskID] = ans.Pid
	}
	// A second task with a running task's id is refused.
	if ans := sv.run(a); ans.Error == "" {
		t.Errorf("a second run of %s: %+v, want an error", a.TaskID, ans)
	}

	sv.send(Request{TaskID: a.TaskID, Stop: &StopRequest{Signal: int(syscall.SIGKILL)}})
	ans := sv.next()
	if ans.Done != a.TaskID || ans.Result == nil || !ans.Result.Killed {
		t.Fatalf("after the stop of a: %+v", ans)
	}
	if err := RequestStop(b.StopPath, StopRequest{Signal: int(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if err := sv.cmd.Process.Signal(StopFileSignal); err != nil {
		t.Fatal(err)
	}
	ans = sv.next()
	if ans.Done != b.TaskID || ans.Result == nil || !ans.Result.Killed {
		t.Fatalf("after the stop file of b: %+v", ans)
	}
	sv.send(Request{TaskID: a.TaskID, Release: true})
	if err := syscall.Kill(pids[c.TaskID], 0); err != nil {
		t.Fatalf("task c was hit by the stops of the others: %v", err)
	}

	// The driver goes away: b's result, not released, goes to its status
	// file; a's was released and does not.
	sv.conn.Close()
	waitStatus := func(s *Spec) *driver.ExitResult {
		t.Helper()
		for range 500 {
			if res, err := ReadStatus(s.StatusPath); err == nil {
				return res
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("no status file for %s; log:\n%s", s.TaskID, sv.log)
		return nil
	}
	if res := waitStatus(b); !res.Killed {
		t.Errorf("b's status = %+v, want killed", res)
	}
	if _, err := ReadStatus(a.StatusPath); !errors.Is(err, ErrNoStatus) {
		t.Errorf("a's status file: %v, want none (released)", err)
	}
	if err := syscall.Kill(pids[c.TaskID], 0); err != nil {
		t.Fatalf("task c ended with the connection: %v", err)
	}
	touch(t, filepath.Join(c.Dir, "go"))
	if res := waitStatus(c); res.ExitCode != 3 || res.Killed {
		t.Errorf("c's status = %+v, want exit code 3", res)
	}
	sv.exited()
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
