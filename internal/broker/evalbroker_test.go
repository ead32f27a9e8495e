package broker

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

func TestEvalBrokerOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) func(*caravan.Evaluation) {
		return func(e *caravan.Evaluation) { e.SubmitTime = t0.Add(d) }
	}
	tests := []struct {
		name  string
		evals []*caravan.Evaluation
		want  []string
	}{
		{
			name:  "higher priority first",
			evals: []*caravan.Evaluation{ev("a", "j1", 10), ev("b", "j2", 90), ev("c", "j3", 50)},
			want:  []string{"b", "c", "a"},
		},
		{
			name: "older submit time first at equal priority",
			evals: []*caravan.Evaluation{
				with(ev("a", "j1", 50), at(3*time.Second)),
				with(ev("b", "j2", 50), at(1*time.Second)),
				with(ev("c", "j3", 50), at(2*time.Second)),
			},
			want: []string{"b", "c", "a"},
		},
		{
			name: "priority beats submit time",
			evals: []*caravan.Evaluation{
				with(ev("old", "j1", 10), at(0)),
				with(ev("new", "j2", 20), at(time.Hour)),
			},
			want: []string{"new", "old"},
		},
		{
			name: "create index breaks ties",
			evals: []*caravan.Evaluation{
				with(ev("a", "j1", 50), func(e *caravan.Evaluation) { e.CreateIndex = 9 }),
				with(ev("b", "j2", 50), func(e *caravan.Evaluation) { e.CreateIndex = 7 }),
				with(ev("c", "j3", 50), func(e *caravan.Evaluation) { e.CreateIndex = 8 }),
			},
			want: []string{"b", "c", "a"},
		},
		{
			name: "across types the best comes first",
			evals: []*caravan.Evaluation{
				ev("svc", "j1", 50),
				with(ev("bat", "j2", 70), func(e *caravan.Evaluation) { e.Type = "batch" }),
				with(ev("sys", "j3", 60), func(e *caravan.Evaluation) { e.Type = "system" }),
			},
			want: []string{"bat", "svc"}, // system is not asked for
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewEvalBroker(testConfig)
			b.SetEnabled(true)
			b.EnqueueAll(tt.evals)
			var got []string
			for range len(tt.evals) {
				id, _ := tryDequeue(t, b, "service", "batch")
				if id == "" {
					break
				}
				got = append(got, id)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("dequeue order (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEvalBrokerOnePerJob(t *testing.T) {
	b := NewEvalBroker(testConfig)
	b.SetEnabled(true)
	mod := func(i uint64) func(*caravan.Evaluation) {
		return func(e *caravan.Evaluation) { e.ModifyIndex = i; e.CreateIndex = i }
	}
	b.EnqueueAll([]*caravan.Evaluation{
		with(ev("first", "web", 50), mod(1)),
		with(ev("second", "web", 50), mod(2)),
		with(ev("third", "web", 50), mod(3)),
		with(ev("other", "db", 10), mod(4)),
	})
	id, token := mustDequeue(t, b)
	if id != "first" {
		t.Fatalf("first delivery = %q, want first", id)
	}
	if id, _ := mustDequeue(t, b); id != "other" {
		t.Fatalf("second delivery = %q, want other (web is in flight)", id)
	}
	if id, _ := tryDequeue(t, b); id != "" {
		t.Fatalf("delivered %q while web is in flight", id)
	}
	// An older evaluation arriving late is itself the one to cancel.
	b.Enqueue(with(ev("stale", "web", 50), mod(2)))

	want := EvalStats{Unacked: 2, Pending: 1, Cancelable: 2}
	if diff := cmp.Diff(want, b.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"second", "stale"}, drainNow(t, b.WaitCancelable)); diff != "" {
		t.Errorf("cancelable (-want +got):\n%s", diff)
	}
	if err := b.Ack("first", token); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if id, _ := mustDequeue(t, b); id != "third" {
		t.Errorf("after ack delivered %q, want third", id)
	}
}

func TestEvalBrokerBadInput(t *testing.T) {
	b := NewEvalBroker(Config{})
	b.SetEnabled(true)
	b.Enqueue(nil)
	b.Enqueue(&caravan.Evaluation{})
	b.Enqueue(with(ev("done", "j", 50), func(e *caravan.Evaluation) { e.Status = caravan.EvalStatusComplete }))
	b.EnqueueAll([]*caravan.Evaluation{nil, ev("a", "j", 50), ev("a", "j", 50)})
	if diff := cmp.Diff(EvalStats{Ready: 1, ReadyByType: map[string]int{"service": 1}}, b.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if _, _, err := b.Dequeue(context.Background(), nil); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("Dequeue(nil types) = %v, want ErrInvalid", err)
	}
	if got := b.Enabled(); !got {
		t.Errorf("Enabled = false")
	}
}

func TestEvalBrokerTokens(t *testing.T) {
	tests := []struct {
		name string
		// op runs against a broker with "a" delivered under token.
		op   func(b *EvalBroker, token string) error
		want error
	}{
		{"ack", func(b *EvalBroker, tok string) error { return b.Ack("a", tok) }, nil},
		{"ack wrong token", func(b *EvalBroker, _ string) error { return b.Ack("a", "nope") }, ErrNotOutstanding},
		{"ack empty token", func(b *EvalBroker, _ string) error { return b.Ack("a", "") }, ErrNotOutstanding},
		{"ack unknown eval", func(b *EvalBroker, tok string) error { return b.Ack("zzz", tok) }, ErrNotOutstanding},
		{"ack twice", func(b *EvalBroker, tok string) error {
			if err := b.Ack("a", tok); err != nil {
				return err
			}
			return b.Ack("a", tok)
		}, ErrNotOutstanding},
		{"nack then ack", func(b *EvalBroker, tok string) error {
			if err := b.Nack("a", tok); err != nil {
				return err
			}
			return b.Ack("a", tok)
		}, ErrNotOutstanding},
		{"nack wrong token", func(b *EvalBroker, _ string) error { return b.Nack("a", "nope") }, ErrNotOutstanding},
		{"reset wrong token", func(b *EvalBroker, _ string) error { return b.OutstandingReset("a", "x") }, ErrNotOutstanding},
		{"pause wrong token", func(b *EvalBroker, _ string) error { return b.PauseNackTimeout("a", "x") }, ErrNotOutstanding},
		{"resume wrong token", func(b *EvalBroker, _ string) error { return b.ResumeNackTimeout("a", "x") }, ErrNotOutstanding},
		{"reset", func(b *EvalBroker, tok string) error { return b.OutstandingReset("a", tok) }, nil},
		{"ack while disabled", func(b *EvalBroker, tok string) error {
			b.SetEnabled(false)
			return b.Ack("a", tok)
		}, ErrDisabled},
		{"ack old token after a leadership flap", func(b *EvalBroker, tok string) error {
			b.SetEnabled(false)
			b.SetEnabled(true)
			b.Enqueue(ev("a", "j", 50))
			mustDequeue(t, b)
			return b.Ack("a", tok)
		}, ErrNotOutstanding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewEvalBroker(testConfig)
			b.SetEnabled(true)
			b.Enqueue(ev("a", "j", 50))
			_, token := mustDequeue(t, b)
			err := tt.op(b, token)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if !errors.Is(ErrNotOutstanding, caravan.ErrConflict) || !errors.Is(ErrDisabled, caravan.ErrNotLeader) {
		t.Errorf("broker errors do not match the domain sentinels")
	}
}

func TestEvalBrokerNackDelayAndLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		b.Enqueue(ev("a", "j", 50))
		b.Enqueue(with(ev("b", "j", 50), func(e *caravan.Evaluation) { e.ModifyIndex = 5 }))

		// Delays grow 1s, 2s, then the third delivery is the last.
		for i, delay := range []time.Duration{1 * time.Second, 2 * time.Second} {
			id, token := mustDequeue(t, b)
			if id != "a" {
				t.Fatalf("delivery %d = %q, want a", i+1, id)
			}
			if err := b.Nack("a", token); err != nil {
				t.Fatalf("Nack: %v", err)
			}
			time.Sleep(delay - time.Millisecond)
			synctest.Wait()
			if s := b.Stats(); s.Waiting != 1 || s.Ready != 0 {
				t.Fatalf("before the delay of %v: %+v", delay, s)
			}
			time.Sleep(time.Millisecond)
			synctest.Wait()
			if s := b.Stats(); s.Ready != 1 {
				t.Fatalf("after the delay of %v: %+v", delay, s)
			}
		}
		_, token := mustDequeue(t, b)
		if err := b.Nack("a", token); err != nil {
			t.Fatalf("Nack: %v", err)
		}
		if diff := cmp.Diff([]string{"a"}, drainNow(t, b.WaitFailed)); diff != "" {
			t.Errorf("failed (-want +got):\n%s", diff)
		}
		// The failed evaluation frees its job.
		if id, _ := mustDequeue(t, b); id != "b" {
			t.Errorf("after the failure delivered %q, want b", id)
		}
	})
}

func TestEvalBrokerNackTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		b.Enqueue(ev("a", "j", 50))
		_, first := mustDequeue(t, b)

		time.Sleep(testConfig.NackTimeout - time.Millisecond)
		synctest.Wait()
		if s := b.Stats(); s.Unacked != 1 {
			t.Fatalf("before the nack timeout: %+v", s)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if s := b.Stats(); s.Waiting != 1 {
			t.Fatalf("after the nack timeout: %+v", s)
		}
		if err := b.Ack("a", first); !errors.Is(err, ErrNotOutstanding) {
			t.Errorf("Ack of the timed-out delivery = %v, want ErrNotOutstanding", err)
		}
		time.Sleep(testConfig.NackDelay)
		synctest.Wait()
		_, second := mustDequeue(t, b)
		if second == first {
			t.Fatalf("redelivery reused the token")
		}
		if err := b.Ack("a", second); err != nil {
			t.Errorf("Ack of the redelivery: %v", err)
		}
	})
}

func TestEvalBrokerOutstandingReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		b.Enqueue(ev("a", "j", 50))
		_, token := mustDequeue(t, b)
		almost := testConfig.NackTimeout * 9 / 10
		for range 3 {
			time.Sleep(almost)
			if err := b.OutstandingReset("a", token); err != nil {
				t.Fatalf("OutstandingReset: %v", err)
			}
		}
		time.Sleep(almost)
		synctest.Wait()
		if err := b.Ack("a", token); err != nil {
			t.Errorf("Ack after resets: %v", err)
		}
	})
}

func TestEvalBrokerPauseNackTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		b.Enqueue(ev("a", "j", 50))
		_, token := mustDequeue(t, b)
		if err := b.PauseNackTimeout("a", token); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * testConfig.NackTimeout)
		synctest.Wait()
		if s := b.Stats(); s.Unacked != 1 {
			t.Fatalf("paused delivery timed out: %+v", s)
		}
		if err := b.ResumeNackTimeout("a", token); err != nil {
			t.Fatal(err)
		}
		time.Sleep(testConfig.NackTimeout)
		synctest.Wait()
		if s := b.Stats(); s.Waiting != 1 {
			t.Fatalf("resumed delivery did not time out: %+v", s)
		}
	})
}

func TestEvalBrokerWaitUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		due := time.Now().Add(time.Minute)
		b.Enqueue(with(ev("later", "j", 90), func(e *caravan.Evaluation) { e.WaitUntil = due }))
		b.Enqueue(with(ev("past", "k", 10), func(e *caravan.Evaluation) { e.WaitUntil = due.Add(-time.Hour) }))
		if s := b.Stats(); s.Delayed != 1 || s.Ready != 1 {
			t.Fatalf("stats: %+v", s)
		}
		if id, token := mustDequeue(t, b); id != "past" {
			t.Fatalf("delivered %q, want past (WaitUntil already passed)", id)
		} else if err := b.Ack(id, token); err != nil {
			t.Fatal(err)
		}

		got := make(chan string, 1)
		go func() {
			e, _, err := b.Dequeue(context.Background(), []string{"service"})
			if err != nil {
				got <- err.Error()
				return
			}
			got <- e.ID
		}()
		time.Sleep(time.Until(due) - time.Millisecond)
		synctest.Wait()
		select {
		case id := <-got:
			t.Fatalf("delivered %q before its WaitUntil", id)
		default:
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		select {
		case id := <-got:
			if id != "later" {
				t.Errorf("delivered %q, want later", id)
			}
		default:
			t.Fatalf("nothing delivered at WaitUntil; stats %+v", b.Stats())
		}
	})
}

func TestEvalBrokerDelayedWaitsForItsJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		b.Enqueue(ev("now", "j", 50))
		b.Enqueue(with(ev("later", "j", 50), func(e *caravan.Evaluation) {
			e.WaitUntil = time.Now().Add(time.Second)
			e.ModifyIndex = 9
		}))
		_, token := mustDequeue(t, b)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Pending != 1 || s.Ready != 0 {
			t.Fatalf("due evaluation of a busy job: %+v", s)
		}
		if err := b.Ack("now", token); err != nil {
			t.Fatal(err)
		}
		if id, _ := mustDequeue(t, b); id != "later" {
			t.Errorf("delivered %q, want later", id)
		}
	})
}

func TestEvalBrokerDisableMidFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		b.Enqueue(ev("a", "j", 50))
		b.Enqueue(with(ev("d", "k", 50), func(e *caravan.Evaluation) { e.WaitUntil = time.Now().Add(time.Hour) }))
		_, token := mustDequeue(t, b)

		errs := make(chan error, 3)
		go func() {
			_, _, err := b.Dequeue(context.Background(), []string{"batch"})
			errs <- err
		}()
		go func() {
			_, err := b.WaitFailed(context.Background(), 0)
			errs <- err
		}()
		go func() {
			_, err := b.WaitCancelable(context.Background(), 0)
			errs <- err
		}()
		synctest.Wait()
		// Off and on again before the waiters run: they still fail, as
		// they waited for the previous term.
		b.SetEnabled(false)
		b.SetEnabled(true)
		for range 3 {
			if err := <-errs; !errors.Is(err, ErrDisabled) {
				t.Errorf("waiter got %v, want ErrDisabled", err)
			}
		}
		if err := b.Ack("a", token); !errors.Is(err, ErrNotOutstanding) {
			t.Errorf("Ack from the previous term = %v, want ErrNotOutstanding", err)
		}
		if diff := cmp.Diff(EvalStats{}, b.Stats()); diff != "" {
			t.Errorf("stats after re-enable (-want +got):\n%s", diff)
		}
		b.SetEnabled(false)
		b.Enqueue(ev("ignored", "j", 50))
		if _, _, err := b.Dequeue(context.Background(), []string{"service"}); !errors.Is(err, ErrDisabled) {
			t.Errorf("Dequeue while disabled = %v, want ErrDisabled", err)
		}
		b.SetEnabled(true)
		// The delayed evaluation of the old term never comes back.
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		if diff := cmp.Diff(EvalStats{}, b.Stats()); diff != "" {
			t.Errorf("stats (-want +got):\n%s", diff)
		}
	})
}

func TestEvalBrokerDequeueContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := startBroker(t, testConfig)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _, err := b.Dequeue(ctx, []string{"service"})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Dequeue = %v, want DeadlineExceeded", err)
		}
		// Work enqueued after the waiter left is still there for the next.
		b.Enqueue(ev("a", "j", 50))
		if id, _ := mustDequeue(t, b); id != "a" {
			t.Errorf("delivered %q", id)
		}
	})
}

func TestEvalBrokerWaitFailedLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig
		cfg.DeliveryLimit = 1
		b := startBroker(t, cfg)
		for _, id := range []string{"a", "b", "c"} {
			b.Enqueue(ev(id, id, 50))
			_, token := mustDequeue(t, b)
			if err := b.Nack(id, token); err != nil {
				t.Fatal(err)
			}
		}
		got, err := b.WaitFailed(context.Background(), 2)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"a", "b"}, ids(got)); diff != "" {
			t.Errorf("first drain (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"c"}, drainNow(t, b.WaitFailed)); diff != "" {
			t.Errorf("second drain (-want +got):\n%s", diff)
		}
	})
}

func TestNackDelayGrows(t *testing.T) {
	b := NewEvalBroker(Config{NackDelay: time.Second, MaxNackDelay: 5 * time.Second, DeliveryLimit: 100})
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, b.nackDelay(n))
	}
	want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second, 5 * time.Second}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("delays (-want +got):\n%s", diff)
	}
}
