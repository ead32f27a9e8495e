package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
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

// TestServeTasks runs tasks one after another in one supervisor, over a
// socket as the exec driver does: one that completes, one stopped on
// request (a stop for another task is ignored), one that cannot start;
// then the supervisor exits when the driver's end closes.
func TestServeTasks(t *testing.T) {
	specs := []*Spec{
		liveSpecNamed(t, "true", "/bin/true"),
		liveSpecNamed(t, "sleep", "/bin/sleep", "300"),
		liveSpecNamed(t, "missing", "/nonexistent/program"),
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
	defer ours.Close()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var logBuf bytes.Buffer
	cmd := exec.Command(self)
	cmd.Env = []string{superviseEnv + "=" + ServeSpecs}
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = &logBuf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	enc := json.NewEncoder(ours)
	answers := bufio.NewScanner(ours)
	send := func(r Request) {
		t.Helper()
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	next := func() Answer {
		t.Helper()
		if !answers.Scan() {
			t.Fatalf("no answer: %v; log:\n%s", answers.Err(), logBuf.String())
		}
		var a Answer
		if err := json.Unmarshal(answers.Bytes(), &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	run := func(s *Spec) Answer {
		t.Helper()
		path := filepath.Join(filepath.Dir(s.StatusPath), "spec.json")
		s.LogPath = filepath.Join(filepath.Dir(s.StatusPath), "supervisor.log")
		if err := WriteSpec(path, s); err != nil {
			t.Fatal(err)
		}
		send(Request{Spec: path})
		return next()
	}

	if a := run(specs[0]); a.Pid <= 0 || a.Error != "" {
		t.Fatalf("first task: %+v", a)
	}
	if a := next(); a.Done != specs[0].TaskID {
		t.Fatalf("first task: %+v, want done", a)
	}
	if res, err := ReadStatus(specs[0].StatusPath); err != nil || !res.Successful() {
		t.Errorf("first status = %+v, %v", res, err)
	}

	a := run(specs[1])
	if a.Pid <= 0 {
		t.Fatalf("second task: %+v", a)
	}
	send(Request{TaskID: specs[0].TaskID, Stop: &StopRequest{Signal: int(syscall.SIGKILL)}})
	time.Sleep(200 * time.Millisecond)
	if err := syscall.Kill(a.Pid, 0); err != nil {
		t.Fatalf("a stop for another task reached this one: %v", err)
	}
	send(Request{TaskID: specs[1].TaskID, Stop: &StopRequest{Signal: int(syscall.SIGINT), KillTimeout: caravan.Duration(10 * time.Second)}})
	if a := next(); a.Done != specs[1].TaskID {
		t.Fatalf("second task: %+v, want done", a)
	}
	if res, err := ReadStatus(specs[1].StatusPath); err != nil || !res.Killed || res.Signal != int(syscall.SIGINT) {
		t.Errorf("second status = %+v, %v", res, err)
	}
	if b, err := os.ReadFile(specs[1].LogPath); err != nil || !strings.Contains(string(b), "stopping task") {
		t.Errorf("second task's supervisor log: %q, %v", b, err)
	}

	if a := run(specs[2]); !strings.Contains(a.Error, "no such file") {
		t.Errorf("third task: %+v, want the exec error", a)
	}

	ours.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("supervisor: %v; log:\n%s", err, logBuf.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the supervisor did not exit when the driver's end closed")
	}
}
