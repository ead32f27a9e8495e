package docker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

const (
	sigterm = 15
	sigkill = 9
)

// Bounds of the monitor's calls.
const (
	// logDrainTimeout is how long the monitor lets the log follower read
	// the rest of a stopped container's output.
	logDrainTimeout = 10 * time.Second
	// cleanupTimeout bounds inspecting, killing and removing a container.
	cleanupTimeout = 30 * time.Second
)

// errGone means the container disappeared before its exit was collected.
var errGone = errors.New("container disappeared")

// task is one container the driver watches.
type task struct {
	id            string
	name          string
	containerID   string
	containerName string
	startedAt     time.Time
	timeLimit     time.Duration
	killTimeout   time.Duration
	keep          bool
	client        *client.Client
	sink          *sink
	log           *slog.Logger

	// ctx ends when the task is shut down (Destroy, Close, restart);
	// every goroutine of the task runs under it and is counted in wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// done is closed once result is set.
	done chan struct{}

	mu        sync.Mutex
	closing   bool
	result    *driver.ExitResult
	killed    bool
	timedOut  bool
	lastStats *caravan.TaskStats
}

func newTask(d *Driver, id string, st *handleState, startedAt time.Time, sk *sink) *task {
	ctx, cancel := context.WithCancel(d.life)
	return &task{
		id:            id,
		name:          st.TaskName,
		containerID:   st.ContainerID,
		containerName: st.ContainerName,
		startedAt:     startedAt,
		timeLimit:     st.TimeLimit,
		killTimeout:   st.KillTimeout,
		keep:          d.cfg.KeepContainers,
		client:        d.client,
		sink:          sk,
		log:           d.log.With("task_id", id, "container", st.ContainerName),
		ctx:           ctx,
		cancel:        cancel,
		done:          make(chan struct{}),
	}
}

// goOwned runs f in a goroutine of the task, unless the task is shutting
// down.
func (t *task) goOwned(f func(ctx context.Context)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		return
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f(t.ctx)
	}()
}

// shutdown ends the task's goroutines and waits for them. With res, a
// Wait that is still blocked returns res; without, the task is left
// unfinished (the Driver closes, the container goes on).
func (t *task) shutdown(res *driver.ExitResult) {
	t.mu.Lock()
	t.closing = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
	t.sink.close()
	if res != nil {
		t.finish(res)
	}
}

// finish sets the result once.
func (t *task) finish(res *driver.ExitResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.result != nil {
		return
	}
	t.result = res
	close(t.done)
}

func (t *task) finished() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *task) exitResult() *driver.ExitResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := *t.result
	return &r
}

// run is the task's monitor: it follows the logs, enforces the time limit,
// waits for the exit, collects it and removes the container.
func (t *task) run(ctx context.Context) {
	logCtx, stopLogs := context.WithCancel(ctx)
	defer stopLogs()
	logsDone := make(chan struct{})
	t.goOwned(func(context.Context) {
		defer close(logsDone)
		follow(logCtx, t.client, t.containerID, t.sink, t.log)
	})

	var deadline <-chan time.Time
	if t.timeLimit > 0 {
		timer := time.NewTimer(time.Until(t.startedAt.Add(t.timeLimit)))
		defer timer.Stop()
		deadline = timer.C
	}
	waitErr := t.waitExit(ctx, deadline)
	if ctx.Err() != nil {
		return // shut down: the container is left as it is
	}
	select {
	case <-logsDone:
	case <-time.After(logDrainTimeout):
		t.log.Warn("container output did not end; it may be incomplete")
		stopLogs()
		<-logsDone
	case <-ctx.Done():
		return
	}
	cctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	res := t.collect(cctx, waitErr)
	if !t.keep && !errors.Is(waitErr, errGone) {
		if err := t.client.ContainerRemove(cctx, t.containerID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !cerrdefs.IsNotFound(err) {
			t.log.Warn("remove stopped container", "err", err)
		}
		t.sink.remove()
	}
	t.sink.close()
	t.log.Info("container exited", "exit_code", res.ExitCode, "oom_killed", res.OOMKilled, "timed_out", res.TimedOut, "killed", res.Killed, "err", res.Err)
	t.finish(res)
}

// waitExit returns once the container does not run any more, or with
// errGone when it disappeared. It sends the time-limit signals when the
// deadline fires first.
func (t *task) waitExit(ctx context.Context, deadline <-chan time.Time) error {
	backoff := 200 * time.Millisecond
	for {
		waitC, errC := t.client.ContainerWait(ctx, t.containerID, container.WaitConditionNotRunning)
		for waiting := true; waiting; {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-deadline:
				deadline = nil
				if !t.timeLimitReached(ctx) {
					deadline = time.After(time.Second) // the Engine failed us: again
				}
			case <-waitC:
				return nil
			case err := <-errC:
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if cerrdefs.IsNotFound(err) {
					return errGone
				}
				t.log.Debug("wait for container; trying again", "err", err)
				waiting = false
			}
		}
		// The Engine may be restarting: see where the container stands.
		info, err := t.client.ContainerInspect(ctx, t.containerID)
		switch {
		case cerrdefs.IsNotFound(err):
			return errGone
		case err == nil && info.State != nil && !info.State.Running:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// timeLimitReached starts the kill sequence for the time limit. It
// reports false when the Engine could not be asked, to be tried again.
func (t *task) timeLimitReached(ctx context.Context) bool {
	t.mu.Lock()
	t.timedOut = true
	t.mu.Unlock()
	t.log.Info("time limit reached; stopping the container", "time_limit", t.timeLimit)
	sent, err := t.signal(ctx, t.killTimeout, sigterm)
	if !sent {
		t.mu.Lock()
		t.timedOut = false // it had ended by itself, or the signal failed
		t.mu.Unlock()
	}
	if err != nil {
		t.log.Warn("signal container at its time limit", "err", err)
		return false
	}
	return true
}

// stop is Stop for this task.
func (t *task) stop(ctx context.Context, killTimeout time.Duration, sig int) error {
	if t.finished() {
		return nil
	}
	t.mu.Lock()
	t.killed = true
	t.mu.Unlock()
	_, err := t.signal(ctx, killTimeout, sig)
	return err
}

// signal sends sig to the container and arms a SIGKILL for killTimeout
// later. It reports whether the container was running to receive it.
func (t *task) signal(ctx context.Context, killTimeout time.Duration, sig int) (bool, error) {
	err := t.client.ContainerKill(ctx, t.containerID, strconv.Itoa(sig))
	switch {
	case cerrdefs.IsConflict(err) || cerrdefs.IsNotFound(err):
		return false, nil // not running any more
	case err != nil:
		return false, fmt.Errorf("signal %d: %w", sig, err)
	case sig == sigkill:
		return true, nil
	}
	t.goOwned(func(ctx context.Context) {
		timer := time.NewTimer(killTimeout)
		defer timer.Stop()
		select {
		case <-ctx.Done():
			return
		case <-t.done:
			return
		case <-timer.C:
		}
		kctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
		defer cancel()
		err := t.client.ContainerKill(kctx, t.containerID, strconv.Itoa(sigkill))
		if err != nil && !cerrdefs.IsConflict(err) && !cerrdefs.IsNotFound(err) {
			t.log.Warn("kill container after the kill timeout", "err", err)
		}
	})
	return true, nil
}

// oomSettle bounds how long collect waits for the Engine to mark a
// container that SIGKILL ended as OOM-killed: the Engine learns of the OOM
// kill from an event of its own, which can come after the exit. (On cgroup
// v1 an OOM kill in a container's first moments can go unflagged at all,
// most likely because the Engine's shim watches for OOM kills only once
// the container runs; it is then reported as a plain exit 137.)
const oomSettle = time.Second

// inspectExited inspects the stopped container. When SIGKILL ended it and
// the driver did not send it (not killed), it may have been OOM-killed
// with the Engine's OOM event still on its way: it inspects again until
// the flag is set or oomSettle passes.
func (t *task) inspectExited(ctx context.Context, killed bool) (container.InspectResponse, error) {
	info, err := t.client.ContainerInspect(ctx, t.containerID)
	deadline := time.Now().Add(oomSettle)
	for err == nil && !killed && info.State != nil && info.State.ExitCode == 128+9 && !info.State.OOMKilled &&
		time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return info, err
		case <-time.After(50 * time.Millisecond):
		}
		next, nerr := t.client.ContainerInspect(ctx, t.containerID)
		if nerr != nil {
			break
		}
		info = next
	}
	return info, err
}

// collect builds the exit result from the container's final state.
func (t *task) collect(ctx context.Context, waitErr error) *driver.ExitResult {
	t.mu.Lock()
	res := &driver.ExitResult{StartedAt: t.startedAt, Killed: t.killed, TimedOut: t.timedOut}
	if t.lastStats != nil {
		s := *t.lastStats
		res.Stats = &s
	}
	t.mu.Unlock()
	info, err := t.inspectExited(ctx, res.Killed || res.TimedOut)
	if waitErr == nil && err != nil && !cerrdefs.IsNotFound(err) {
		res.Err = fmt.Sprintf("inspect the stopped container %s: %v", t.containerName, err)
		return res
	}
	if errors.Is(waitErr, errGone) || err != nil || info.State == nil {
		res.Err = fmt.Sprintf("container %s (%s) disappeared before its exit status was read", t.containerName, shortID(t.containerID))
		return res
	}
	st := info.State
	res.ExitCode = st.ExitCode
	res.OOMKilled = st.OOMKilled
	if ts, err := time.Parse(time.RFC3339Nano, st.StartedAt); err == nil {
		res.StartedAt = ts
	}
	if ts, err := time.Parse(time.RFC3339Nano, st.FinishedAt); err == nil {
		// The Engine stamps the start once runc reports it, which can be
		// after a short process ended.
		res.FinishedAt = ts
		if ts.Before(res.StartedAt) {
			res.FinishedAt = res.StartedAt
		}
	}
	if st.Error != "" {
		res.Err = st.Error
	}
	// A container that a signal ended at or after its time limit while no
	// driver watched it was stopped for the limit by an earlier agent.
	if !res.TimedOut && !res.Killed && t.timeLimit > 0 && st.ExitCode > 128 &&
		!res.FinishedAt.IsZero() && res.FinishedAt.Sub(res.StartedAt) >= t.timeLimit {
		res.TimedOut = true
	}
	if (res.Killed || res.TimedOut || res.OOMKilled) && st.ExitCode > 128 && st.ExitCode <= 128+64 {
		res.Signal = st.ExitCode - 128
	}
	return res
}

// stats samples the container once.
func (t *task) stats(ctx context.Context) (*caravan.TaskStats, error) {
	resp, err := t.client.ContainerStatsOneShot(ctx, t.containerID)
	if cerrdefs.IsNotFound(err) {
		return nil, fmt.Errorf("container %s: %w", t.containerName, driver.ErrTaskNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("container stats: %w", err)
	}
	defer resp.Body.Close()
	var raw container.StatsResponse
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, fmt.Errorf("decode container stats: %w", err)
	}
	st := statsFrom(&raw)
	t.mu.Lock()
	if t.lastStats != nil {
		st.MaxMemoryBytes = max(st.MaxMemoryBytes, t.lastStats.MaxMemoryBytes)
	}
	if st.CPUTime > 0 || st.MemoryBytes > 0 {
		s := *st
		t.lastStats = &s
	}
	t.mu.Unlock()
	return st, nil
}

// statsFrom maps the Engine's figures: cpu time is the cgroup's total
// usage; memory leaves out the inactive page cache, as `docker stats` does;
// the peak is the cgroup's (v1) or the highest sample seen (v2).
func statsFrom(s *container.StatsResponse) *caravan.TaskStats {
	mem := s.MemoryStats.Usage
	for _, key := range []string{"total_inactive_file", "inactive_file"} {
		if v, ok := s.MemoryStats.Stats[key]; ok && v < mem {
			mem -= v
			break
		}
	}
	return &caravan.TaskStats{
		CPUTime:        caravan.Duration(s.CPUStats.CPUUsage.TotalUsage),
		MemoryBytes:    int64(mem),
		MaxMemoryBytes: int64(max(s.MemoryStats.MaxUsage, mem)),
	}
}
