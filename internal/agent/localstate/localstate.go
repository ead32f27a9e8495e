// Package localstate keeps a node agent's state in one bbolt file in its
// data dir: the node's identity, every allocation it runs with its tasks'
// records (state, events, driver handle), and what is left of allocations
// that finished. A restarted agent (even after kill -9) reads it back to
// re-attach to its tasks.
//
// Layout:
//
//	meta/identity                      {"node_id", "secret_id"}
//	allocs/<alloc id>/alloc            the allocation as the servers sent it
//	allocs/<alloc id>/task/<name>      taskrunner.Record
//	finished/<alloc id>                a finished allocation: how it ended,
//	                                   without its job (RetireAlloc)
//
// Writes are committed at once, one fsync each, but writes that come while
// a commit is under way wait for it and then share the next commit (group
// commit): a lone write is not delayed, as with bbolt's Batch, and many
// tasks starting together do not pay one fsync each.
package localstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

var (
	metaBucket     = []byte("meta")
	allocsBucket   = []byte("allocs")
	finishedBucket = []byte("finished")
	identityKey    = []byte("identity")
	allocKey       = []byte("alloc")
	taskPrefix     = []byte("task/")
)

// ErrLocked means another process holds the state file: an agent runs on
// the same data dir already.
var ErrLocked = errors.New("state file is locked by another process")

// lockTimeout bounds the wait for the file lock.
const lockTimeout = 2 * time.Second

// DB is the agent's state file. It is safe for concurrent use.
type DB struct {
	db *bolt.DB

	// mu guards the writes waiting for the next commit, and whether a
	// writer commits now.
	mu         sync.Mutex
	queue      []*pendingWrite
	committing bool
}

// pendingWrite is a write waiting to be committed.
type pendingWrite struct {
	fn func(*bolt.Tx) error
	// done receives the write's result, or errLead: commit the queue.
	done chan error
}

// errLead tells a waiting writer that it commits the next group.
var errLead = errors.New("commit the queued writes")

// Open opens (or creates) the state file at path.
func Open(path string) (*DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open agent state %s: %w", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open agent state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{metaBucket, allocsBucket, finishedBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open agent state %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// Close closes the file.
func (d *DB) Close() error { return d.db.Close() }

// Identity is the node's id and secret, generated once.
type Identity struct {
	NodeID   string `json:"node_id"`
	SecretID string `json:"secret_id"`
}

// Identity returns the node's identity, creating it on first use.
func (d *DB) Identity() (Identity, error) {
	var id Identity
	err := d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(metaBucket)
		if raw := b.Get(identityKey); raw != nil {
			if err := json.Unmarshal(raw, &id); err != nil {
				return fmt.Errorf("decode identity: %w", err)
			}
			if caravan.ValidUUID(id.NodeID) && caravan.ValidUUID(id.SecretID) {
				return nil
			}
		}
		id = Identity{NodeID: caravan.NewID(), SecretID: caravan.NewID()}
		raw, err := json.Marshal(id)
		if err != nil {
			return err
		}
		return b.Put(identityKey, raw)
	})
	if err != nil {
		return Identity{}, fmt.Errorf("node identity: %w", err)
	}
	return id, nil
}

// update commits fn with the writes queued beside it. The writer that
// finds no commit under way commits the queue; one that comes while a
// commit runs waits, and the first of those commits the next group.
func (d *DB) update(fn func(*bolt.Tx) error) error {
	w := &pendingWrite{fn: fn, done: make(chan error, 1)}
	d.mu.Lock()
	d.queue = append(d.queue, w)
	lead := !d.committing
	d.committing = true
	d.mu.Unlock()
	if !lead {
		if err := <-w.done; err != errLead {
			return err
		}
	}
	d.mu.Lock()
	group := d.queue
	d.queue = nil
	d.mu.Unlock()
	d.commit(group)
	d.mu.Lock()
	if len(d.queue) > 0 {
		next := d.queue[0]
		d.mu.Unlock()
		next.done <- errLead
	} else {
		d.committing = false
		d.mu.Unlock()
	}
	return <-w.done
}

// commit runs a group of writes in one transaction. When one fails, the
// transaction is rolled back and each write is committed alone, so that one
// bad write does not fail the others.
func (d *DB) commit(group []*pendingWrite) {
	err := d.db.Update(func(tx *bolt.Tx) error {
		for _, w := range group {
			if err := w.fn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || len(group) == 1 {
		for _, w := range group {
			w.done <- err
		}
		return
	}
	for _, w := range group {
		w.done <- d.db.Update(w.fn)
	}
}

// PutAlloc stores the allocation (with its job), creating its bucket.
func (d *DB) PutAlloc(ctx context.Context, a *caravan.Allocation) error {
	return d.PutAllocs(ctx, []*caravan.Allocation{a})
}

// PutAllocs stores allocations (with their jobs) in one commit.
func (d *DB) PutAllocs(ctx context.Context, allocs []*caravan.Allocation) error {
	if len(allocs) == 0 {
		return nil
	}
	raws := make([][]byte, len(allocs))
	for i, a := range allocs {
		raw, err := json.Marshal(a)
		if err != nil {
			return fmt.Errorf("encode allocation %s: %w", a.ID, err)
		}
		raws[i] = raw
	}
	err := d.update(func(tx *bolt.Tx) error {
		for i, a := range allocs {
			b, err := tx.Bucket(allocsBucket).CreateBucketIfNotExists([]byte(a.ID))
			if err != nil {
				return err
			}
			if err := b.Put(allocKey, raws[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store %d allocations: %w", len(allocs), err)
	}
	return nil
}

// PutTask stores a task's record. It does nothing for an allocation that
// is not stored (any more): a late write after DeleteAlloc.
func (d *DB) PutTask(ctx context.Context, allocID, task string, rec *taskrunner.Record) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode task %s/%s: %w", allocID, task, err)
	}
	err = d.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(allocsBucket).Bucket([]byte(allocID))
		if b == nil {
			return nil
		}
		return b.Put(append(append([]byte(nil), taskPrefix...), task...), raw)
	})
	if err != nil {
		return fmt.Errorf("store task %s/%s: %w", allocID, task, err)
	}
	return nil
}

// RetireAlloc replaces what is stored of an allocation whose tasks are all
// dead, and freed by their drivers, by how it ended: a (for example
// without its job) in the finished bucket.
func (d *DB) RetireAlloc(ctx context.Context, a *caravan.Allocation) error {
	raw, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode allocation %s: %w", a.ID, err)
	}
	err = d.update(func(tx *bolt.Tx) error {
		if err := deleteBucket(tx.Bucket(allocsBucket), a.ID); err != nil {
			return err
		}
		return tx.Bucket(finishedBucket).Put([]byte(a.ID), raw)
	})
	if err != nil {
		return fmt.Errorf("retire allocation %s: %w", a.ID, err)
	}
	return nil
}

// DeleteAlloc forgets an allocation and its tasks, or what is left of it
// once finished.
func (d *DB) DeleteAlloc(ctx context.Context, allocID string) error {
	err := d.update(func(tx *bolt.Tx) error {
		if err := deleteBucket(tx.Bucket(allocsBucket), allocID); err != nil {
			return err
		}
		return tx.Bucket(finishedBucket).Delete([]byte(allocID))
	})
	if err != nil {
		return fmt.Errorf("delete allocation %s: %w", allocID, err)
	}
	return nil
}

func deleteBucket(parent *bolt.Bucket, name string) error {
	err := parent.DeleteBucket([]byte(name))
	if errors.Is(err, bolt.ErrBucketNotFound) {
		return nil
	}
	return err
}

// Finished reads the finished allocations. An entry that cannot be decoded
// is skipped and reported in the returned error list.
func (d *DB) Finished() ([]*caravan.Allocation, []error, error) {
	var out []*caravan.Allocation
	var bad []error
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(finishedBucket).ForEach(func(k, v []byte) error {
			var a *caravan.Allocation
			if err := json.Unmarshal(v, &a); err != nil || a == nil || a.ID != string(k) {
				bad = append(bad, fmt.Errorf("finished allocation %s: decode: %v", k, err))
				return nil
			}
			out = append(out, a)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read agent state: %w", err)
	}
	return out, bad, nil
}

// Stored is one allocation as the state file holds it.
type Stored struct {
	Alloc *caravan.Allocation
	// Tasks are the task records by task name.
	Tasks map[string]*taskrunner.Record
}

// Allocs reads every stored allocation. An entry that cannot be decoded
// is skipped and reported in the returned error list, so one bad record
// does not keep the agent from re-attaching to the rest.
func (d *DB) Allocs() ([]Stored, []error, error) {
	var out []Stored
	var bad []error
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(allocsBucket).ForEachBucket(func(k []byte) error {
			b := tx.Bucket(allocsBucket).Bucket(k)
			s := Stored{Tasks: map[string]*taskrunner.Record{}}
			raw := b.Get(allocKey)
			if raw == nil {
				bad = append(bad, fmt.Errorf("allocation %s: no allocation record", k))
				return nil
			}
			if err := json.Unmarshal(raw, &s.Alloc); err != nil || s.Alloc == nil {
				bad = append(bad, fmt.Errorf("allocation %s: decode: %v", k, err))
				return nil
			}
			err := b.ForEach(func(key, val []byte) error {
				name, ok := cutPrefix(key, taskPrefix)
				if !ok {
					return nil
				}
				var rec taskrunner.Record
				if err := json.Unmarshal(val, &rec); err != nil || rec.State == nil {
					bad = append(bad, fmt.Errorf("allocation %s task %s: decode: %v", k, name, err))
					return nil
				}
				s.Tasks[name] = &rec
				return nil
			})
			if err != nil {
				return err
			}
			out = append(out, s)
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read agent state: %w", err)
	}
	return out, bad, nil
}

func cutPrefix(b, prefix []byte) (string, bool) {
	if len(b) < len(prefix) || string(b[:len(prefix)]) != string(prefix) {
		return "", false
	}
	return string(b[len(prefix):]), true
}
