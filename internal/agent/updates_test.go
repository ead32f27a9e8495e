package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
)

// recorder is a sendFunc that fails while told to.
type recorder struct {
	mu    sync.Mutex
	err   error
	sent  [][]string // "<id>:<status>" per request
	badID string     // refused as invalid
}

func (r *recorder) send(_ context.Context, us []*caravan.AllocClientUpdate) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	var batch []string
	for _, u := range us {
		if u.ID == r.badID {
			return fmt.Errorf("allocs[0]: %w", caravan.ErrInvalid)
		}
		batch = append(batch, u.ID+":"+u.ClientStatus)
	}
	r.sent = append(r.sent, batch)
	return nil
}

func up(id, status string) *caravan.AllocClientUpdate {
	return &caravan.AllocClientUpdate{ID: id, ClientStatus: status}
}

func TestBatcherRetriesAndKeepsTheNewest(t *testing.T) {
	rec := &recorder{err: fmt.Errorf("down: %w", caravan.ErrUnavailable)}
	b := newBatcher(rec.send, time.Hour, func() bool { return true }, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	b.Add(up("a", "pending"))
	b.Add(up("b", "pending"))
	b.Add(up("a", "running"))
	if b.Flush(ctx) {
		t.Fatal("Flush reported success while the servers fail")
	}
	if b.Len() != 2 {
		t.Fatalf("queue after a failed flush = %d, want 2", b.Len())
	}
	b.Add(up("a", "complete"))
	rec.err = nil
	if !b.Flush(ctx) {
		t.Fatal("Flush failed")
	}
	// Oldest change first; a's newest state only.
	if diff := cmp.Diff([][]string{{"b:pending", "a:complete"}}, rec.sent); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
	if b.Len() != 0 || !b.Flush(ctx) || len(rec.sent) != 1 {
		t.Errorf("queue not empty after success: %d", b.Len())
	}
}

func TestBatcherDropsOnlyRefusedUpdates(t *testing.T) {
	rec := &recorder{badID: "bad"}
	b := newBatcher(rec.send, time.Hour, func() bool { return true }, slog.New(slog.DiscardHandler))
	b.Add(up("a", "running"))
	b.Add(up("bad", "running"))
	b.Add(up("c", "running"))
	if !b.Flush(context.Background()) {
		t.Fatal("Flush failed")
	}
	if diff := cmp.Diff([][]string{{"a:running"}, {"c:running"}}, rec.sent); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
	if b.Len() != 0 {
		t.Errorf("queue = %d, want 0", b.Len())
	}
}

func TestBatcherKeepsAnUpdateThatCameDuringASend(t *testing.T) {
	var b *batcher
	sent := 0
	send := func(_ context.Context, us []*caravan.AllocClientUpdate) error {
		sent++
		if sent == 1 {
			b.Add(up("a", "complete")) // arrives while the first send is in flight
		}
		return nil
	}
	b = newBatcher(send, time.Hour, func() bool { return true }, slog.New(slog.DiscardHandler))
	b.Add(up("a", "running"))
	b.Flush(context.Background())
	if b.Len() != 1 {
		t.Fatalf("the newer update was lost")
	}
}

func TestBatcherChunks(t *testing.T) {
	rec := &recorder{}
	b := newBatcher(rec.send, time.Hour, func() bool { return true }, slog.New(slog.DiscardHandler))
	for i := range maxUpdatesPerRequest + 10 {
		b.Add(up(fmt.Sprint(i), "running"))
	}
	b.Flush(context.Background())
	var sizes []int
	for _, s := range rec.sent {
		sizes = append(sizes, len(s))
	}
	if !slices.Equal(sizes, []int{maxUpdatesPerRequest, 10}) {
		t.Errorf("chunks = %v", sizes)
	}
}

func TestHeartbeatWait(t *testing.T) {
	ttl := 10 * time.Second
	for i := 0; i < 200; i++ {
		if d := heartbeatWait(ttl, 0); d < 4*time.Second || d > 5*time.Second {
			t.Fatalf("heartbeatWait = %s, want between 40%% and 50%% of the TTL", d)
		}
		if d := heartbeatWait(ttl, 3); d <= 0 || d > ttl/4 {
			t.Fatalf("heartbeatWait after failures = %s, want at most TTL/4", d)
		}
	}
}

func TestServerList(t *testing.T) {
	got := serverList([]string{"10.0.0.1:8500", "10.0.0.2:8500"}, []string{"10.0.0.2:8500", "lb:8500"})
	want := []string{"10.0.0.1:8500", "10.0.0.2:8500", "lb:8500"}
	if !slices.Equal(got, want) {
		t.Errorf("serverList = %v, want %v", got, want)
	}
	if !errors.Is(fmt.Errorf("x: %w", caravan.ErrInvalid), caravan.ErrInvalid) || refused(fmt.Errorf("x: %w", caravan.ErrNotFound)) {
		t.Error("refused: not found must be retried")
	}
}
