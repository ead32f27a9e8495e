package exec

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// pss reads a process's proportional set size in kB from smaps_rollup.
func pss(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "Pss:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no Pss in smaps_rollup of %d", pid)
}

// BenchmarkPSS starts CARAVAN_PSS_TASKS (default 50) concurrent `sleep 600`
// tasks through the real caravan binary and reports the memory of each:
// supervisor plus task, as proportional set size. Run it once:
//
//	go test -run - -bench PSS -benchtime 1x ./internal/driver/exec
func BenchmarkPSS(b *testing.B) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("CARAVAN_PSS_TASKS")); err == nil && v > 0 {
		n = v
	}
	h := newHarness(b)
	h.supervisor = []string{testenv.CaravanBinary(b), "supervise"}
	d := h.newDriver()
	for range b.N {
		var states []handleState
		for range n {
			cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "sleep", Args: []string{"600"}}})
			_, st := h.start(d, cfg)
			states = append(states, st)
		}
		time.Sleep(2 * time.Second) // let every supervisor settle
		var sup, task int64
		for _, st := range states {
			s, err := pss(st.SupervisorPid)
			if err != nil {
				b.Fatal(err)
			}
			p, err := pss(st.TaskPid)
			if err != nil {
				b.Fatal(err)
			}
			sup += s
			task += p
		}
		if roll, err := os.ReadFile("/proc/" + strconv.Itoa(states[0].SupervisorPid) + "/smaps_rollup"); err == nil {
			b.Logf("first supervisor's smaps_rollup:\n%s", roll)
		}
		b.ReportMetric(float64(sup+task)/float64(n)/1024, "MB/task")
		b.ReportMetric(float64(sup)/float64(n)/1024, "supervisor-MB/task")
		b.ReportMetric(float64(n), "tasks")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for id := range d.taskIDs() {
			if err := d.Destroy(ctx, id); err != nil {
				b.Error(err)
			}
		}
		cancel()
	}
}

// BenchmarkStartWaitTrue measures Start to Wait's return for /bin/true
// through the real caravan binary, and reports the median.
func BenchmarkStartWaitTrue(b *testing.B) {
	h := newHarness(b)
	h.supervisor = []string{testenv.CaravanBinary(b), "supervise"}
	d := h.newDriver()
	var took []time.Duration
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		cfg := h.taskConfig(&caravan.Task{Config: caravan.TaskConfig{Command: "/bin/true"}})
		t0 := time.Now()
		if _, err := d.Start(ctx, cfg); err != nil {
			b.Fatal(err)
		}
		res, err := d.Wait(ctx, cfg.ID)
		if err != nil || !res.Successful() {
			b.Fatalf("Wait = %+v, %v", res, err)
		}
		took = append(took, time.Since(t0))
		if err := d.Destroy(ctx, cfg.ID); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
}

// taskIDs lists the tasks the driver knows.
func (d *Driver) taskIDs() map[string]struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make(map[string]struct{}, len(d.tasks))
	for id, t := range d.tasks {
		if t != nil {
			ids[id] = struct{}{}
		}
	}
	return ids
}
