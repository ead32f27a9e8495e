// Package state is caravan's state store: typed tables over hashicorp's
// go-memdb, written only by the Raft FSM and read through immutable
// snapshots.
//
// Every write is one memdb transaction at one Raft index. Inside it the
// store keeps derived data consistent with the allocations: each node's
// usage (the sum of what its allocations that are not terminal hold), each
// job's summary (counts of allocations by client status) and each job's
// derived status. The index table records the Raft index of every table's
// last write. After the commit, the transaction's changes are published as
// events (package events).
//
// Objects stored are never modified in place; writers copy them first.
// Allocations point at the one shared *caravan.Job of their job version.
// Values read are shared with the store and must not be modified.
package state

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/hashicorp/go-memdb"
)

// Store holds the cluster state. Writes must come from one goroutine at a
// time (the Raft FSM); reads may come from any goroutine, on snapshots.
type Store struct {
	logger *slog.Logger
	broker *events.Broker
	// current is replaced whole when a Raft snapshot is restored.
	current atomic.Pointer[database]
	// nodes caches the sorted node list of the newest nodes table seen.
	nodes atomic.Pointer[nodeList]
}

// database is one memdb with the channel closed when Restore replaces it,
// so blocking queries on it wake and run again on the new one.
type database struct {
	db        *memdb.MemDB
	abandoned chan struct{}
	// generation counts restores; it keys the node list cache together
	// with the nodes table index.
	generation uint64
}

// New returns an empty store. Events of committed writes go to broker,
// which may be nil.
func New(logger *slog.Logger, broker *events.Broker) (*Store, error) {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return nil, fmt.Errorf("create state schema: %w", err)
	}
	s := &Store{logger: logger.With("component", "state"), broker: broker}
	s.current.Store(&database{db: db, abandoned: make(chan struct{})})
	return s, nil
}

// Snapshot returns an immutable view of the current state.
func (s *Store) Snapshot() *Snapshot {
	d := s.current.Load()
	return &Snapshot{txn: d.db.Txn(false), store: s, generation: d.generation, nodes: &nodesMemo{}}
}

// abandonCh is closed when the current database is replaced by Restore.
func (s *Store) abandonCh() <-chan struct{} {
	return s.current.Load().abandoned
}

// LatestIndex returns the Raft index of the newest write.
func (s *Store) LatestIndex() uint64 {
	return s.Snapshot().LatestIndex()
}

// BlockingQuery runs query on a fresh snapshot, bound to a new watch set,
// until the index it returns exceeds minIndex (a minIndex of 0 does not
// block) or ctx ends; in between it
// waits for a change to something query read. The caller puts the wait
// deadline into ctx. When ctx ends it returns the last result's index with a
// nil error: the caller answers with what the last run read. Errors from
// query are returned at once.
func (s *Store) BlockingQuery(ctx context.Context, minIndex uint64, query func(ws memdb.WatchSet, snap *Snapshot) (index uint64, err error)) (uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		ws.Add(s.abandonCh())
		snap := s.Snapshot().Watch(ws)
		index, err := query(ws, snap)
		if err != nil {
			return index, err
		}
		if minIndex == 0 || index > minIndex || ctx.Err() != nil {
			return index, nil
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return index, nil
		}
	}
}

// write runs fn in one write transaction at the Raft index, keeps the
// derived data and the index table up to date, commits, and publishes the
// changes as events. When fn fails nothing is written.
func (s *Store) write(index uint64, fn func(tx *txn) error) error {
	d := s.current.Load()
	mt := d.db.Txn(true)
	if s.broker != nil {
		mt.TrackChanges()
	}
	tx := newTxn(mt, index, s.logger)
	if err := fn(tx); err != nil {
		mt.Abort()
		return err
	}
	if err := tx.finish(); err != nil {
		mt.Abort()
		return fmt.Errorf("update derived state at index %d: %w", index, err)
	}
	mt.Commit()
	if s.broker != nil {
		if evs := eventsOf(index, mt.Changes()); len(evs) > 0 {
			s.broker.Publish(evs)
		}
	}
	return nil
}

// errNotFoundf returns an error naming what was not found.
func errNotFoundf(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, caravan.ErrNotFound)...)
}
