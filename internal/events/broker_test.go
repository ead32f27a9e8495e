package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

func ev(topic Topic, key string, index uint64, filterKeys ...string) Event {
	return Event{Topic: topic, Type: "T", Key: key, Index: index, FilterKeys: filterKeys}
}

func TestFilterMatch(t *testing.T) {
	alloc := ev(TopicAllocation, "a1", 5, "job1", "node1")
	tests := []struct {
		name   string
		filter Filter
		want   bool
	}{
		{"nil matches all", nil, true},
		{"topic without keys", Filter{TopicAllocation: nil}, true},
		{"other topic", Filter{TopicJob: nil}, false},
		{"key", Filter{TopicAllocation: {"a1"}}, true},
		{"filter key", Filter{TopicAllocation: {"job1"}}, true},
		{"wrong key", Filter{TopicAllocation: {"job2"}}, false},
		{"star key", Filter{TopicAllocation: {"*"}}, true},
		{"all topics", Filter{TopicAll: nil}, true},
		{"all topics with key", Filter{TopicAll: {"node1"}}, true},
		{"all topics wrong key", Filter{TopicAll: {"node2"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.filter.Match(&alloc); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func next(t *testing.T, sub *Subscription) []Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return evs
}

func indexes(evs []Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		out = append(out, e.Index)
	}
	return out
}

func TestDeliveredInOrderAndFiltered(t *testing.T) {
	b := NewBroker(16)
	sub, err := b.Subscribe(SubscribeRequest{Filter: Filter{TopicJob: nil}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	b.Publish([]Event{ev(TopicJob, "j1", 1), ev(TopicNode, "n1", 1)})
	b.Publish([]Event{ev(TopicJob, "j2", 2)})
	b.Publish([]Event{ev(TopicJob, "j3", 3), ev(TopicJob, "j4", 3)})
	var got []string
	for len(got) < 4 {
		for _, e := range next(t, sub) {
			got = append(got, e.Key)
		}
	}
	if diff := cmp.Diff([]string{"j1", "j2", "j3", "j4"}, got); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}

func TestSubscribeFromIndex(t *testing.T) {
	tests := []struct {
		name    string
		from    uint64
		want    []uint64
		wantErr error
	}{
		{"replays newer events", 3, []uint64{4, 5, 6}, nil},
		{"from the newest dropped index", 2, []uint64{3, 4, 5, 6}, nil},
		{"too old", 1, nil, caravan.ErrConflict},
		{"up to date", 6, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBroker(4)
			for i := uint64(1); i <= 6; i++ {
				b.Publish([]Event{ev(TopicJob, "j", i)})
			}
			sub, err := b.Subscribe(SubscribeRequest{FromIndex: tt.from})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Subscribe error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer sub.Close()
			b.Publish([]Event{ev(TopicJob, "j", 7)})
			got := next(t, sub)
			if diff := cmp.Diff(append(tt.want, 7), indexes(got)); diff != "" {
				t.Errorf("indexes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSlowSubscriberIsCutOff(t *testing.T) {
	b := NewBroker(100)
	slow, err := b.Subscribe(SubscribeRequest{BufferSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := b.Subscribe(SubscribeRequest{BufferSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	b.Publish([]Event{ev(TopicJob, "j", 1)})
	if got := next(t, slow); len(got) != 1 {
		t.Fatalf("first batch has %d events, want 1", len(got))
	}
	// The publisher never blocks, however far behind slow falls.
	for i := uint64(2); i <= 10; i++ {
		b.Publish([]Event{ev(TopicJob, "j", i)})
	}
	_, err = slow.Next(context.Background())
	if !errors.Is(err, caravan.ErrUnavailable) {
		t.Fatalf("slow Next error = %v, want ErrUnavailable", err)
	}
	if want := "reconnect from index 1"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if got := indexes(next(t, fast)); len(got) != 10 {
		t.Errorf("fast subscriber got %v, want 10 events", got)
	}
	// Reconnecting from the last index seen replays the rest.
	again, err := b.Subscribe(SubscribeRequest{FromIndex: 1, BufferSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if diff := cmp.Diff([]uint64{2, 3, 4, 5, 6, 7, 8, 9, 10}, indexes(next(t, again))); diff != "" {
		t.Errorf("replay (-want +got):\n%s", diff)
	}
}

func TestNextEndsWithContext(t *testing.T) {
	b := NewBroker(4)
	sub, err := b.Subscribe(SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := sub.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next error = %v, want deadline exceeded", err)
	}
}

func TestResetAndClose(t *testing.T) {
	b := NewBroker(4)
	b.Publish([]Event{ev(TopicJob, "j", 1)})
	sub, err := b.Subscribe(SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b.Reset(50)
	if _, err := sub.Next(context.Background()); !errors.Is(err, caravan.ErrConflict) {
		t.Errorf("Next after Reset = %v, want ErrConflict", err)
	}
	if _, err := b.Subscribe(SubscribeRequest{FromIndex: 10}); !errors.Is(err, caravan.ErrConflict) {
		t.Errorf("Subscribe below the reset index = %v, want ErrConflict", err)
	}
	sub2, err := b.Subscribe(SubscribeRequest{FromIndex: 50})
	if err != nil {
		t.Fatalf("Subscribe at the reset index: %v", err)
	}
	sub2.Close()
	sub2.Close()
	if _, err := sub2.Next(context.Background()); !errors.Is(err, caravan.ErrUnavailable) {
		t.Errorf("Next after Close = %v, want ErrUnavailable", err)
	}
	sub3, err := b.Subscribe(SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Publish([]Event{ev(TopicJob, "j", 51)})
	if _, err := sub3.Next(context.Background()); !errors.Is(err, caravan.ErrUnavailable) {
		t.Errorf("Next after broker Close = %v, want ErrUnavailable", err)
	}
	if _, err := b.Subscribe(SubscribeRequest{}); !errors.Is(err, caravan.ErrUnavailable) {
		t.Errorf("Subscribe after Close = %v, want ErrUnavailable", err)
	}
}

func TestConcurrentPublishAndRead(t *testing.T) {
	b := NewBroker(1024)
	sub, err := b.Subscribe(SubscribeRequest{BufferSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	const n = 2000
	go func() {
		for i := uint64(1); i <= n; i++ {
			b.Publish([]Event{ev(TopicJob, "j", i)})
		}
	}()
	var want uint64 = 1
	for want <= n {
		for _, e := range next(t, sub) {
			if e.Index != want {
				t.Fatalf("got index %d, want %d", e.Index, want)
			}
			want++
		}
	}
}

func BenchmarkPublish(b *testing.B) {
	br := NewBroker(DefaultRingSize)
	var subs []*Subscription
	for i := 0; i < 10; i++ {
		sub, err := br.Subscribe(SubscribeRequest{Filter: Filter{TopicAllocation: {"job1"}}})
		if err != nil {
			b.Fatal(err)
		}
		subs = append(subs, sub)
	}
	batch := make([]Event, 500)
	for i := range batch {
		batch[i] = ev(TopicAllocation, caravan.NewID(), 0, "job2", "node1")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range batch {
			batch[j].Index = uint64(i + 1)
		}
		br.Publish(batch)
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
	for _, s := range subs {
		s.Close()
	}
}
