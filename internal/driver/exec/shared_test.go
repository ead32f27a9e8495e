package exec

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
)

// TestSharedSupervisors runs several tasks on one supervisor: they start
// on the fullest supervisor with room, a stop reaches only the task it
// names, a full supervisor makes a new one start, and the kill -9 of a
// shared supervisor loses exactly the tasks it held.
func TestSharedSupervisors(t *testing.T) {
	h := newHarness(t)
	h.perSupervisor = 3
	d := h.newDriver()

	var cfgs []string
	var states []handleState
	for range 4 {
		cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "exec sleep 300"}})
		_, st := h.start(d, cfg)
		cfgs, states = append(cfgs, cfg.ID), append(states, st)
	}
	first := states[0].SupervisorPid
	for i, st := range states[:3] {
		if st.SupervisorPid != first {
			t.Errorf("task %d runs on supervisor %d, want the first one, %d", i, st.SupervisorPid, first)
		}
	}
	if states[3].SupervisorPid == first {
		t.Fatalf("a fourth task went to the full supervisor %d (3 tasks each)", first)
	}

	// A stop reaches only its task.
	if err := d.Stop(context.Background(), cfgs[1], 2*time.Second, 0); err != nil {
		t.Fatal(err)
	}
	if res := h.wait(d, cfgs[1]); !res.Killed || res.State() != caravan.TaskStateCancelled {
		t.Errorf("stopped task result = %+v, want killed", res)
	}
	for _, i := range []int{0, 2, 3} {
		if !alive(states[i].TaskPid) {
			t.Errorf("task %d (pid %d) ended with another task's stop", i, states[i].TaskPid)
		}
	}
	if err := d.Destroy(context.Background(), cfgs[1]); err != nil {
		t.Fatal(err)
	}

	// The freed room is taken before a new supervisor starts.
	cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "exec sleep 300"}})
	_, st := h.start(d, cfg)
	if st.SupervisorPid != first {
		t.Errorf("a task started on supervisor %d while the first, %d, had room", st.SupervisorPid, first)
	}
	cfgs, states = append(cfgs, cfg.ID), append(states, st)

	// kill -9 of the first supervisor loses its three tasks, and only them.
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, i := range []int{0, 2, 4} {
		_, err := d.Wait(ctx, cfgs[i])
		var lost *LostError
		if !errors.As(err, &lost) {
			t.Errorf("task %d on the killed supervisor: Wait = %v, want a LostError", i, err)
		}
		if alive(states[i].TaskPid) {
			t.Errorf("task %d (pid %d) outlived its supervisor", i, states[i].TaskPid)
		}
	}
	if !alive(states[3].TaskPid) {
		t.Errorf("the task on the other supervisor (pid %d) ended too", states[3].TaskPid)
	}
	// New work still starts after the loss.
	cfg = h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "exit 3"}})
	h.start(d, cfg)
	if res := h.wait(d, cfg.ID); res.ExitCode != 3 {
		t.Errorf("task after the loss: %+v, want exit 3", res)
	}
}
