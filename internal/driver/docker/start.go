package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// Start creates and starts the task's container and returns its handle.
// The image must be on the machine, or be pulled within PullTimeout.
func (d *Driver) Start(ctx context.Context, cfg *driver.TaskConfig) (*driver.Handle, error) {
	if cfg == nil || cfg.ID == "" {
		return nil, fmt.Errorf("start: task configuration without an id: %w", caravan.ErrInvalid)
	}
	h, err := d.start(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("start task %s: %w", cfg.ID, err)
	}
	return h, nil
}

func (d *Driver) start(ctx context.Context, cfg *driver.TaskConfig) (*driver.Handle, error) {
	lc, err := newLogConfig(cfg.Logs)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, caravan.ErrInvalid)
	}
	s, err := buildSpec(cfg, lc, d.cfg.PortBindIP)
	if err != nil {
		return nil, err
	}
	if s.config.User == "" {
		s.config.User = d.cfg.DefaultUser
	}
	release, err := d.reserve(cfg.ID)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := d.ensureImage(ctx, s.config.Image); err != nil {
		return nil, err
	}
	for _, dir := range s.dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create folder to mount: %w", err)
		}
	}
	sk, err := openSink(lc, cfg.Task.Name, false, d.log)
	if err != nil {
		return nil, err
	}
	id, err := d.create(ctx, s, cfg.AllocID, cfg.Task.Name)
	if err != nil {
		sk.close()
		return nil, err
	}
	if err := d.client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
		sk.close()
		d.removeQuietly(id)
		return nil, fmt.Errorf("start container: %w", err)
	}
	startedAt := time.Now()
	if info, err := d.client.ContainerInspect(ctx, id); err == nil && info.State != nil {
		if ts, err := time.Parse(time.RFC3339Nano, info.State.StartedAt); err == nil {
			startedAt = ts
		}
	}
	st := &handleState{
		ContainerID:   id,
		ContainerName: s.name,
		TaskName:      cfg.Task.Name,
		TimeLimit:     max(cfg.TimeLimit, 0),
		KillTimeout:   max(cfg.KillTimeout, 0),
		Logs:          lc,
	}
	h, err := encodeHandle(cfg.ID, startedAt, st)
	if err != nil {
		sk.close()
		d.removeQuietly(id)
		return nil, err
	}
	if err := d.track(cfg.ID, st, startedAt, sk); err != nil {
		sk.close()
		d.removeQuietly(id)
		return nil, err
	}
	d.log.Info("started container", "task_id", cfg.ID, "container", s.name, "container_id", shortID(id))
	return h, nil
}

// reserve marks the task as being started or recovered until release is
// called. It drops what is left of an earlier run of the task (a restart
// in place), and refuses a task that still runs or is being started.
func (d *Driver) reserve(id string) (release func(), err error) {
	d.mu.Lock()
	t := d.tasks[id]
	switch {
	case d.starting[id]:
		d.mu.Unlock()
		return nil, fmt.Errorf("task is being started already: %w", caravan.ErrConflict)
	case t != nil && !t.finished():
		d.mu.Unlock()
		return nil, fmt.Errorf("task is running in container %s: %w", shortID(t.containerID), caravan.ErrConflict)
	case t != nil:
		delete(d.tasks, id)
	}
	d.starting[id] = true
	d.mu.Unlock()
	if t != nil {
		t.shutdown(nil) // finished already
	}
	return func() {
		d.mu.Lock()
		delete(d.starting, id)
		d.mu.Unlock()
	}, nil
}

// create creates the container. A container of the same name left over
// from an earlier run of this very task (same allocation and task labels)
// is removed first; any other is a conflict.
func (d *Driver) create(ctx context.Context, s *spec, allocID, task string) (string, error) {
	for attempt := 0; ; attempt++ {
		resp, err := d.client.ContainerCreate(ctx, s.config, s.host, nil, nil, s.name)
		if err == nil {
			for _, w := range resp.Warnings {
				d.log.Warn("docker warning", "container", s.name, "warning", w)
			}
			return resp.ID, nil
		}
		if !cerrdefs.IsConflict(err) || attempt > 0 {
			return "", fmt.Errorf("create container: %w", err)
		}
		old, ierr := d.client.ContainerInspect(ctx, s.name)
		if ierr != nil {
			return "", fmt.Errorf("create container: %w", err)
		}
		if old.Config == nil || old.Config.Labels[LabelAllocID] != allocID || old.Config.Labels[LabelTask] != task {
			return "", fmt.Errorf("create container: the name %s belongs to a container of something else: %w", s.name, caravan.ErrConflict)
		}
		d.log.Info("removing a leftover container of the task", "container", s.name, "container_id", shortID(old.ID))
		if err := d.client.ContainerRemove(ctx, old.ID, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
			return "", fmt.Errorf("remove leftover container: %w", err)
		}
	}
}

// removeQuietly removes a container that failed to start.
func (d *Driver) removeQuietly(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if err := d.client.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil && !cerrdefs.IsNotFound(err) {
		d.log.Warn("remove container that failed to start", "container_id", shortID(id), "err", err)
	}
}

// ensureImage checks that the image is on the machine and otherwise tries
// to pull it within PullTimeout.
func (d *Driver) ensureImage(ctx context.Context, ref string) error {
	_, err := d.client.ImageInspect(ctx, ref)
	if err == nil {
		return nil
	}
	if !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("inspect image %q: %w", ref, err)
	}
	if d.cfg.DisablePull {
		return &ImageError{Image: ref, Err: errPullDisabled}
	}
	pctx, cancel := context.WithTimeout(ctx, d.cfg.PullTimeout)
	defer cancel()
	if err := d.pull(pctx, ref); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || pctx.Err() != nil {
			err = fmt.Errorf("no answer within %v", d.cfg.PullTimeout)
		}
		return &ImageError{Image: ref, Err: err}
	}
	if _, err := d.client.ImageInspect(ctx, ref); err != nil {
		return &ImageError{Image: ref, Err: fmt.Errorf("not there after the pull: %w", err)}
	}
	return nil
}

// errPullDisabled says why a missing image was not pulled.
var errPullDisabled = errors.New("pulling is disabled on this agent (disable_docker_pull)")

// pullMessage is one JSON object of the Engine's pull progress.
type pullMessage struct {
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

func (d *Driver) pull(ctx context.Context, ref string) error {
	rc, err := d.client.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var m pullMessage
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}

// Recover re-attaches to the container of a handle, running or exited,
// without restarting it: logs go on from the saved checkpoint and the time
// limit counts from the handle's start time.
func (d *Driver) Recover(ctx context.Context, h *driver.Handle) error {
	st, err := decodeHandle(h)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if d.lookup(h.TaskID) != nil {
		return nil
	}
	release, err := d.reserve(h.TaskID)
	if err != nil {
		if d.lookup(h.TaskID) != nil {
			return nil // recovered concurrently
		}
		return fmt.Errorf("recover task %s: %w", h.TaskID, err)
	}
	defer release()
	info, err := d.client.ContainerInspect(ctx, st.ContainerID)
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("recover task %s: container %s is gone: %w", h.TaskID, st.ContainerName, driver.ErrTaskNotFound)
	}
	if err != nil {
		return fmt.Errorf("recover task %s: inspect container: %w", h.TaskID, err)
	}
	if info.State == nil {
		return fmt.Errorf("recover task %s: container %s has no state", h.TaskID, st.ContainerName)
	}
	startedAt := h.StartedAt
	if startedAt.IsZero() {
		// The time limit counts from the container's own start.
		if startedAt, err = time.Parse(time.RFC3339Nano, info.State.StartedAt); err != nil {
			startedAt = time.Now()
		}
	}
	sk, err := openSink(st.Logs, st.TaskName, true, d.log)
	if err != nil {
		return fmt.Errorf("recover task %s: %w", h.TaskID, err)
	}
	if err := d.track(h.TaskID, st, startedAt, sk); err != nil {
		sk.close()
		return fmt.Errorf("recover task %s: %w", h.TaskID, err)
	}
	d.log.Info("re-attached to container", "task_id", h.TaskID, "container", st.ContainerName, "running", info.State.Running)
	return nil
}

// track registers a task and starts its monitor.
func (d *Driver) track(id string, st *handleState, startedAt time.Time, sk *sink) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if d.tasks[id] != nil {
		return fmt.Errorf("task %s is tracked already: %w", id, caravan.ErrConflict)
	}
	t := newTask(d, id, st, startedAt, sk)
	d.tasks[id] = t
	t.goOwned(t.run)
	return nil
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
