package state

import (
	"fmt"
	"iter"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/scheduler"
	"github.com/hashicorp/go-memdb"
)

var _ scheduler.State = (*Snapshot)(nil)

// Snapshot is an immutable view of the state at one moment. Reads on it
// are consistent with each other and safe from any goroutine; a snapshot
// bound to a watch set (Watch) belongs to one goroutine, since the watch
// set is not safe for concurrent use.
//
// Lookups return caravan.ErrNotFound (wrapped) when the object does not
// exist, never a nil object without an error. Objects returned are shared
// with the store and must not be modified.
type Snapshot struct {
	// txn is a read transaction: a point-in-time view of the database,
	// shared by every read on the snapshot (reads do not change it).
	txn        *memdb.Txn
	store      *Store
	generation uint64
	// ws, when not nil, collects a watch channel for everything read.
	ws    memdb.WatchSet
	nodes *nodesMemo
}

// Watch returns a view of the same snapshot whose reads add their watch
// channels to ws, so a blocking query can wait for a change to what it
// read. A nil ws gives a view that watches nothing.
func (s *Snapshot) Watch(ws memdb.WatchSet) *Snapshot {
	c := *s
	c.ws = ws
	return &c
}

func (s *Snapshot) watch(ch <-chan struct{}) {
	if s.ws != nil && ch != nil {
		s.ws.Add(ch)
	}
}

// lookup returns the object with the primary key, watching it.
func (s *Snapshot) lookup(table string, args ...any) (any, error) {
	ch, obj, err := s.txn.FirstWatch(table, indexID, args...)
	if err != nil {
		return nil, fmt.Errorf("look up %s %v: %w", table, args, err)
	}
	s.watch(ch)
	return obj, nil
}

// list returns every object under an index value, watching the range.
func list[T any](s *Snapshot, table, index string, args ...any) ([]T, error) {
	it, err := s.txn.Get(table, index, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s by %s: %w", table, index, err)
	}
	s.watch(it.WatchCh())
	var out []T
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(T))
	}
	return out, nil
}

// ListOptions select a page of a table in id order.
type ListOptions struct {
	// Prefix keeps only ids that start with it.
	Prefix string
	// Start is the first id to return (for paging: the id after the last
	// one of the previous page); ids below it are skipped.
	Start string
}

// scan iterates a table by id from opts.Start, keeping ids with opts.Prefix.
// The whole prefix range is watched.
func scan[T any](s *Snapshot, table string, id func(T) string, opts ListOptions) (iter.Seq[T], error) {
	txn := s.txn
	watched, err := txn.Get(table, indexID+"_prefix", opts.Prefix)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", table, err)
	}
	s.watch(watched.WatchCh())
	from := max(opts.Start, opts.Prefix)
	it, err := txn.LowerBound(table, indexID, from)
	if err != nil {
		return nil, fmt.Errorf("list %s from %q: %w", table, from, err)
	}
	return func(yield func(T) bool) {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			v := obj.(T)
			if !strings.HasPrefix(id(v), opts.Prefix) || !yield(v) {
				return
			}
		}
	}, nil
}

// JobByID returns the newest version of a job.
func (s *Snapshot) JobByID(id string) (*caravan.Job, error) {
	obj, err := s.lookup(TableJobs, id)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errNotFoundf("job %q", id)
	}
	return obj.(*caravan.Job), nil
}

// Job returns the newest version of a job (scheduler.State).
func (s *Snapshot) Job(id string) (*caravan.Job, error) { return s.JobByID(id) }

// JobVersion returns one kept version of a job: the spec as submitted,
// with the status it had then.
func (s *Snapshot) JobVersion(id string, version uint64) (*caravan.Job, error) {
	obj, err := s.lookup(TableJobVersions, id, version)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errNotFoundf("job %q version %d", id, version)
	}
	return obj.(*caravan.Job), nil
}

// JobVersions returns every kept version of a job, newest first, or
// ErrNotFound when none is kept.
func (s *Snapshot) JobVersions(id string) ([]*caravan.Job, error) {
	out, err := list[*caravan.Job](s, TableJobVersions, indexID+"_prefix", id)
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errNotFoundf("versions of job %q", id)
	}
	slices.Reverse(out)
	return out, nil
}

// Jobs iterates the newest version of every job in id order.
func (s *Snapshot) Jobs(opts ListOptions) (iter.Seq[*caravan.Job], error) {
	return scan(s, TableJobs, func(j *caravan.Job) string { return j.ID }, opts)
}

// JobSummary returns the counts of a job's allocations by task group and
// client status.
func (s *Snapshot) JobSummary(jobID string) (*caravan.JobSummary, error) {
	obj, err := s.lookup(TableJobSummary, jobID)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errNotFoundf("summary of job %q", jobID)
	}
	return obj.(*caravan.JobSummary), nil
}

// EvalByID returns one evaluation.
func (s *Snapshot) EvalByID(id string) (*caravan.Evaluation, error) {
	obj, err := s.lookup(TableEvals, id)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errNotFoundf("evaluation %q", id)
	}
	return obj.(*caravan.Evaluation), nil
}

// EvalsByJob returns the evaluations of a job in id order (none is not an
// error).
func (s *Snapshot) EvalsByJob(jobID string) ([]*caravan.Evaluation, error) {
	return list[*caravan.Evaluation](s, TableEvals, indexJob, jobID)
}

// Evals iterates every evaluation in id order.
func (s *Snapshot) Evals(opts ListOptions) (iter.Seq[*caravan.Evaluation], error) {
	return scan(s, TableEvals, func(e *caravan.Evaluation) string { return e.ID }, opts)
}

// AllocByID returns one allocation.
func (s *Snapshot) AllocByID(id string) (*caravan.Allocation, error) {
	obj, err := s.lookup(TableAllocs, id)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errNotFoundf("allocation %q", id)
	}
	return obj.(*caravan.Allocation), nil
}

// AllocExists reports whether an allocation is in state, without the
// cost of an error when it is not. It adds no watch.
func (s *Snapshot) AllocExists(id string) bool {
	obj, err := s.txn.First(TableAllocs, indexID, id)
	return err == nil && obj != nil
}

// AllocsByJob returns every allocation of the job still in state, of every
// version, terminal ones included, in id order (scheduler.State).
func (s *Snapshot) AllocsByJob(jobID string) ([]*caravan.Allocation, error) {
	return s.allocsIn(tableJobAllocs, jobID)
}

// AllocsByNode returns every allocation on the node, in id order.
func (s *Snapshot) AllocsByNode(nodeID string) ([]*caravan.Allocation, error) {
	return s.allocsIn(TableNodeUsage, nodeID)
}

// AllocsByEval returns the allocations an evaluation placed, in id order,
// or ErrNotFound when the evaluation is not in state. (Allocations have no
// index by evaluation, to save memory: they are found among the
// evaluation's job's.)
func (s *Snapshot) AllocsByEval(evalID string) ([]*caravan.Allocation, error) {
	e, err := s.EvalByID(evalID)
	if err != nil {
		return nil, err
	}
	allocs, err := s.AllocsByJob(e.JobID)
	if err != nil {
		return nil, err
	}
	out := allocs[:0]
	for _, a := range allocs {
		if a.EvalID == evalID {
			out = append(out, a)
		}
	}
	return out, nil
}

// Allocs iterates every allocation in id order.
func (s *Snapshot) Allocs(opts ListOptions) (iter.Seq[*caravan.Allocation], error) {
	return scan(s, TableAllocs, func(a *caravan.Allocation) string { return a.ID }, opts)
}

// NodeByID returns one node, with its secret: callers that answer users
// return node.Sanitized().
func (s *Snapshot) NodeByID(id string) (*caravan.Node, error) {
	obj, err := s.lookup(TableNodes, id)
	if err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, errNotFoundf("node %q", id)
	}
	return obj.(*caravan.Node), nil
}

// Node returns one node (scheduler.State).
func (s *Snapshot) Node(id string) (*caravan.Node, error) { return s.NodeByID(id) }

// NodeUsage returns what the node's allocations that are not terminal hold:
// zero for a node without any, ErrNotFound for an unknown node without any.
func (s *Snapshot) NodeUsage(nodeID string) (caravan.NodeUsage, error) {
	obj, err := s.lookup(TableNodeUsage, nodeID)
	if err != nil {
		return caravan.NodeUsage{}, err
	}
	if obj != nil {
		return obj.(*allocSet).Usage, nil
	}
	if s.ws == nil && s.nodes.loaded() {
		// Whether the node exists is known from the node list: no second
		// lookup (the scheduler asks for nodes of the list only).
		if _, found := slices.BinarySearchFunc(s.nodes.nodes, nodeID, func(n *caravan.Node, id string) int {
			return strings.Compare(n.ID, id)
		}); !found {
			return caravan.NodeUsage{}, errNotFoundf("node %q", nodeID)
		}
		return caravan.NodeUsage{}, nil
	}
	if _, err := s.NodeByID(nodeID); err != nil {
		return caravan.NodeUsage{}, err
	}
	return caravan.NodeUsage{}, nil
}

// NodesInUse iterates the nodes that hold allocations (terminal ones
// count until they are deleted) with their usage, in id order from the
// first node id at or after from, wrapping around, each once
// (scheduler.State). It adds no watch.
func (s *Snapshot) NodesInUse(from string) iter.Seq2[string, caravan.NodeUsage] {
	return func(yield func(string, caravan.NodeUsage) bool) {
		it, err := s.txn.LowerBound(TableNodeUsage, indexID, from)
		if err != nil {
			return
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			set := obj.(*allocSet)
			if !yield(set.Key, set.Usage) {
				return
			}
		}
		it, err = s.txn.Get(TableNodeUsage, indexID)
		if err != nil {
			return
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			set := obj.(*allocSet)
			if set.Key >= from || !yield(set.Key, set.Usage) {
				return
			}
		}
	}
}

// Servers returns the Raft peers in id order.
func (s *Snapshot) Servers() ([]*ServerMember, error) {
	return list[*ServerMember](s, TableServers, indexID)
}

// TableIndex returns the Raft index of the newest write to any of the
// tables (0 when none was written). It adds no watch.
func (s *Snapshot) TableIndex(tables ...string) uint64 {
	txn := s.txn
	var idx uint64
	for _, t := range tables {
		obj, err := txn.First(TableIndex, indexID, t)
		if err == nil && obj != nil {
			idx = max(idx, obj.(*indexRow).Index)
		}
	}
	return idx
}

// LatestIndex returns the Raft index of the newest write to any table.
func (s *Snapshot) LatestIndex() uint64 {
	it, err := s.txn.Get(TableIndex, indexID)
	if err != nil {
		return 0
	}
	var idx uint64
	for obj := it.Next(); obj != nil; obj = it.Next() {
		idx = max(idx, obj.(*indexRow).Index)
	}
	return idx
}

// Index is the Raft index the snapshot reflects (scheduler.State).
func (s *Snapshot) Index() uint64 { return s.LatestIndex() }

// nodeList is the sorted node list of one version of the nodes table.
type nodeList struct {
	generation uint64
	index      uint64
	nodes      []*caravan.Node
}

// nodesMemo remembers a snapshot's node list, shared by its watch views.
type nodesMemo struct {
	once  sync.Once
	done  atomic.Bool
	nodes []*caravan.Node
	err   error
}

// loaded reports whether the list was read without error.
func (m *nodesMemo) loaded() bool { return m.done.Load() && m.err == nil }

// Nodes returns every node sorted by id. The slice is shared: among all
// calls on this snapshot and among snapshots until the nodes table changes.
// It must not be modified.
func (s *Snapshot) Nodes() ([]*caravan.Node, error) {
	if s.ws != nil {
		// Watch the table; the list itself may come from the cache.
		it, err := s.txn.Get(TableNodes, indexID)
		if err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		s.watch(it.WatchCh())
	}
	s.nodes.once.Do(func() {
		s.nodes.nodes, s.nodes.err = s.loadNodes()
		s.nodes.done.Store(true)
	})
	return s.nodes.nodes, s.nodes.err
}

// loadNodes returns the cached list when it is of this snapshot's nodes
// table, or builds and caches it.
func (s *Snapshot) loadNodes() ([]*caravan.Node, error) {
	index := s.TableIndex(TableNodes)
	if c := s.store.nodes.Load(); c != nil && c.generation == s.generation && c.index == index {
		return c.nodes, nil
	}
	nodes, err := list[*caravan.Node](s.Watch(nil), TableNodes, indexID)
	if err != nil {
		return nil, err
	}
	fresh := &nodeList{generation: s.generation, index: index, nodes: nodes}
	for {
		c := s.store.nodes.Load()
		if c != nil && (c.generation > s.generation || c.generation == s.generation && c.index >= index) {
			break
		}
		if s.store.nodes.CompareAndSwap(c, fresh) {
			break
		}
	}
	return nodes, nil
}
