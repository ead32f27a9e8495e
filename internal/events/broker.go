package events

import (
	"context"
	"fmt"
	"sync"

	"github.com/caravan-sched/caravan"
)

// Defaults for NewBroker and Subscribe.
const (
	// DefaultRingSize is how many recent events a broker keeps for
	// subscribers that start from an earlier index.
	DefaultRingSize = 8192
	// DefaultBufferSize is how many events a subscriber may have waiting
	// before it is cut off.
	DefaultBufferSize = 4096
)

// Broker fans published events out to subscribers. Publish never blocks:
// a subscriber whose queue is full is closed with an error instead. The
// zero value is not usable; use NewBroker.
type Broker struct {
	mu sync.Mutex
	// ring holds the newest events, oldest first from start.
	ring  []Event
	start int
	count int
	// dropped is the index of the newest event that left the ring (or
	// was lost to a Reset): a subscriber starting below it missed events.
	dropped uint64
	// last is the index of the newest event published.
	last   uint64
	subs   map[*Subscription]struct{}
	closed bool
}

// NewBroker returns a broker keeping the ringSize newest events
// (DefaultRingSize when ringSize < 1).
func NewBroker(ringSize int) *Broker {
	if ringSize < 1 {
		ringSize = DefaultRingSize
	}
	return &Broker{ring: make([]Event, ringSize), subs: map[*Subscription]struct{}{}}
}

// Publish records events (in index order, all newer than any published
// before) and hands each to the subscribers whose filter matches. It never
// blocks on a subscriber.
func (b *Broker) Publish(evs []Event) {
	if len(evs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	for _, e := range evs {
		b.remember(e)
	}
	for sub := range b.subs {
		if !sub.deliver(evs) {
			delete(b.subs, sub)
		}
	}
}

// remember adds e to the ring, evicting the oldest event when it is full.
func (b *Broker) remember(e Event) {
	if b.count == len(b.ring) {
		b.dropped = b.ring[b.start].Index
		b.ring[b.start] = e
		b.start = (b.start + 1) % len(b.ring)
	} else {
		b.ring[(b.start+b.count)%len(b.ring)] = e
		b.count++
	}
	b.last = e.Index
}

// SubscribeRequest says what a subscriber wants.
type SubscribeRequest struct {
	// Filter selects topics and keys; empty means everything.
	Filter Filter
	// FromIndex asks for the buffered events after this index first. 0
	// means only events published from now on.
	FromIndex uint64
	// BufferSize bounds the events waiting for the subscriber
	// (DefaultBufferSize when < 1).
	BufferSize int
}

// Subscribe starts a subscription. When req.FromIndex is older than the
// events the broker still holds, it fails with an error matching
// caravan.ErrConflict: the subscriber missed events and must read the
// current state again, then subscribe from that state's index.
func (b *Broker) Subscribe(req SubscribeRequest) (*Subscription, error) {
	limit := req.BufferSize
	if limit < 1 {
		limit = DefaultBufferSize
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("subscribe to events: broker closed: %w", caravan.ErrUnavailable)
	}
	if req.FromIndex > 0 && req.FromIndex < b.dropped {
		return nil, fmt.Errorf("events after index %d are no longer buffered (oldest kept follows index %d); read the state again and subscribe from its index: %w",
			req.FromIndex, b.dropped, caravan.ErrConflict)
	}
	sub := &Subscription{
		broker: b,
		filter: req.Filter,
		limit:  limit,
		notify: make(chan struct{}, 1),
		last:   req.FromIndex,
	}
	if req.FromIndex == 0 {
		sub.last = b.last
	} else {
		for i := 0; i < b.count; i++ {
			e := &b.ring[(b.start+i)%len(b.ring)]
			if e.Index > req.FromIndex && sub.filter.Match(e) {
				sub.queue = append(sub.queue, *e)
			}
		}
		if len(sub.queue) > 0 {
			sub.notify <- struct{}{}
		}
	}
	b.subs[sub] = struct{}{}
	return sub, nil
}

// Reset forgets every buffered event and cuts off every subscriber, as
// after a state snapshot was restored: the events between what they saw
// and index will never be published. Subscribing from below index fails
// afterwards.
func (b *Broker) Reset(index uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	clear(b.ring)
	b.start, b.count = 0, 0
	b.dropped = max(b.dropped, b.last, index)
	b.last = max(b.last, index)
	for sub := range b.subs {
		sub.close(fmt.Errorf("event stream reset: state was restored from a snapshot at index %d: %w", index, caravan.ErrConflict))
		delete(b.subs, sub)
	}
}

// Close ends every subscription and refuses new ones.
func (b *Broker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	clear(b.ring)
	for sub := range b.subs {
		sub.close(fmt.Errorf("event broker closed: %w", caravan.ErrUnavailable))
		delete(b.subs, sub)
	}
}

func (b *Broker) unsubscribe(sub *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, sub)
}

// Subscription is one subscriber's queue of events. Its methods may be
// called from one goroutine while the broker publishes from another.
type Subscription struct {
	broker *Broker
	filter Filter
	limit  int
	notify chan struct{}

	mu    sync.Mutex
	queue []Event
	err   error
	// last is the index of the newest event handed out by Next (at first,
	// the index the subscriber starts from).
	last uint64
}

// deliver queues the events the filter matches. It reports false, after
// closing the subscription, when the queue would overflow.
func (s *Subscription) deliver(evs []Event) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return false
	}
	for i := range evs {
		if !s.filter.Match(&evs[i]) {
			continue
		}
		if len(s.queue) >= s.limit {
			s.closeLocked(fmt.Errorf("event subscriber fell more than %d events behind; reconnect from index %d: %w",
				s.limit, s.last, caravan.ErrUnavailable))
			return false
		}
		s.queue = append(s.queue, evs[i])
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return true
}

// Next returns the events waiting, in index order, blocking until there is
// at least one, the subscription ends or ctx ends. Events of one index are
// never split between two calls. Once the subscription was cut off, Next
// returns the error and the events still queued are dropped: subscribing
// again from the last index Next returned replays them from the ring.
func (s *Subscription) Next(ctx context.Context) ([]Event, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 && s.err == nil {
			evs := s.queue
			s.queue = nil
			s.last = evs[len(evs)-1].Index
			s.mu.Unlock()
			return evs, nil
		}
		if s.err != nil {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.broker.unsubscribe(s)
	s.close(fmt.Errorf("subscription closed: %w", caravan.ErrUnavailable))
}

func (s *Subscription) close(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(err)
}

func (s *Subscription) closeLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	s.queue = nil
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
