package docker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/caravan-sched/caravan/internal/testimage"
)

// BenchmarkStart measures Start of a busybox `true`: image check, create,
// start and inspect, until the container runs (ms/start), and the whole
// run until Wait returns and the container is removed (ns/op).
func BenchmarkStart(b *testing.B) {
	e := &env{client: testimage.Client(b), image: testimage.Busybox(context.Background(), b, "driver-docker-bench")}
	d, err := New(Config{Client: e.client})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	var starting time.Duration
	b.ResetTimer()
	for i := range b.N {
		cfg := e.task(b, fmt.Sprintf("bench%d", i), "/bin/true")
		t0 := time.Now()
		start(b, d, cfg)
		starting += time.Since(t0)
		wait(b, d, cfg.ID)
	}
	b.StopTimer()
	b.ReportMetric(float64(starting.Milliseconds())/float64(b.N), "ms/start")
}
