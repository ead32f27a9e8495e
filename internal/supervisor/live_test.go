package supervisor

import (
	"bytes"
	"context"
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
	name := parent + "/" + cgroup.Segment(fmt.Sprintf("%s-%d", t.Name(), os.Getpid()))
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
