// Package localstate keeps a node agent's state in one bbolt file in its
// data dir: the node's identity, and every allocation it runs with its
// tasks' records (state, events, driver handle). A restarted agent (even
// after kill -9) reads it back to re-attach to its tasks.
//
// Layout:
//
//	meta/identity                      {"node_id", "secret_id"}
//	allocs/<alloc id>/alloc            the allocation as the servers sent it
//	allocs/<alloc id>/task/<name>      taskrunner.Record
package localstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

var (
	metaBucket   = []byte("meta")
	allocsBucket = []byte("allocs")
	identityKey  = []byte("identity")
	allocKey     = []byte("alloc")
	taskPrefix   = []byte("task/")
)

// ErrLocked means another process holds the state file: an agent runs on
// the same data dir already.
var ErrLocked = errors.New("state file is locked by another process")

// lockTimeout bounds the wait for the file lock.
const lockTimeout = 2 * time.Second

// DB is the agent's state file. It is safe for concurrent use.
type DB struct {
	db *bolt.DB
}

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
		for _, b := range [][]byte{metaBucket, allocsBucket} {
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

// PutAlloc stores the allocation (with its job), creating its bucket.
func (d *DB) PutAlloc(ctx context.Context, a *caravan.Allocation) error {
	raw, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode allocation %s: %w", a.ID, err)
	}
	err = d.db.Batch(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(allocsBucket).CreateBucketIfNotExists([]byte(a.ID))
		if err != nil {
			return err
		}
		return b.Put(allocKey, raw)
	})
	if err != nil {
		return fmt.Errorf("store allocation %s: %w", a.ID, err)
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
	err = d.db.Batch(func(tx *bolt.Tx) error {
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

// DeleteAlloc forgets an allocation and its tasks.
func (d *DB) DeleteAlloc(ctx context.Context, allocID string) error {
	err := d.db.Batch(func(tx *bolt.Tx) error {
		err := tx.Bucket(allocsBucket).DeleteBucket([]byte(allocID))
		if errors.Is(err, bolt.ErrBucketNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete allocation %s: %w", allocID, err)
	}
	return nil
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
