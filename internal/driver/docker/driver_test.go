package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/logs"
	"github.com/caravan-sched/caravan/internal/testimage"
)

// testTimeout bounds every wait of these tests.
const testTimeout = 2 * time.Minute

// env is what the Engine tests share: one busybox image.
type env struct {
	client *client.Client
	image  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	c := testimage.Client(t)
	return &env{client: c, image: testimage.Busybox(context.Background(), t, "driver-docker")}
}

// driver makes a Driver closed when the test ends.
func (e *env) driver(t *testing.T, change func(*Config)) *Driver {
	t.Helper()
	cfg := Config{Client: e.client, PullTimeout: 5 * time.Second}
	if change != nil {
		change(&cfg)
	}
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func randomID(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// task makes a task configuration running command in the busybox image,
// and removes its container when the test ends.
func (e *env) task(t testing.TB, name, command string) *driver.TaskConfig {
	allocID := randomID(t)
	dir := t.TempDir()
	cfg := &driver.TaskConfig{
		ID:      allocID + "/" + name,
		AllocID: allocID,
		JobID:   "1001",
		Task: &caravan.Task{
			Name: name,
			Config: caravan.TaskConfig{
				Image:   e.image,
				Command: command,
				Labels:  map[string]string{testimage.Label: "1"},
			},
		},
		AllocDir:    filepath.Join(dir, "alloc"),
		TaskDir:     filepath.Join(dir, "alloc", name),
		CPU:         100,
		Memory:      64,
		KillTimeout: time.Second,
		Logs:        driver.LogConfig{Dir: filepath.Join(dir, "alloc", "alloc", "logs")},
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := e.client.ContainerRemove(ctx, containerName(name, allocID), container.RemoveOptions{Force: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove test container: %v", err)
		}
	})
	return cfg
}

func start(t testing.TB, d *Driver, cfg *driver.TaskConfig) *driver.Handle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	h, err := d.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return h
}

func wait(t testing.TB, d *Driver, id string) *driver.ExitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	res, err := d.Wait(ctx, id)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return res
}

func output(t testing.TB, cfg *driver.TaskConfig, stream string) string {
	t.Helper()
	var b bytes.Buffer
	if err := logs.Copy(context.Background(), &b, cfg.Logs.Dir, cfg.Task.Name+"."+stream, logs.ReadOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func inspect(t testing.TB, e *env, id string) (container.InspectResponse, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := e.client.ContainerInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return info, false
	}
	if err != nil {
		t.Fatalf("inspect container: %v", err)
	}
	return info, true
}

func containerID(t testing.TB, h *driver.Handle) string {
	t.Helper()
	st, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	return st.ContainerID
}

func TestDriver(t *testing.T) {
	t.Cleanup(func() { checkNoTaskGoroutines(t) }) // runs after every subtest's cleanup
	e := newEnv(t)
	t.Run("RunsTaskAndKeepsItsOutput", e.testRunsTask)
	t.Run("ExitCodes", e.testExitCodes)
	t.Run("Limits", e.testLimits)
	t.Run("PublishedPort", e.testPublishedPort)
	t.Run("MissingImage", e.testMissingImage)
	t.Run("OOM", e.testOOM)
	t.Run("TimeLimit", e.testTimeLimit)
	t.Run("Stop", e.testStop)
	t.Run("RecoverRunning", e.testRecoverRunning)
	t.Run("RecoverExited", e.testRecoverExited)
	t.Run("RecoverBadHandles", e.testRecoverBadHandles)
	t.Run("Destroy", e.testDestroy)
	t.Run("Stats", e.testStats)
	t.Run("StartTwice", e.testStartTwice)
}

func (e *env) testRunsTask(t *testing.T) {
	d := e.driver(t, nil)
	cfg := e.task(t, "hello", "echo hello from $GREETER; echo to stderr >&2; echo shared > /alloc/x; exit 0")
	cfg.Env = map[string]string{"GREETER": "caravan"}
	out := filepath.Join(t.TempDir(), "slurm-1001.out")
	cfg.Logs.StdoutPath = out
	h := start(t, d, cfg)
	if h.Driver != "docker" || h.TaskID != cfg.ID || h.StartedAt.IsZero() {
		t.Errorf("handle = %+v", h)
	}
	res := wait(t, d, cfg.ID)
	if !res.Successful() || res.FinishedAt.Before(res.StartedAt) {
		t.Errorf("result = %+v, want a success", res)
	}
	if got := output(t, cfg, "stdout"); got != "hello from caravan\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := output(t, cfg, "stderr"); got != "to stderr\n" {
		t.Errorf("stderr = %q", got)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "hello from caravan\n" {
		t.Errorf("stdout path = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(cfg.AllocDir, "alloc", "x")); err != nil || string(b) != "shared\n" {
		t.Errorf("/alloc/x seen from the host = %q, %v", b, err)
	}
	if _, found := inspect(t, e, containerID(t, h)); found {
		t.Error("the container is still there after its exit was collected")
	}
	// Wait again gives the same result.
	if again := wait(t, d, cfg.ID); !cmp.Equal(res, again) {
		t.Errorf("second Wait = %+v, want %+v", again, res)
	}
	if err := d.Destroy(context.Background(), cfg.ID); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	if _, err := d.Wait(context.Background(), cfg.ID); !errors.Is(err, driver.ErrTaskNotFound) {
		t.Errorf("Wait after Destroy: %v, want ErrTaskNotFound", err)
	}
}

func (e *env) testExitCodes(t *testing.T) {
	d := e.driver(t, nil)
	tests := []struct {
		name    string
		command string
		args    []string
		want    int
		state   string
	}{
		{"exit 3", "exit 3", nil, 3, caravan.TaskStateFailed},
		{"true", "/bin/true", nil, 0, caravan.TaskStateComplete},
		{"program and args", "/bin/sh", []string{"-c", "exit 42"}, 42, caravan.TaskStateFailed},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.task(t, fmt.Sprintf("exit%d", i), tt.command)
			cfg.Task.Config.Args = tt.args
			start(t, d, cfg)
			res := wait(t, d, cfg.ID)
			if res.ExitCode != tt.want || res.State() != tt.state || res.Err != "" {
				t.Errorf("result = %+v, want exit code %d, state %s", res, tt.want, tt.state)
			}
		})
	}
	t.Run("no such program", func(t *testing.T) {
		cfg := e.task(t, "missing-program", "/bin/nonexistent")
		_, err := d.Start(context.Background(), cfg)
		t.Logf("Start error: %v", err)
		if err == nil || !strings.Contains(err.Error(), "/bin/nonexistent") {
			t.Errorf("Start error = %v, want one naming the program", err)
		}
		if _, found := inspect(t, e, containerName(cfg.Task.Name, cfg.AllocID)); found {
			t.Error("the container that failed to start is left behind")
		}
	})
}

func (e *env) testLimits(t *testing.T) {
	d := e.driver(t, func(c *Config) { c.DefaultUser = "65534:65534" })
	cfg := e.task(t, "limits", "sleep 60")
	cfg.Memory, cfg.CPU, cfg.Cores = 48, 700, []int{0}
	cfg.Task.Config.Labels["team"] = "blue"
	cfg.Task.WorkDir = "/tmp"
	h := start(t, d, cfg)
	info, found := inspect(t, e, containerID(t, h))
	if !found {
		t.Fatal("no container")
	}
	got := struct {
		Name                    string
		Memory, Swap, CPUShares int64
		Cpuset, WorkDir, User   string
		Alloc, Task, Job, Team  string
		Mounts                  []string
		Running                 bool
	}{
		Name: info.Name, Memory: info.HostConfig.Memory, Swap: info.HostConfig.MemorySwap,
		CPUShares: info.HostConfig.CPUShares, Cpuset: info.HostConfig.CpusetCpus, WorkDir: info.Config.WorkingDir, User: info.Config.User,
		Alloc: info.Config.Labels[LabelAllocID], Task: info.Config.Labels[LabelTask],
		Job: info.Config.Labels[LabelJobID], Team: info.Config.Labels["team"], Running: info.State.Running,
	}
	for _, m := range info.Mounts {
		got.Mounts = append(got.Mounts, m.Source+":"+m.Destination)
	}
	slices.Sort(got.Mounts) // the Engine lists them in no fixed order
	want := got
	want.Name = "/caravan-limits-" + cfg.AllocID
	want.Memory, want.Swap, want.CPUShares, want.Cpuset, want.WorkDir, want.User = 48<<20, 48<<20, 700, "0", "/tmp", "65534:65534"
	want.Alloc, want.Task, want.Job, want.Team, want.Running = cfg.AllocID, "limits", "1001", "blue", true
	want.Mounts = []string{
		filepath.Join(cfg.AllocDir, "alloc") + ":/alloc",
		filepath.Join(cfg.TaskDir, "local") + ":/local",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("container (-want +got):\n%s", diff)
	}
	if err := d.Stop(context.Background(), cfg.ID, 0, 9); err != nil {
		t.Fatal(err)
	}
	wait(t, d, cfg.ID)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (e *env) testPublishedPort(t *testing.T) {
	d := e.driver(t, nil)
	cfg := e.task(t, "web", "mkdir -p /tmp/www && echo hi from the container > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www")
	port := freePort(t)
	cfg.Ports = []caravan.AllocatedPort{{Label: "http", Value: port, To: 8080}}
	start(t, d, cfg)
	defer func() {
		d.Stop(context.Background(), cfg.ID, time.Second, 0)
		wait(t, d, cfg.ID)
	}()

	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	hc := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for range 100 { // at most about 10 s
		resp, err := hc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := string(body); got != "hi from the container\n" {
				t.Errorf("GET %s = %q", url, got)
			}
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the published port never answered: %v", lastErr)
}

func (e *env) testMissingImage(t *testing.T) {
	d := e.driver(t, func(c *Config) { c.PullTimeout = 3 * time.Second })
	cfg := e.task(t, "missing", "true")
	cfg.Task.Config.Image = "caravan-test-missing-" + randomID(t)[:8] + ":latest"
	_, err := d.Start(context.Background(), cfg)
	t.Logf("Start error: %v", err)
	if !errors.Is(err, ErrImageNotFound) {
		t.Fatalf("Start error = %v, want ErrImageNotFound", err)
	}
	want := fmt.Sprintf("image %q not found locally and could not be pulled: ", cfg.Task.Config.Image)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("Start error = %q, want it to say %q", err, want)
	}
	if _, err := d.Wait(context.Background(), cfg.ID); !errors.Is(err, driver.ErrTaskNotFound) {
		t.Errorf("Wait after a failed Start: %v, want ErrTaskNotFound", err)
	}
}

func (e *env) testOOM(t *testing.T) {
	d := e.driver(t, nil)
	// The hog waits a moment: on cgroup v1 the Engine can miss an OOM kill
	// in a container's first moments (seen under the full suite's load as
	// exit 137 without the OOM flag; most likely its shim watches for OOM
	// kills only once the container runs).
	cfg := e.task(t, "hog", "sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1")
	cfg.Memory = 16
	start(t, d, cfg)
	res := wait(t, d, cfg.ID)
	if !res.OOMKilled || res.State() != caravan.TaskStateOOM {
		t.Errorf("result = %+v, want OOMKilled", res)
	}
}

func (e *env) testTimeLimit(t *testing.T) {
	d := e.driver(t, nil)
	cfg := e.task(t, "slow", "sleep 60") // PID 1 ignores SIGTERM: it takes the SIGKILL
	cfg.TimeLimit, cfg.KillTimeout = time.Second, time.Second
	start(t, d, cfg)
	res := wait(t, d, cfg.ID)
	if !res.TimedOut || res.Killed || res.State() != caravan.TaskStateTimeout || res.Signal != 9 {
		t.Errorf("result = %+v, want TimedOut by SIGKILL", res)
	}
	// The container's own clock: stopped within time limit + kill timeout + 1 s.
	if ran, bound := res.FinishedAt.Sub(res.StartedAt), cfg.TimeLimit+cfg.KillTimeout+time.Second; ran > bound {
		t.Errorf("the container ran %v, more than %v", ran, bound)
	}
}

func (e *env) testStop(t *testing.T) {
	d := e.driver(t, nil)
	t.Run("graceful", func(t *testing.T) {
		cfg := e.task(t, "graceful", "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.1; done")
		h := start(t, d, cfg)
		waitForOutput(t, cfg, "ready\n")
		if err := d.Stop(context.Background(), cfg.ID, 30*time.Second, 0); err != nil {
			t.Fatal(err)
		}
		res := wait(t, d, cfg.ID)
		if !res.Killed || res.ExitCode != 0 || res.State() != caravan.TaskStateCancelled {
			t.Errorf("result = %+v, want Killed with exit code 0", res)
		}
		if got := output(t, cfg, "stdout"); got != "ready\nbye\n" {
			t.Errorf("stdout = %q", got)
		}
		if _, found := inspect(t, e, containerID(t, h)); found {
			t.Error("the container is still there after Stop")
		}
	})
	t.Run("kill after timeout", func(t *testing.T) {
		cfg := e.task(t, "stubborn", "sleep 60")
		start(t, d, cfg)
		if err := d.Stop(context.Background(), cfg.ID, 500*time.Millisecond, 0); err != nil {
			t.Fatal(err)
		}
		res := wait(t, d, cfg.ID)
		if !res.Killed || res.Signal != 9 || res.TimedOut {
			t.Errorf("result = %+v, want Killed by SIGKILL", res)
		}
		// Stopping what has ended is not an error.
		if err := d.Stop(context.Background(), cfg.ID, time.Second, 0); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	})
	if err := d.Stop(context.Background(), "nope/none", time.Second, 0); !errors.Is(err, driver.ErrTaskNotFound) {
		t.Errorf("Stop of an unknown task: %v, want ErrTaskNotFound", err)
	}
}

// waitForOutput waits until the task's stdout starts with want.
func waitForOutput(t *testing.T, cfg *driver.TaskConfig, want string) {
	t.Helper()
	got := ""
	for range 200 { // at most about 20 s
		if got = output(t, cfg, "stdout"); strings.HasPrefix(got, want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("stdout = %q, want it to start with %q", got, want)
}

// checkNoTaskGoroutines fails t when a goroutine of a task (monitor, log
// follower, kill timer) outlives the closing of its Driver.
func checkNoTaskGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	for range 20 { // at most about 1 s, for goroutines on their way out
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "internal/driver/docker.(*task)") && !strings.Contains(stacks, "internal/driver/docker.follow") {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("task goroutines outlive their driver:\n%s", stacks)
}
