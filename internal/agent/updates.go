package agent

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
)

// maxUpdatesPerRequest bounds one request to the servers.
const maxUpdatesPerRequest = 256

// sendFunc sends a batch of updates to the servers.
type sendFunc func(ctx context.Context, updates []*caravan.AllocClientUpdate) error

// batcher collects allocation updates and sends them every interval. It
// keeps only the newest update of each allocation (each holds the whole
// client state, so nothing is lost by dropping an older one, and the
// newest is always sent last). A failed send is retried at the next tick;
// an update leaves the batcher only once the servers took it, or they
// refused it as invalid.
type batcher struct {
	send     sendFunc
	interval time.Duration
	// ready reports whether sending makes sense (the node is registered).
	ready func() bool
	log   *slog.Logger

	mu      sync.Mutex
	seq     uint64
	pending map[string]pendingUpdate
	failing bool
}

type pendingUpdate struct {
	u   *caravan.AllocClientUpdate
	seq uint64
}

func newBatcher(send sendFunc, interval time.Duration, ready func() bool, log *slog.Logger) *batcher {
	return &batcher{send: send, interval: interval, ready: ready, log: log, pending: map[string]pendingUpdate{}}
}

// Add queues an update, replacing an older one of the same allocation.
func (b *batcher) Add(u *caravan.AllocClientUpdate) {
	b.mu.Lock()
	b.seq++
	b.pending[u.ID] = pendingUpdate{u: u, seq: b.seq}
	b.mu.Unlock()
}

// Forget drops what is queued for an allocation the servers no longer know.
func (b *batcher) Forget(allocID string) {
	b.mu.Lock()
	delete(b.pending, allocID)
	b.mu.Unlock()
}

// Len is the number of allocations with an update queued.
func (b *batcher) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// Run sends what is queued every interval until ctx ends.
func (b *batcher) Run(ctx context.Context) error {
	t := time.NewTicker(b.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if b.ready() {
				b.Flush(ctx)
			}
		}
	}
}

// Flush sends everything queued now. It reports whether the queue was
// sent completely.
func (b *batcher) Flush(ctx context.Context) bool {
	b.mu.Lock()
	batch := make([]pendingUpdate, 0, len(b.pending))
	for _, p := range b.pending {
		batch = append(batch, p)
	}
	b.mu.Unlock()
	if len(batch) == 0 {
		return true
	}
	slices.SortFunc(batch, func(x, y pendingUpdate) int { return cmp.Compare(x.seq, y.seq) })
	ok := true
	for chunk := range slices.Chunk(batch, maxUpdatesPerRequest) {
		if !b.sendChunk(ctx, chunk) {
			ok = false
			break
		}
	}
	b.mu.Lock()
	if ok && b.failing {
		b.log.Info("allocation updates reach the servers again")
	}
	b.failing = !ok
	b.mu.Unlock()
	return ok
}

// sendChunk sends one chunk. When the servers refuse it as a whole for
// bad input, each update is sent alone so that one bad update does not
// hold back the others; a refused one is dropped and logged.
func (b *batcher) sendChunk(ctx context.Context, chunk []pendingUpdate) bool {
	err := b.send(ctx, updatesOf(chunk))
	switch {
	case err == nil:
		b.done(chunk)
		return true
	case !refused(err):
		b.mu.Lock()
		if !b.failing {
			b.log.Warn("send allocation updates; will retry", "updates", len(chunk), "error", err)
		}
		b.failing = true
		b.mu.Unlock()
		return false
	}
	for _, p := range chunk {
		err := b.send(ctx, []*caravan.AllocClientUpdate{p.u})
		if err != nil && !refused(err) {
			return false
		}
		if err != nil {
			b.log.Error("servers refused an allocation update; dropping it", "alloc_id", p.u.ID, "error", err)
		}
		b.done([]pendingUpdate{p})
	}
	return true
}

// refused reports an error that sending again will not fix. Not found is
// not one: it may mean the servers forgot the node, which registering
// again mends; an allocation they forgot leaves the queue when the watch
// no longer lists it.
func refused(err error) bool {
	return errors.Is(err, caravan.ErrInvalid) || errors.Is(err, caravan.ErrTooLarge)
}

// done removes sent updates, unless a newer one came meanwhile.
func (b *batcher) done(sent []pendingUpdate) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range sent {
		if cur, ok := b.pending[p.u.ID]; ok && cur.seq == p.seq {
			delete(b.pending, p.u.ID)
		}
	}
}

func updatesOf(ps []pendingUpdate) []*caravan.AllocClientUpdate {
	out := make([]*caravan.AllocClientUpdate, len(ps))
	for i, p := range ps {
		out[i] = p.u
	}
	return out
}
