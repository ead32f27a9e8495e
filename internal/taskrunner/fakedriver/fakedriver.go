// Package fakedriver is an in-memory driver.Driver for tests of the task
// and allocation runners and the agent. Tasks are scripts in
// config.command; no process runs.
//
// A command is one behaviour per run, separated by ";" (the last one
// repeats for later runs):
//
//	run                 runs until stopped
//	exit N [after D]    exits with code N, at once or after D
//	oom after D         is killed for memory after D
//	startfail           Start fails
//	trap                runs; ignores SIGTERM, so Stop takes the kill timeout
//
// A TaskConfig.TimeLimit shorter than the run ends it as timed out. Tasks
// live in a World that outlives Drivers, so a second Driver on the same
// World recovers the first one's tasks, as a restarted agent does.
package fakedriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// ErrStartFailed is what Start returns for a "startfail" run.
var ErrStartFailed = errors.New("fake start failure")

// World holds the fake tasks; it stands for the machine.
type World struct {
	mu        sync.Mutex
	tasks     map[string]*task
	runs      map[string]int
	calls     []string
	unhealthy map[string]bool
}

// NewWorld returns an empty world.
func NewWorld() *World {
	return &World{tasks: map[string]*task{}, runs: map[string]int{}, unhealthy: map[string]bool{}}
}

// SetHealthy makes the drivers with the name report themselves healthy or
// not in Fingerprint.
func (w *World) SetHealthy(driverName string, healthy bool) {
	w.mu.Lock()
	w.unhealthy[driverName] = !healthy
	w.mu.Unlock()
}

// Calls returns what drivers were asked, in order: "start <id>",
// "stop <id>", "destroy <id>", "recover <id>".
func (w *World) Calls() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.calls...)
}

// Running reports whether the task runs.
func (w *World) Running(id string) bool {
	w.mu.Lock()
	t := w.tasks[id]
	w.mu.Unlock()
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.res == nil
}

// Exit ends a running task as if it exited with code by itself.
func (w *World) Exit(id string, code int) {
	w.mu.Lock()
	t := w.tasks[id]
	w.mu.Unlock()
	if t != nil {
		t.end(&driver.ExitResult{ExitCode: code})
	}
}

// Close ends every timer, for tests that check for leaks.
func (w *World) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, t := range w.tasks {
		t.stopTimers()
	}
}

func (w *World) call(format string, args ...any) {
	w.mu.Lock()
	w.calls = append(w.calls, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

// Driver is one driver instance over a World.
type Driver struct {
	name  string
	world *World
}

var _ driver.Driver = (*Driver)(nil)

// New returns a driver with the name (exec, docker) over w.
func New(name string, w *World) *Driver { return &Driver{name: name, world: w} }

// Name returns the driver's name.
func (d *Driver) Name() string { return d.name }

// Fingerprint reports the driver detected, and healthy unless the world
// says otherwise.
func (d *Driver) Fingerprint(context.Context) caravan.DriverInfo {
	d.world.mu.Lock()
	defer d.world.mu.Unlock()
	if d.world.unhealthy[d.name] {
		return caravan.DriverInfo{Detected: true, HealthDescription: "fake: unhealthy"}
	}
	return caravan.DriverInfo{Detected: true, Healthy: true, HealthDescription: "fake"}
}

type task struct {
	id        string
	startedAt time.Time
	trap      bool
	done      chan struct{}

	mu     sync.Mutex
	res    *driver.ExitResult
	timers []*time.Timer
}

func (t *task) end(res *driver.ExitResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.res != nil {
		return
	}
	res.StartedAt = t.startedAt
	res.FinishedAt = time.Now()
	t.res = res
	for _, tm := range t.timers {
		tm.Stop()
	}
	close(t.done)
}

func (t *task) after(d time.Duration, res *driver.ExitResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.timers = append(t.timers, time.AfterFunc(d, func() { t.end(res) }))
}

func (t *task) stopTimers() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, tm := range t.timers {
		tm.Stop()
	}
}

// behaviour parses the run'th behaviour of a command.
func behaviour(command string, run int) (kind string, code int, after time.Duration, err error) {
	parts := strings.Split(command, ";")
	if run >= len(parts) {
		run = len(parts) - 1
	}
	f := strings.Fields(parts[run])
	if len(f) == 0 {
		return "", 0, 0, fmt.Errorf("fake: empty command")
	}
	kind = f[0]
	rest := f[1:]
	if kind == "exit" {
		if len(rest) == 0 {
			return "", 0, 0, fmt.Errorf("fake: exit needs a code")
		}
		if code, err = strconv.Atoi(rest[0]); err != nil {
			return "", 0, 0, fmt.Errorf("fake: bad exit code %q", rest[0])
		}
		rest = rest[1:]
	}
	if len(rest) == 2 && rest[0] == "after" {
		if after, err = time.ParseDuration(rest[1]); err != nil {
			return "", 0, 0, fmt.Errorf("fake: bad duration %q", rest[1])
		}
	} else if len(rest) != 0 {
		return "", 0, 0, fmt.Errorf("fake: cannot read %q", parts[run])
	}
	switch kind {
	case "run", "exit", "oom", "startfail", "trap":
	default:
		return "", 0, 0, fmt.Errorf("fake: unknown behaviour %q", kind)
	}
	return kind, code, after, nil
}

// Start starts a fake run.
func (d *Driver) Start(ctx context.Context, cfg *driver.TaskConfig) (*driver.Handle, error) {
	w := d.world
	w.mu.Lock()
	run := w.runs[cfg.ID]
	w.runs[cfg.ID] = run + 1
	w.mu.Unlock()
	if w.Running(cfg.ID) {
		return nil, fmt.Errorf("fake: task %s runs already: %w", cfg.ID, caravan.ErrConflict)
	}
	w.call("start %s", cfg.ID)
	kind, code, after, err := behaviour(cfg.Task.Config.Command, run)
	if err != nil {
		return nil, err
	}
	if kind == "startfail" {
		return nil, ErrStartFailed
	}
	t := &task{id: cfg.ID, startedAt: time.Now(), trap: kind == "trap", done: make(chan struct{})}
	switch kind {
	case "exit":
		if after == 0 && (cfg.TimeLimit == 0) {
			t.end(&driver.ExitResult{ExitCode: code})
		} else if cfg.TimeLimit == 0 || after < cfg.TimeLimit {
			t.after(after, &driver.ExitResult{ExitCode: code})
		}
	case "oom":
		if cfg.TimeLimit == 0 || after < cfg.TimeLimit {
			t.after(after, &driver.ExitResult{ExitCode: 137, Signal: 9, OOMKilled: true})
		}
	}
	if cfg.TimeLimit > 0 {
		t.after(cfg.TimeLimit, &driver.ExitResult{ExitCode: 143, Signal: 15, TimedOut: true})
	}
	w.mu.Lock()
	w.tasks[cfg.ID] = t
	w.mu.Unlock()
	state, _ := json.Marshal(map[string]string{"id": cfg.ID})
	return &driver.Handle{Driver: d.name, TaskID: cfg.ID, StartedAt: t.startedAt, State: state}, nil
}

func (d *Driver) lookup(id string) (*task, error) {
	d.world.mu.Lock()
	defer d.world.mu.Unlock()
	t := d.world.tasks[id]
	if t == nil {
		return nil, fmt.Errorf("fake: task %s: %w", id, driver.ErrTaskNotFound)
	}
	return t, nil
}

// Recover finds the task in the world.
func (d *Driver) Recover(ctx context.Context, h *driver.Handle) error {
	d.world.call("recover %s", h.TaskID)
	_, err := d.lookup(h.TaskID)
	return err
}

// Wait waits for the run to end.
func (d *Driver) Wait(ctx context.Context, id string) (*driver.ExitResult, error) {
	t, err := d.lookup(id)
	if err != nil {
		return nil, err
	}
	select {
	case <-t.done:
		t.mu.Lock()
		defer t.mu.Unlock()
		r := *t.res
		return &r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Stop ends the run as killed: at once, or after killTimeout for a trap.
func (d *Driver) Stop(ctx context.Context, id string, killTimeout time.Duration, signal int) error {
	d.world.call("stop %s", id)
	t, err := d.lookup(id)
	if err != nil {
		return err
	}
	if t.trap {
		t.after(killTimeout, &driver.ExitResult{ExitCode: 137, Signal: 9, Killed: true})
		return nil
	}
	t.end(&driver.ExitResult{ExitCode: 143, Signal: 15, Killed: true})
	return nil
}

// Destroy kills what runs and forgets the task.
func (d *Driver) Destroy(ctx context.Context, id string) error {
	d.world.call("destroy %s", id)
	d.world.mu.Lock()
	t := d.world.tasks[id]
	delete(d.world.tasks, id)
	d.world.mu.Unlock()
	if t != nil {
		t.end(&driver.ExitResult{ExitCode: 137, Signal: 9, Killed: true})
	}
	return nil
}

// Stats returns fixed figures for a running task.
func (d *Driver) Stats(ctx context.Context, id string) (*caravan.TaskStats, error) {
	if _, err := d.lookup(id); err != nil {
		return nil, err
	}
	return &caravan.TaskStats{CPUTime: caravan.Duration(time.Second), MemoryBytes: 1 << 20, MaxMemoryBytes: 2 << 20}, nil
}
