package taskrunner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	execdriver "github.com/caravan-sched/caravan/internal/driver/exec"
	"github.com/caravan-sched/caravan/internal/supervisor"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// superviseEnv makes the test binary act as `caravan supervise`.
const superviseEnv = "CARAVAN_TEST_TASKRUNNER_SUPERVISE"

const testCgroupParent = "caravan-test-taskrunner"

func TestMain(m *testing.M) {
	if os.Getenv(superviseEnv) == "1" {
		os.Exit(supervisor.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// newExecDriver returns the real exec driver with this binary as its
// supervisor, and a directory every user may enter.
func newExecDriver(t *testing.T) (*execdriver.Driver, string) {
	t.Helper()
	testenv.RequireCgroups(t)
	base, err := os.MkdirTemp("", "caravan-taskrunner-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	d, err := execdriver.New(execdriver.Config{
		StateDir: filepath.Join(base, "exec"), CgroupParent: testCgroupParent,
		SupervisorCommand: []string{self, "supervise"}, SupervisorEnv: []string{superviseEnv + "=1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		os.RemoveAll(base)
		if m, err := cgroup.NewManager(0, ""); err == nil {
			if m.Version() == cgroup.V2 {
				_ = os.Remove(filepath.Join(m.Root(), testCgroupParent))
			} else {
				for _, c := range m.Controllers() {
					_ = os.Remove(filepath.Join(m.Root(), c, testCgroupParent))
				}
			}
		}
	})
	return d, base
}

// TestExecTaskLifecycle drives real processes in real cgroups through the
// task runner.
func TestExecTaskLifecycle(t *testing.T) {
	d, base := newExecDriver(t)
	outDir := filepath.Join(base, "out")
	if err := os.Mkdir(outDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outDir, 0o777); err != nil {
		t.Fatal(err)
	}
	policy := func(attempts int) *caravan.RestartPolicy {
		return &caravan.RestartPolicy{Attempts: attempts, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(100 * time.Millisecond), Mode: caravan.RestartModeFail}
	}
	tests := []struct {
		name     string
		jobType  string
		command  string
		attempts int
		edit     func(*caravan.Task)
		kill     bool
		state    string
		exitCode int
		restarts int
		events   []string
	}{
		{
			name: "batch exit 0 is complete", jobType: caravan.JobTypeBatch, command: "exit 0",
			state: caravan.TaskStateComplete, events: []string{"received", "setup", "started", "exited"},
		},
		{
			name: "exit code and environment", jobType: caravan.JobTypeBatch,
			command: `echo "$CARAVAN_JOB_ID $CARAVAN_TASK_NAME $(id -un)"; exit 3`,
			edit:    func(t *caravan.Task) { t.Stdout = filepath.Join(outDir, "%j-%a.out") },
			state:   caravan.TaskStateFailed, exitCode: 3, events: []string{"received", "setup", "started", "exited", "not_restarting"},
		},
		{
			name: "service exit is restarted", jobType: caravan.JobTypeService, command: "exit 1", attempts: 1,
			state: caravan.TaskStateFailed, exitCode: 1, restarts: 1,
			events: []string{"received", "setup", "started", "exited", "restarting", "started", "exited", "not_restarting"},
		},
		{
			name: "time limit", jobType: caravan.JobTypeBatch, command: "sleep 30", attempts: 3,
			edit: func(t *caravan.Task) {
				t.TimeLimit, t.KillTimeout = caravan.Duration(time.Second), caravan.Duration(time.Second)
			},
			state: caravan.TaskStateTimeout, exitCode: -1, events: []string{"received", "setup", "started", "timeout", "not_restarting"},
		},
		{
			name: "out of memory", jobType: caravan.JobTypeBatch, command: "tail /dev/zero",
			edit:  func(t *caravan.Task) { t.Resources.Memory = 16 },
			state: caravan.TaskStateOOM, exitCode: -1, events: []string{"received", "setup", "started", "oom", "not_restarting"},
		},
		{
			name: "stop is cancelled", jobType: caravan.JobTypeService, command: "sleep 300", attempts: 3, kill: true,
			state: caravan.TaskStateCancelled, exitCode: -1, events: []string{"received", "setup", "started", "killing", "killed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			alloc := testAlloc(tc.jobType, tc.command, policy(tc.attempts), tc.edit)
			dir := filepath.Join(base, alloc.ID)
			store := &memPersister{}
			r, err := New(Config{
				Alloc: alloc, Task: alloc.Job.TaskGroups[0].Tasks[0], Driver: d,
				Node: NodeInfo{ID: "node1", Name: "n1"}, AllocDir: dir, TaskUser: "nobody", Persister: store,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- r.Run(ctx) }()
			if tc.kill {
				for i := 0; i < 500 && r.State().State != caravan.TaskStateRunning; i++ {
					time.Sleep(10 * time.Millisecond)
				}
				r.Kill(Kill{})
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			st := r.State()
			if diff := cmp.Diff(tc.events, eventTypes(st)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if st.State != tc.state || st.Restarts != tc.restarts || (tc.exitCode >= 0 && st.ExitCode != tc.exitCode) {
				t.Errorf("state %s exit %d restarts %d, want %s exit %d restarts %d", st.State, st.ExitCode, st.Restarts, tc.state, tc.exitCode, tc.restarts)
			}
			if rec := store.get(r.ID()); rec == nil || rec.Handle != nil {
				t.Errorf("record = %+v, want the handle cleared once the run is freed", rec)
			}
			if tc.edit != nil && alloc.Job.TaskGroups[0].Tasks[0].Stdout != "" {
				want := "job1 main nobody\n"
				if b, err := os.ReadFile(filepath.Join(dir, "alloc", "logs", "main.stdout.0")); err != nil || string(b) != want {
					t.Errorf("rotated log = %q (%v), want %q", b, err, want)
				}
				if b, err := os.ReadFile(filepath.Join(outDir, "job1-0.out")); err != nil || string(b) != want {
					t.Errorf("job's stdout file = %q (%v), want %q", b, err, want)
				}
			}
			// What is left of the task's run in the driver's state (the
			// supervisors' shared log is not).
			if entries, _ := os.ReadDir(filepath.Join(base, "exec")); len(entries) != 0 {
				var names []string
				for _, e := range entries {
					if e.Name() != "supervisors.log" {
						names = append(names, e.Name())
					}
				}
				if len(names) > 0 {
					t.Errorf("driver state left behind: %s", strings.Join(names, ", "))
				}
			}
		})
	}
}
