package agent

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/agent/localstate"
	"github.com/caravan-sched/caravan/internal/driver/docker"
	"github.com/caravan-sched/caravan/internal/testimage"
)

func dockerTask(name, image, command string) *caravan.Task {
	return &caravan.Task{Name: name, Driver: caravan.DriverDocker, Config: caravan.TaskConfig{Image: image, Command: command},
		Resources: caravan.Resources{CPU: 100, Memory: 64}, KillTimeout: caravan.Duration(2 * time.Second)}
}

// TestDockerAgent runs containers through the agent with the real docker
// driver: the environment and mounts a container sees, its exit code and
// logs through the agent API, and re-attaching after an agent restart.
func TestDockerAgent(t *testing.T) {
	testimage.Client(t) // skips without an Engine
	srv, cfg := execSetup(t, time.Second)
	cfg.DisableDocker = false
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	image := testimage.Busybox(ctx, t, "agent")
	t.Cleanup(func() { destroyDockerLeftovers(t, cfg) })

	a := startAgent(t, cfg)
	waitFor(t, 10*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	if n := srv.node(a.NodeID()); !n.Drivers["docker"].Healthy || n.Attributes["driver.docker"] != "1" {
		t.Fatalf("docker not fingerprinted: %+v", n.Drivers["docker"])
	}
	batch := testAlloc(a.NodeID(), testJob(caravan.JobTypeBatch,
		dockerTask("probe", image, `echo "$CARAVAN_TASK_DIR $CARAVAN_ALLOC_DIR $CARAVAN_JOB_ID"; test -d /local && test -d /alloc/logs && exit 5`)))
	service := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, dockerTask("sleeper", image, "sleep 300")))
	srv.addAlloc(batch)
	srv.addAlloc(service)
	waitFor(t, 60*time.Second, "probe ended", func() bool { return srv.alloc(batch.ID).ClientStatus == caravan.AllocClientFailed })
	if ts := srv.alloc(batch.ID).TaskStates["probe"]; ts.ExitCode != 5 {
		t.Errorf("probe exit code = %d, want 5 (%+v)", ts.ExitCode, ts.Events)
	}
	resp, err := http.Get("http://" + a.HTTPAddr() + "/v1/client/allocation/" + batch.ID + "/logs?follow=true")
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "/local /alloc " + batch.JobID + "\n"; string(out) != want {
		t.Errorf("probe output = %q, want %q", out, want)
	}

	waitFor(t, 60*time.Second, "sleeper running", func() bool { return srv.alloc(service.ID).ClientStatus == caravan.AllocClientRunning })
	a.stop(t)
	cfg.StopTasksOnShutdown = true
	startAgent(t, cfg)
	waitFor(t, 30*time.Second, "sleeper re-attached", func() bool {
		ts := srv.alloc(service.ID).TaskStates["sleeper"]
		return ts != nil && countEvents(ts, caravan.TaskEventReattached) == 1
	})
	ts := srv.alloc(service.ID).TaskStates["sleeper"]
	if ts.State != caravan.TaskStateRunning || countEvents(ts, caravan.TaskEventStarted) != 1 {
		t.Errorf("sleeper: %s with %d starts, want running, started once", ts.State, countEvents(ts, caravan.TaskEventStarted))
	}
}

// destroyDockerLeftovers removes the containers of every allocation the
// state file knows.
func destroyDockerLeftovers(t *testing.T, cfg Config) {
	db, err := localstate.Open(filepath.Join(cfg.DataDir, stateFile))
	if err != nil {
		return
	}
	defer db.Close()
	stored, _, _ := db.Allocs()
	d, err := docker.New(docker.Config{})
	if err != nil {
		return
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, s := range stored {
		for name := range s.Tasks {
			_ = d.Destroy(ctx, s.Alloc.ID+"/"+name)
		}
	}
}
