package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/logs"
	"github.com/caravan-sched/caravan/internal/testimage"
)

// lines returns "line 1\n" … "line n\n".
func lines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "line %d\n", i)
	}
	return b.String()
}

func (e *env) testRecoverRunning(t *testing.T) {
	const n = 30
	first := e.driver(t, nil)
	cfg := e.task(t, "counter", fmt.Sprintf("i=1; while [ $i -le %d ]; do echo line $i; i=$((i+1)); sleep 0.1; done; exit 7", n))
	cfg.TimeLimit = time.Hour
	h := start(t, first, cfg)
	waitForOutput(t, cfg, lines(3))
	// The first agent goes away; output it had not checkpointed yet is
	// still in the files (here: a fake line past the checkpoint).
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if res, err := first.Wait(context.Background(), cfg.ID); err == nil {
		t.Errorf("Wait on a closed driver = %+v, want an error and no made-up exit", res)
	}
	files, err := logs.Files(cfg.Logs.Dir, "counter.stdout")
	if err != nil || len(files) == 0 {
		t.Fatalf("log files: %v, %v", files, err)
	}
	f, err := os.OpenFile(files[len(files)-1].Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("not checkpointed\n")
	f.Close()

	before, found := inspect(t, e, containerID(t, h))
	if !found || !before.State.Running {
		t.Fatalf("the container is not running before Recover: %+v", before.State)
	}
	// The handle went through the agent's store as JSON.
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	var persisted driver.Handle
	if err := json.Unmarshal(b, &persisted); err != nil {
		t.Fatal(err)
	}
	second := e.driver(t, nil)
	if err := second.Recover(context.Background(), &persisted); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if err := second.Recover(context.Background(), &persisted); err != nil {
		t.Errorf("second Recover: %v", err)
	}
	after, found := inspect(t, e, containerID(t, h))
	if !found || after.ID != before.ID || after.State.StartedAt != before.State.StartedAt || after.RestartCount != 0 {
		t.Errorf("after Recover the container is %s started at %s, want %s started at %s",
			after.ID, after.State.StartedAt, before.ID, before.State.StartedAt)
	}
	res := wait(t, second, cfg.ID)
	if res.ExitCode != 7 || res.Err != "" || res.TimedOut || res.Killed {
		t.Errorf("result = %+v, want exit code 7", res)
	}
	if got := output(t, cfg, "stdout"); got != lines(n) {
		t.Errorf("stdout after Recover:\n%s\nwant every line once:\n%s", got, lines(n))
	}
}

func (e *env) testRecoverExited(t *testing.T) {
	first := e.driver(t, nil)
	cfg := e.task(t, "short", "echo before; sleep 1; echo after; echo err >&2; exit 3")
	h := start(t, first, cfg)
	first.Close() // at once: the exit happens while no agent watches
	id := containerID(t, h)
	for range 100 { // at most about 20 s
		if info, found := inspect(t, e, id); !found || !info.State.Running {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	second := e.driver(t, nil)
	if err := second.Recover(context.Background(), h); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	res := wait(t, second, cfg.ID)
	if res.ExitCode != 3 || res.State() != caravan.TaskStateFailed {
		t.Errorf("result = %+v, want exit code 3", res)
	}
	if got := output(t, cfg, "stdout"); got != "before\nafter\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := output(t, cfg, "stderr"); got != "err\n" {
		t.Errorf("stderr = %q", got)
	}
	// The container is gone now (removal after the exit), so a third
	// agent cannot recover it.
	third := e.driver(t, nil)
	if err := third.Recover(context.Background(), h); !errors.Is(err, driver.ErrTaskNotFound) {
		t.Errorf("Recover of a removed container: %v, want ErrTaskNotFound", err)
	}
}

func (e *env) testRecoverBadHandles(t *testing.T) {
	d := e.driver(t, nil)
	good := func() *driver.Handle {
		st := handleState{ContainerID: "c", TaskName: "t", Logs: logConfig{Dir: t.TempDir(), MaxFileSize: 1, MaxFiles: 1}}
		b, _ := json.Marshal(st)
		return &driver.Handle{Driver: "docker", TaskID: "a/t", State: b}
	}
	tests := []struct {
		name   string
		handle func() *driver.Handle
	}{
		{"nil", func() *driver.Handle { return nil }},
		{"other driver", func() *driver.Handle { h := good(); h.Driver = "exec"; return h }},
		{"no task id", func() *driver.Handle { h := good(); h.TaskID = ""; return h }},
		{"state not JSON", func() *driver.Handle { h := good(); h.State = []byte("{"); return h }},
		{"state null", func() *driver.Handle { h := good(); h.State = nil; return h }},
		{"no container id", func() *driver.Handle { h := good(); h.State = []byte(`{"task_name":"t"}`); return h }},
		{"negative limit", func() *driver.Handle {
			h := good()
			h.State = []byte(`{"container_id":"c","task_name":"t","time_limit":-1,"logs":{"dir":"/x","max_file_size":1,"max_files":1}}`)
			return h
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := d.Recover(context.Background(), tt.handle()); !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("Recover: %v, want ErrInvalid", err)
			}
		})
	}
	t.Run("container gone", func(t *testing.T) {
		if err := d.Recover(context.Background(), good()); !errors.Is(err, driver.ErrTaskNotFound) {
			t.Errorf("Recover: %v, want ErrTaskNotFound", err)
		}
	})
}

func (e *env) testDestroy(t *testing.T) {
	d := e.driver(t, nil)
	cfg := e.task(t, "doomed", "sleep 60")
	h := start(t, d, cfg)
	if err := d.Destroy(context.Background(), cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, found := inspect(t, e, containerID(t, h)); found {
		t.Error("the container is still there after Destroy")
	}
	if err := d.Destroy(context.Background(), cfg.ID); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if err := d.Destroy(context.Background(), "garbage"); err != nil {
		t.Errorf("Destroy of an unknown id: %v", err)
	}
	// A task this driver never knew is found by its container name.
	other := e.driver(t, nil)
	cfg2 := e.task(t, "orphan", "sleep 60")
	h2 := start(t, other, cfg2)
	if err := d.Destroy(context.Background(), cfg2.ID); err != nil {
		t.Fatal(err)
	}
	if _, found := inspect(t, e, containerID(t, h2)); found {
		t.Error("the orphan container is still there after Destroy")
	}
	if _, err := os.Stat(checkpointPath(cfg.Logs.Dir, "doomed")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the log checkpoint outlives Destroy: %v", err)
	}
}

func (e *env) testStats(t *testing.T) {
	d := e.driver(t, nil)
	cfg := e.task(t, "busy", "echo ready; while true; do :; done")
	start(t, d, cfg)
	waitForOutput(t, cfg, "ready\n")
	st, err := d.Stats(context.Background(), cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.CPUTime <= 0 || st.MemoryBytes <= 0 || st.MaxMemoryBytes < st.MemoryBytes {
		t.Errorf("stats = %+v, want cpu time and memory", st)
	}
	if err := d.Stop(context.Background(), cfg.ID, 0, 0); err != nil {
		t.Fatal(err)
	}
	res := wait(t, d, cfg.ID)
	if res.Stats == nil || res.Stats.CPUTime < st.CPUTime {
		t.Errorf("result stats = %+v, want the last sample", res.Stats)
	}
	if _, err := d.Stats(context.Background(), "nope/none"); !errors.Is(err, driver.ErrTaskNotFound) {
		t.Errorf("Stats of an unknown task: %v, want ErrTaskNotFound", err)
	}
}

func (e *env) testStartTwice(t *testing.T) {
	d := e.driver(t, nil)
	cfg := e.task(t, "twice", "sleep 60")
	start(t, d, cfg)
	if _, err := d.Start(context.Background(), cfg); !errors.Is(err, caravan.ErrConflict) {
		t.Errorf("Start of a running task: %v, want ErrConflict", err)
	}
	d.Stop(context.Background(), cfg.ID, 0, 9)
	wait(t, d, cfg.ID)
	// A restart in place: same task, a new container, the logs go on.
	cfg.Task.Config.Command = "echo again"
	start(t, d, cfg)
	if res := wait(t, d, cfg.ID); !res.Successful() {
		t.Errorf("restarted task: %+v", res)
	}
	if got := output(t, cfg, "stdout"); got != "again\n" {
		t.Errorf("stdout = %q", got)
	}
}

func TestFingerprint(t *testing.T) {
	t.Run("no engine", func(t *testing.T) {
		c, err := client.NewClientWithOpts(client.WithHost("unix://"+filepath.Join(t.TempDir(), "none.sock")), client.WithAPIVersionNegotiation())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := New(Config{Client: c})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		info := d.Fingerprint(context.Background())
		if info.Detected || info.Healthy || !strings.Contains(info.HealthDescription, "does not answer") {
			t.Errorf("fingerprint = %+v, want not detected with the reason", info)
		}
	})
	t.Run("engine that never answers", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "mute.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() { // accepts and never answers
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				conns = append(conns, c)
			}
		}()
		c, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		d, err := New(Config{Client: c, PingTimeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		info := d.Fingerprint(ctx)
		if info.Detected || info.Healthy || info.HealthDescription == "" {
			t.Errorf("fingerprint = %+v, want not detected with the reason", info)
		}
	})
	t.Run("engine", func(t *testing.T) {
		e := &env{client: testimage.Client(t)}
		d := e.driver(t, nil)
		info := d.Fingerprint(context.Background())
		if !info.Detected || !info.Healthy || info.Attributes["version"] == "" || info.Attributes["api_version"] == "" {
			t.Errorf("fingerprint = %+v, want healthy with version attributes", info)
		}
	})
}

func TestDriverName(t *testing.T) {
	d, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() != "docker" {
		t.Errorf("Name = %q", d.Name())
	}
	if _, err := d.Start(context.Background(), nil); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("Start(nil): %v, want ErrInvalid", err)
	}
	if _, err := d.Start(context.Background(), &driver.TaskConfig{ID: "a/b"}); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("Start without a task: %v, want ErrInvalid", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
