package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
)

// gate is a command line that waits (at most a minute) for a file in the
// task's local/ directory, then exits with code.
func gate(file, code string) string {
	return "i=0; while [ ! -e local/" + file + " ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; exit " + code
}

func TestRecover(t *testing.T) {
	h := newHarness(t)
	d1 := h.newDriver()

	runningCfg := h.taskConfig(&caravan.Task{Name: "running", Config: caravan.TaskConfig{Command: gate("go", "5")}})
	exitedDown := h.taskConfig(&caravan.Task{Name: "exited", Config: caravan.TaskConfig{Command: gate("go", "7")}})
	lost := h.taskConfig(&caravan.Task{Name: "lost", Config: caravan.TaskConfig{Command: "exec sleep 300"}})
	hRunning, stRunning := h.start(d1, runningCfg)
	hExited, stExited := h.start(d1, exitedDown)
	hLost, stLost := h.start(d1, lost)

	// The agent goes down: the driver stops watching, the tasks go on.
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d1.Wait(context.Background(), runningCfg.ID); err == nil {
		t.Errorf("Wait on a closed driver returned no error")
	}
	// One task ends while no agent watches; its supervisor, which may
	// hold the other tasks too and so goes on, writes the status.
	touch(t, filepath.Join(exitedDown.TaskDir, "local", "go"))
	waitFor(t, "the status of the task that exited", func() bool {
		return fileExists(stExited.StatusPath)
	})

	// A new agent process recovers all three.
	d2 := h.newDriver()
	if err := d2.Recover(context.Background(), hRunning); err != nil {
		t.Fatalf("Recover running: %v", err)
	}
	if err := d2.Recover(context.Background(), hExited); err != nil {
		t.Fatalf("Recover exited: %v", err)
	}
	if err := d2.Recover(context.Background(), hLost); err != nil {
		t.Fatalf("Recover lost: %v", err)
	}
	if err := d2.Recover(context.Background(), hRunning); err != nil {
		t.Errorf("second Recover: %v", err)
	}

	// The exit that happened while the agent was down, with its code.
	if res := h.wait(d2, exitedDown.ID); res.ExitCode != 7 || res.Err != "" {
		t.Errorf("exited-while-down result = %+v, want exit 7", res)
	}

	// The running task was not restarted: same pid, still in its cgroup.
	if !alive(stRunning.TaskPid) {
		t.Fatalf("running task %d is gone", stRunning.TaskPid)
	}
	g, err := d2.cgroups.Load(stRunning.Cgroup.Name)
	if err != nil {
		t.Fatal(err)
	}
	if pids, _ := g.Pids(); !slices.Contains(pids, stRunning.TaskPid) {
		t.Errorf("cgroup holds %v, not the original task %d", pids, stRunning.TaskPid)
	}
	if s, err := d2.Stats(context.Background(), runningCfg.ID); err != nil || s.MemoryBytes <= 0 {
		t.Errorf("Stats after Recover = %+v, %v", s, err)
	}
	touch(t, filepath.Join(runningCfg.TaskDir, "local", "go"))
	if res := h.wait(d2, runningCfg.ID); res.ExitCode != 5 || res.Err != "" {
		t.Errorf("recovered task result = %+v, want exit 5", res)
	}

	// The supervisor of the third is killed: the loss is reported and
	// nothing of the task is left.
	if !alive(stLost.TaskPid) {
		t.Fatalf("task %d is gone", stLost.TaskPid)
	}
	if err := syscall.Kill(stLost.SupervisorPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := d2.Wait(ctx, lost.ID)
	var lostErr *LostError
	if !errors.As(err, &lostErr) || lostErr.TaskID != lost.ID || !strings.Contains(err.Error(), "supervisor") {
		t.Errorf("Wait on a task whose supervisor was killed = %+v, %v; want a LostError", res, err)
	}
	if alive(stLost.TaskPid) {
		t.Errorf("task %d survived its supervisor", stLost.TaskPid)
	}
	if _, err := d2.cgroups.Load(stLost.Cgroup.Name); !errors.Is(err, cgroup.ErrNotFound) {
		t.Errorf("cgroup of the lost task: %v", err)
	}
}

func TestRecoverBadHandles(t *testing.T) {
	h := newHarness(t)
	d := h.newDriver()
	tests := []struct {
		name  string
		state string
	}{
		{"not json", "{"},
		{"no pid", `{"status_path":"/x","stop_path":"/y","cgroup":{"name":"caravan/x"}}`},
		{"bad cgroup name", `{"supervisor_pid":1,"status_path":"/x","stop_path":"/y","cgroup":{"name":"../x"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.Recover(context.Background(), &driver.Handle{Driver: Name, TaskID: "a/b", State: []byte(tt.state)})
			if err == nil {
				t.Fatal("Recover accepted a bad handle")
			}
		})
	}
	if err := d.Recover(context.Background(), nil); !errors.Is(err, ErrInvalidTask) {
		t.Errorf("Recover(nil) = %v", err)
	}
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
