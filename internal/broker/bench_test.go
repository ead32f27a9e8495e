package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/caravan-sched/caravan"
)

const benchEvals = 10_000

func benchEvalSet() []*caravan.Evaluation {
	evals := make([]*caravan.Evaluation, benchEvals)
	for i := range evals {
		evals[i] = ev(caravan.NewID(), fmt.Sprintf("job-%d", i), i%100)
	}
	return evals
}

// BenchmarkEvalBroker enqueues 10,000 evaluations of distinct jobs, then
// dequeues and acks them all, with one and with several workers. One
// iteration is the whole 10,000.
func BenchmarkEvalBroker(b *testing.B) {
	evals := benchEvalSet()
	for _, workers := range []int{1, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			ctx := context.Background()
			types := []string{"service"}
			for b.Loop() {
				br := NewEvalBroker(Config{})
				br.SetEnabled(true)
				for _, e := range evals {
					br.Enqueue(e)
				}
				var wg sync.WaitGroup
				per := benchEvals / workers
				for range workers {
					wg.Go(func() {
						for range per {
							e, token, err := br.Dequeue(ctx, types)
							if err != nil {
								b.Error(err)
								return
							}
							if err := br.Ack(e.ID, token); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(benchEvals*b.N)/b.Elapsed().Seconds(), "evals/s")
		})
	}
}

// BenchmarkPlanQueue has submitters enqueue 10,000 plans and wait for their
// results while one applier takes batches of up to 100 and responds. One
// iteration is the whole 10,000.
func BenchmarkPlanQueue(b *testing.B) {
	const plans, batchMax, submitters = 10_000, 100, 8
	ps := make([]*caravan.Plan, plans)
	for i := range ps {
		ps[i] = plan(fmt.Sprint(i), i%100)
	}
	result := &caravan.PlanResult{}
	ctx := context.Background()
	batches := 0
	for b.Loop() {
		q := NewPlanQueue()
		q.SetEnabled(true)
		var wg sync.WaitGroup
		per := plans / submitters
		for s := range submitters {
			wg.Go(func() {
				for _, p := range ps[s*per : (s+1)*per] {
					pending, err := q.Enqueue(ctx, p)
					if err != nil {
						b.Error(err)
						return
					}
					if _, err := pending.Wait(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		for done := 0; done < plans; {
			batch, err := q.DequeueBatch(ctx, batchMax)
			if err != nil {
				b.Fatal(err)
			}
			for _, p := range batch {
				p.Respond(result, nil)
			}
			done += len(batch)
			batches++
		}
		wg.Wait()
	}
	b.ReportMetric(float64(plans*b.N)/b.Elapsed().Seconds(), "plans/s")
	b.ReportMetric(float64(plans*b.N)/float64(batches), "plans/batch")
}

// BenchmarkPlanQueueBatch is the queue alone: enqueue 10,000 plans, then
// take them in batches of 100.
func BenchmarkPlanQueueBatch(b *testing.B) {
	const plans, batchMax = 10_000, 100
	ps := make([]*caravan.Plan, plans)
	for i := range ps {
		ps[i] = plan(fmt.Sprint(i), i%100)
	}
	ctx := context.Background()
	for b.Loop() {
		q := NewPlanQueue()
		q.SetEnabled(true)
		for _, p := range ps {
			if _, err := q.Enqueue(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
		for done := 0; done < plans; {
			batch, err := q.DequeueBatch(ctx, batchMax)
			if err != nil {
				b.Fatal(err)
			}
			done += len(batch)
		}
	}
	b.ReportMetric(float64(plans*b.N)/b.Elapsed().Seconds(), "plans/s")
}
