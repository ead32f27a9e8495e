// Package docker is the docker driver: it runs each task as a container of
// the local Docker Engine, through the Engine's API.
//
// A task's container is named "caravan-<task>-<alloc id>" and labelled with
// caravan.alloc_id, caravan.task and caravan.job_id. Memory is a hard limit
// without swap, cpu MHz become cpu shares, cores a cpuset; every allocated
// port publishes its host port on the container port; the allocation's
// shared folder is mounted at /alloc and the task's local folder at /local.
// Output is copied from the Engine into the same rotated log files that
// exec tasks write (see logstream.go for how that survives agent restarts).
//
//	Start: image present? (else a short pull) ─▶ create ─▶ start ─▶ handle
//	   │
//	   ▼ one monitor goroutine per task, owned by the Driver
//	follow logs ─┐
//	wait for exit┼─ time limit: SIGTERM, SIGKILL after kill timeout
//	             └─ Stop: signal, SIGKILL after kill timeout
//	   ▼
//	inspect (exit code, OOM) ─▶ remove container (unless kept) ─▶ Wait returns
//
// The Driver owns every goroutine it starts; Close ends them and leaves the
// containers running, for a new Driver to Recover.
package docker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// Defaults for Config.
const (
	DefaultPullTimeout = 30 * time.Second
	DefaultPingTimeout = 3 * time.Second
)

var _ driver.Driver = (*Driver)(nil)

// ErrImageNotFound means a task's image is not on the machine and could not
// be pulled.
var ErrImageNotFound = errors.New("image not found")

// errClosed means the Driver was closed.
var errClosed = errors.New("docker driver closed")

// ImageError says which image is missing and why pulling it failed. It
// matches ErrImageNotFound and the pull's own error.
type ImageError struct {
	// Image is the reference the task asked for.
	Image string
	// Err is why the pull failed.
	Err error
}

// Error reads `image "nginx:latest" not found locally and could not be
// pulled: <reason>`.
func (e *ImageError) Error() string {
	return fmt.Sprintf("image %q not found locally and could not be pulled: %v", e.Image, e.Err)
}

// Unwrap returns ErrImageNotFound and the pull's error.
func (e *ImageError) Unwrap() []error { return []error{ErrImageNotFound, e.Err} }

// Config configures a Driver.
type Config struct {
	// Client talks to the Engine. Nil makes one from the environment
	// (DOCKER_HOST, …) with API version negotiation, closed by Close.
	Client *client.Client
	// KeepContainers leaves a stopped container in place until Destroy.
	// By default a container is removed once its exit has been collected.
	KeepContainers bool
	// PullTimeout bounds pulling an image that is not on the machine;
	// default DefaultPullTimeout.
	PullTimeout time.Duration
	// DisablePull never pulls: an image missing on the machine is an
	// error at once. For machines without a registry, and for tests.
	DisablePull bool
	// PingTimeout bounds the Engine calls of Fingerprint; default
	// DefaultPingTimeout.
	PingTimeout time.Duration
	// PortBindIP is the host address that published ports bind to; empty
	// means every address.
	PortBindIP string
	// DefaultUser runs tasks whose configuration names no user, such as
	// "65534:65534"; empty means the image's own user.
	DefaultUser string
	// Logger receives the driver's logs; nil discards them.
	Logger *slog.Logger
}

// Driver runs tasks as Docker containers. It is safe for concurrent use.
type Driver struct {
	cfg        Config
	client     *client.Client
	ownsClient bool
	log        *slog.Logger
	// life ends at Close; every task goroutine runs under it.
	life     context.Context
	stopLife context.CancelFunc

	mu       sync.Mutex
	tasks    map[string]*task
	starting map[string]bool
	closed   bool
}

// New makes a Driver. It does not contact the Engine: an Engine that is
// down shows in Fingerprint, not here.
func New(cfg Config) (*Driver, error) {
	if cfg.PullTimeout <= 0 {
		cfg.PullTimeout = DefaultPullTimeout
	}
	if cfg.PingTimeout <= 0 {
		cfg.PingTimeout = DefaultPingTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{cfg: cfg, client: cfg.Client, log: cfg.Logger.With("component", "driver.docker"), tasks: map[string]*task{}, starting: map[string]bool{}}
	if d.client == nil {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("docker client: %w", err)
		}
		d.client, d.ownsClient = c, true
	}
	d.life, d.stopLife = context.WithCancel(context.Background())
	return d, nil
}

// Close stops following logs, waiting for exits and enforcing time limits,
// and waits for the driver's goroutines to end. Containers keep running;
// a new Driver re-attaches to them with Recover.
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	tasks := make([]*task, 0, len(d.tasks))
	for _, t := range d.tasks {
		tasks = append(tasks, t)
	}
	d.mu.Unlock()
	d.stopLife()
	for _, t := range tasks {
		t.shutdown(nil)
	}
	if d.ownsClient {
		return d.client.Close()
	}
	return nil
}

// Name returns "docker".
func (d *Driver) Name() string { return caravan.DriverDocker }

// Fingerprint pings the Engine, within PingTimeout. An Engine that does not
// answer is reported as not detected, with the reason.
func (d *Driver) Fingerprint(ctx context.Context) caravan.DriverInfo {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.PingTimeout)
	defer cancel()
	if _, err := d.client.Ping(ctx); err != nil {
		return caravan.DriverInfo{HealthDescription: fmt.Sprintf("docker engine does not answer: %v", err)}
	}
	v, err := d.client.ServerVersion(ctx)
	if err != nil {
		return caravan.DriverInfo{Detected: true, HealthDescription: fmt.Sprintf("docker engine version: %v", err)}
	}
	return caravan.DriverInfo{
		Detected:          true,
		Healthy:           true,
		HealthDescription: "healthy",
		Attributes: map[string]string{
			"version":     v.Version,
			"api_version": v.APIVersion,
			"os":          v.Os,
			"arch":        v.Arch,
		},
	}
}

// lookup returns the task with the id, or nil.
func (d *Driver) lookup(id string) *task {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tasks[id]
}

// Wait blocks until the task exits and returns how it ended.
func (d *Driver) Wait(ctx context.Context, taskID string) (*driver.ExitResult, error) {
	t := d.lookup(taskID)
	if t == nil {
		return nil, fmt.Errorf("wait for task %s: %w", taskID, driver.ErrTaskNotFound)
	}
	select {
	case <-t.done:
		return t.exitResult(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-d.life.Done():
		if t.finished() {
			return t.exitResult(), nil
		}
		return nil, fmt.Errorf("wait for task %s: %w", taskID, errClosed)
	}
}

// Stop sends signal (SIGTERM when 0) to the container and SIGKILL once
// killTimeout has passed. Wait then reports Killed.
func (d *Driver) Stop(ctx context.Context, taskID string, killTimeout time.Duration, signal int) error {
	t := d.lookup(taskID)
	if t == nil {
		return fmt.Errorf("stop task %s: %w", taskID, driver.ErrTaskNotFound)
	}
	if signal <= 0 {
		signal = sigterm
	}
	if err := t.stop(ctx, killTimeout, signal); err != nil {
		return fmt.Errorf("stop task %s: %w", taskID, err)
	}
	return nil
}

// Destroy removes the task's container, killing it if it still runs, and
// forgets the task. A task this Driver does not know is looked up by its
// container name; one that is gone already is not an error.
func (d *Driver) Destroy(ctx context.Context, taskID string) error {
	d.mu.Lock()
	t := d.tasks[taskID]
	delete(d.tasks, taskID)
	d.mu.Unlock()

	ref := ""
	if t != nil {
		t.shutdown(&driver.ExitResult{Killed: true, Err: "destroyed before it exited", StartedAt: t.startedAt})
		ref = t.containerID
	} else if allocID, task, ok := strings.Cut(taskID, "/"); ok && allocID != "" && task != "" {
		ref = containerName(task, allocID)
	}
	if ref == "" {
		return nil
	}
	err := d.client.ContainerRemove(ctx, ref, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("destroy task %s: remove container: %w", taskID, err)
	}
	if t != nil {
		t.sink.remove()
	}
	return nil
}

// Stats samples the container's cpu time and memory.
func (d *Driver) Stats(ctx context.Context, taskID string) (*caravan.TaskStats, error) {
	t := d.lookup(taskID)
	if t == nil {
		return nil, fmt.Errorf("stats of task %s: %w", taskID, driver.ErrTaskNotFound)
	}
	st, err := t.stats(ctx)
	if err != nil {
		return nil, fmt.Errorf("stats of task %s: %w", taskID, err)
	}
	return st, nil
}

func isNotFound(err error) bool { return cerrdefs.IsNotFound(err) }
