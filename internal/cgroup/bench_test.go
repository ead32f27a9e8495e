package cgroup

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan/internal/testenv"
)

// BenchmarkLifecycle measures what one task costs the cgroup layer: create
// a group with limits, start /bin/true inside it, wait, kill, delete. The
// phases are reported separately (v1 pays an RCU grace period for moving
// this process in and out of a group).
func BenchmarkLifecycle(b *testing.B) {
	testenv.RequireCgroups(b)
	m, err := NewManager(0, "")
	if err != nil {
		b.Fatal(err)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	attr := &syscall.ProcAttr{Files: []uintptr{devnull.Fd(), devnull.Fd(), devnull.Fd()}}
	var create, start, del time.Duration
	for i := range b.N {
		name := fmt.Sprintf("%s/bench-%d-%d", testParent, os.Getpid(), i)
		t0 := time.Now()
		g, err := m.Create(name, Limits{MemoryBytes: 64 << 20, CPUShares: 100})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		pid, err := g.ForkExec("/bin/true", []string{"true"}, attr)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := syscall.Wait4(pid, nil, 0, nil); err != nil {
			b.Fatal(err)
		}
		if err := g.Kill(context.Background()); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if err := g.Delete(); err != nil {
			b.Fatal(err)
		}
		create += t1.Sub(t0)
		start += t2.Sub(t1)
		del += time.Since(t3)
	}
	b.ReportMetric(float64(create.Microseconds())/float64(b.N)/1000, "create-ms")
	b.ReportMetric(float64(start.Microseconds())/float64(b.N)/1000, "forkexec-ms")
	b.ReportMetric(float64(del.Microseconds())/float64(b.N)/1000, "delete-ms")
	if m.Version() == V1 {
		for _, c := range m.controllers {
			_ = os.Remove(fmt.Sprintf("%s/%s/%s", m.root, c, testParent))
		}
	} else {
		_ = os.Remove(m.root + "/" + testParent)
	}
}
