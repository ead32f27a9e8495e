package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestEvalBrokerConcurrentWorkers runs several workers against a producer
// and checks the broker's promises: never two evaluations of one job in
// flight, every evaluation either acked once or reported cancelable.
func TestEvalBrokerConcurrentWorkers(t *testing.T) {
	const (
		workers     = 4
		jobs        = 50
		evalsPerJob = 20
	)
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, Config{NackTimeout: time.Second, NackDelay: time.Millisecond, DeliveryLimit: 1000})
		ctx, cancel := context.WithCancel(context.Background())

		var (
			mu       sync.Mutex
			inFlight = map[string]string{} // job → eval
			acked    = map[string]int{}
			problems []string
		)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for n := 0; ; n++ {
					e, token, err := b.Dequeue(ctx, []string{"service", "batch"})
					if err != nil {
						if !errors.Is(err, context.Canceled) {
							t.Errorf("worker %d: Dequeue: %v", w, err)
						}
						return
					}
					mu.Lock()
					if other, busy := inFlight[e.JobID]; busy {
						problems = append(problems, fmt.Sprintf("%s delivered while %s in flight", e.ID, other))
					}
					inFlight[e.JobID] = e.ID
					mu.Unlock()

					// Every fifth delivery is given back once.
					nack := n%5 == 0
					mu.Lock()
					delete(inFlight, e.JobID)
					if !nack {
						acked[e.ID]++
					}
					mu.Unlock()
					if nack {
						err = b.Nack(e.ID, token)
					} else {
						err = b.Ack(e.ID, token)
					}
					if err != nil {
						t.Errorf("worker %d: %v", w, err)
					}
				}
			})
		}

		all := map[string]bool{}
		for i := range jobs * evalsPerJob {
			job := fmt.Sprintf("job-%d", i%jobs)
			e := ev(fmt.Sprintf("e%04d", i), job, i%3*10)
			e.ModifyIndex = uint64(i + 1)
			if i%2 == 1 {
				e.Type = "batch"
			}
			all[e.ID] = true
			b.Enqueue(e)
		}

		empty := func(s EvalStats) bool {
			return s.Ready+s.Unacked+s.Pending+s.Waiting+s.Delayed == 0
		}
		for i := 0; !empty(b.Stats()); i++ {
			if i == 10_000 {
				t.Fatalf("work never finished: %+v", b.Stats())
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
		}
		cancel()
		wg.Wait()

		if len(problems) > 0 {
			t.Errorf("one-per-job broken:\n%v", problems)
		}
		cancelled := drainNow(t, b.WaitCancelable)
		seen := map[string]bool{}
		for id, n := range acked {
			if n != 1 {
				t.Errorf("%s acked %d times", id, n)
			}
			seen[id] = true
		}
		for _, id := range cancelled {
			if seen[id] {
				t.Errorf("%s both acked and cancelable", id)
			}
			seen[id] = true
		}
		if diff := cmp.Diff(all, seen); diff != "" {
			t.Errorf("evaluations neither acked nor cancelable (-want +got):\n%s", diff)
		}
		if len(acked) < jobs {
			t.Errorf("acked %d evaluations, want at least one per job (%d)", len(acked), jobs)
		}
	})
}
