package broker

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

func plan(evalID string, priority int) *caravan.Plan {
	return &caravan.Plan{EvalID: evalID, Priority: priority, JobID: "job-" + evalID}
}

func planIDs(ps []*PendingPlan) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Plan.EvalID)
	}
	return out
}

func TestPlanQueueBatches(t *testing.T) {
	tests := []struct {
		name  string
		plans []*caravan.Plan
		limit int
		want  [][]string
	}{
		{
			name:  "priority then arrival",
			plans: []*caravan.Plan{plan("a", 10), plan("b", 50), plan("c", 50), plan("d", 90)},
			limit: 0,
			want:  [][]string{{"d", "b", "c", "a"}},
		},
		{
			name:  "bounded by the limit",
			plans: []*caravan.Plan{plan("a", 10), plan("b", 50), plan("c", 50), plan("d", 90), plan("e", 10)},
			limit: 2,
			want:  [][]string{{"d", "b"}, {"c", "a"}, {"e"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewPlanQueue()
			q.SetEnabled(true)
			for _, p := range tt.plans {
				if _, err := q.Enqueue(context.Background(), p); err != nil {
					t.Fatal(err)
				}
			}
			if got := q.Stats().Depth; got != len(tt.plans) {
				t.Errorf("depth = %d", got)
			}
			var got [][]string
			for range tt.want {
				batch, err := q.DequeueBatch(context.Background(), tt.limit)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, planIDs(batch))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("batches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPlanQueueRespond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewPlanQueue()
		q.SetEnabled(true)
		results := make(chan *caravan.PlanResult, 1)
		go func() {
			p, err := q.Enqueue(context.Background(), plan("a", 50))
			if err != nil {
				t.Error(err)
				close(results)
				return
			}
			r, err := p.Wait(context.Background())
			if err != nil {
				t.Error(err)
			}
			results <- r
		}()
		batch, err := q.DequeueBatch(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		want := &caravan.PlanResult{AllocIndex: 42}
		batch[0].Respond(want, nil)
		batch[0].Respond(&caravan.PlanResult{AllocIndex: 1}, errors.New("late")) // ignored
		if diff := cmp.Diff(want, <-results); diff != "" {
			t.Errorf("result (-want +got):\n%s", diff)
		}
	})
}

func TestPlanQueueDequeueWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewPlanQueue()
		q.SetEnabled(true)
		got := make(chan []string, 1)
		go func() {
			batch, err := q.DequeueBatch(context.Background(), 0)
			if err != nil {
				t.Error(err)
			}
			got <- planIDs(batch)
		}()
		synctest.Wait()
		select {
		case ids := <-got:
			t.Fatalf("DequeueBatch returned %v from an empty queue", ids)
		default:
		}
		if _, err := q.Enqueue(context.Background(), plan("a", 50)); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"a"}, <-got); diff != "" {
			t.Errorf("batch (-want +got):\n%s", diff)
		}
	})
}

func TestPlanQueueDisable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := NewPlanQueue()
		if _, err := q.Enqueue(context.Background(), plan("a", 50)); !errors.Is(err, ErrDisabled) {
			t.Errorf("Enqueue while disabled = %v, want ErrDisabled", err)
		}
		q.SetEnabled(true)
		p, err := q.Enqueue(context.Background(), plan("a", 50))
		if err != nil {
			t.Fatal(err)
		}
		q.SetEnabled(false)
		if _, err := p.Wait(context.Background()); !errors.Is(err, ErrDisabled) || !errors.Is(err, caravan.ErrNotLeader) {
			t.Errorf("waiting plan got %v, want ErrDisabled", err)
		}

		q.SetEnabled(true)
		errc := make(chan error, 1)
		go func() {
			_, err := q.DequeueBatch(context.Background(), 0)
			errc <- err
		}()
		synctest.Wait()
		q.SetEnabled(false)
		q.SetEnabled(true)
		if err := <-errc; !errors.Is(err, ErrDisabled) {
			t.Errorf("waiting DequeueBatch got %v, want ErrDisabled", err)
		}
		if got := q.Stats().Depth; got != 0 {
			t.Errorf("depth = %d after disable", got)
		}
	})
}

func TestPlanQueueSubmitterGone(t *testing.T) {
	q := NewPlanQueue()
	q.SetEnabled(true)
	ctx, cancel := context.WithCancel(context.Background())
	gone, err := q.Enqueue(ctx, plan("gone", 90))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(context.Background(), plan("kept", 10)); err != nil {
		t.Fatal(err)
	}
	cancel()
	batch, err := q.DequeueBatch(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"kept"}, planIDs(batch)); diff != "" {
		t.Errorf("batch (-want +got):\n%s", diff)
	}
	if _, err := gone.Wait(context.Background()); !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned plan answered %v, want context.Canceled", err)
	}
	if _, err := q.Enqueue(ctx, plan("late", 10)); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue with an ended ctx = %v", err)
	}
}

func TestPlanQueueBadInput(t *testing.T) {
	q := NewPlanQueue()
	q.SetEnabled(true)
	if _, err := q.Enqueue(context.Background(), nil); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("Enqueue(nil) = %v, want ErrInvalid", err)
	}
	var p *PendingPlan
	p.Respond(nil, nil)
	if _, err := p.Wait(context.Background()); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("nil Wait = %v, want ErrInvalid", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.DequeueBatch(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("DequeueBatch(ended ctx) = %v", err)
	}
}
