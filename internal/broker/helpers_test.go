package broker

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
)

// testConfig has round numbers, so tests read as arithmetic.
var testConfig = Config{
	NackTimeout:   10 * time.Second,
	DeliveryLimit: 3,
	NackDelay:     1 * time.Second,
	MaxNackDelay:  3 * time.Second,
}

// startBroker returns an enabled broker whose Run goroutine ends with the
// test. Inside a synctest bubble, call it inside the bubble.
func startBroker(t *testing.T, cfg Config) *EvalBroker {
	t.Helper()
	b := NewEvalBroker(cfg)
	b.SetEnabled(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b
}

// ev makes a pending service evaluation.
func ev(id, job string, priority int) *caravan.Evaluation {
	return &caravan.Evaluation{
		ID:       id,
		JobID:    job,
		Priority: priority,
		Type:     "service",
		Status:   caravan.EvalStatusPending,
	}
}

// with applies changes to an evaluation, for table rows.
func with(e *caravan.Evaluation, change func(*caravan.Evaluation)) *caravan.Evaluation {
	change(e)
	return e
}

// tryDequeue dequeues without waiting: it returns "" when nothing is ready.
func tryDequeue(t *testing.T, b *EvalBroker, types ...string) (id, token string) {
	t.Helper()
	if len(types) == 0 {
		types = []string{"service"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e, token, err := b.Dequeue(ctx, types)
	switch {
	case errors.Is(err, context.Canceled):
		return "", ""
	case err != nil:
		t.Fatalf("Dequeue: %v", err)
	}
	return e.ID, token
}

// mustDequeue dequeues and fails the test when nothing is ready.
func mustDequeue(t *testing.T, b *EvalBroker, types ...string) (id, token string) {
	t.Helper()
	id, token = tryDequeue(t, b, types...)
	if id == "" {
		t.Fatalf("Dequeue: nothing ready; stats %+v", b.Stats())
	}
	return id, token
}

// ids lists the evaluations' ids.
func ids(evals []*caravan.Evaluation) []string {
	var out []string
	for _, e := range evals {
		out = append(out, e.ID)
	}
	return out
}

// drainNow takes what a drain list holds right now, without waiting.
func drainNow(t *testing.T, wait func(context.Context, int) ([]*caravan.Evaluation, error)) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	evals, err := wait(ctx, 0)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("drain: %v", err)
	}
	return ids(evals)
}

// recorder is an Enqueuer that keeps what it was given.
type recorder struct {
	mu    sync.Mutex
	evals []*caravan.Evaluation
}

func (r *recorder) EnqueueAll(evals []*caravan.Evaluation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evals = append(r.evals, evals...)
}

// take returns and forgets what was enqueued so far.
func (r *recorder) take() []*caravan.Evaluation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.evals
	r.evals = nil
	return out
}
