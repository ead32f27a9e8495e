package state

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/caravan-sched/caravan"
	"github.com/hashicorp/go-memdb"
)

// Restore replaces the whole state with what Persist wrote to r, computing
// node usage and job summary counts again. On error the state is left as
// it was. Blocking queries wake and run again on the new state; event
// subscribers are cut off (they missed the events in between).
func (s *Store) Restore(r io.Reader) error {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	rs := &restorer{
		txn:       db.Txn(true),
		dec:       json.NewDecoder(bufio.NewReaderSize(r, 256<<10)),
		versions:  map[versionKey]*caravan.Job{},
		orphans:   map[versionKey]*caravan.Job{},
		summaries: map[string]*caravan.JobSummary{},
		usage:     map[string]caravan.NodeUsage{},
	}
	if err := rs.run(); err != nil {
		rs.txn.Abort()
		return fmt.Errorf("restore state: %w", err)
	}
	rs.txn.Commit()

	old := s.current.Load()
	s.current.Store(&database{db: db, abandoned: make(chan struct{}), generation: old.generation + 1})
	s.nodes.Store(nil)
	close(old.abandoned)
	if s.broker != nil {
		s.broker.Reset(s.Snapshot().LatestIndex())
	}
	return nil
}

type versionKey struct {
	id      string
	version uint64
}

// restorer reads a persisted state into a write transaction.
type restorer struct {
	txn       *memdb.Txn
	dec       *json.Decoder
	versions  map[versionKey]*caravan.Job
	orphans   map[versionKey]*caravan.Job
	summaries map[string]*caravan.JobSummary
	usage     map[string]caravan.NodeUsage
}

func (rs *restorer) run() error {
	var h persistHeader
	if err := rs.dec.Decode(&h); err != nil {
		return fmt.Errorf("read header: %w", eofIsUnexpected(err))
	}
	if h.Format != persistFormat || h.Version != persistVersion {
		return fmt.Errorf("not a caravan state snapshot (format %q version %d): %w", h.Format, h.Version, caravan.ErrInvalid)
	}
	for {
		var sec sectionHeader
		if err := rs.dec.Decode(&sec); err != nil {
			return fmt.Errorf("read section header: %w", eofIsUnexpected(err))
		}
		if sec.End {
			return rs.finish()
		}
		if sec.Count < 0 {
			return fmt.Errorf("section %q: negative count %d: %w", sec.Table, sec.Count, caravan.ErrInvalid)
		}
		read, ok := rs.readers()[sec.Table]
		if !ok {
			return fmt.Errorf("unknown section %q: %w", sec.Table, caravan.ErrInvalid)
		}
		for i := 0; i < sec.Count; i++ {
			if err := read(); err != nil {
				return fmt.Errorf("section %s, row %d: %w", sec.Table, i, err)
			}
		}
	}
}

func eofIsUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readers reads one row of each section.
func (rs *restorer) readers() map[string]func() error {
	return map[string]func() error{
		TableIndex:        func() error { return readInsert[indexRow](rs, TableIndex) },
		TableSequence:     func() error { return readInsert[sequenceRow](rs, TableSequence) },
		TableServers:      func() error { return readInsert[ServerMember](rs, TableServers) },
		TableNodes:        func() error { return readInsert[caravan.Node](rs, TableNodes) },
		TableEvals:        func() error { return readInsert[caravan.Evaluation](rs, TableEvals) },
		TableJobVersions:  rs.readVersion,
		TableJobs:         rs.readJob,
		TableJobSummary:   rs.readSummary,
		sectionOrphanJobs: rs.readOrphan,
		TableAllocs:       rs.readAlloc,
	}
}

// decode reads the next row into a new T.
func decode[T any](rs *restorer) (*T, error) {
	v := new(T)
	if err := rs.dec.Decode(v); err != nil {
		return nil, eofIsUnexpected(err)
	}
	return v, nil
}

func readInsert[T any](rs *restorer, table string) error {
	v, err := decode[T](rs)
	if err != nil {
		return err
	}
	if err := rs.txn.Insert(table, v); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

func (rs *restorer) readVersion() error {
	j, err := decode[caravan.Job](rs)
	if err != nil {
		return err
	}
	if err := rs.txn.Insert(TableJobVersions, j); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	rs.versions[versionKey{j.ID, j.Version}] = j
	return nil
}

func (rs *restorer) readOrphan() error {
	j, err := decode[caravan.Job](rs)
	if err != nil {
		return err
	}
	rs.orphans[versionKey{j.ID, j.Version}] = j
	return nil
}

func (rs *restorer) readJob() error {
	row, err := decode[jobRow](rs)
	if err != nil {
		return err
	}
	base := rs.versions[versionKey{row.ID, row.Version}]
	if base == nil {
		return fmt.Errorf("job %q: version %d is not in the snapshot: %w", row.ID, row.Version, caravan.ErrInvalid)
	}
	j := base.ShallowCopy()
	j.Stop, j.Status, j.StatusDescription, j.SubmitTime = row.Stop, row.Status, row.StatusDescription, row.SubmitTime
	j.CreateIndex, j.ModifyIndex, j.JobModifyIndex = row.CreateIndex, row.ModifyIndex, row.JobModifyIndex
	if err := rs.txn.Insert(TableJobs, j); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// readSummary keeps the summary's groups and indexes; its counts are
// computed again from the allocations.
func (rs *restorer) readSummary() error {
	s, err := decode[caravan.JobSummary](rs)
	if err != nil {
		return err
	}
	for g := range s.Groups {
		s.Groups[g] = caravan.GroupSummary{}
	}
	if s.Groups == nil {
		s.Groups = map[string]caravan.GroupSummary{}
	}
	rs.summaries[s.JobID] = s
	return nil
}

func (rs *restorer) readAlloc() error {
	a, err := decode[caravan.Allocation](rs)
	if err != nil {
		return err
	}
	key := versionKey{a.JobID, a.JobVersion}
	a.Job = rs.versions[key]
	if a.Job == nil {
		a.Job = rs.orphans[key]
	}
	if a.Job == nil {
		return fmt.Errorf("allocation %s: job %q version %d is not in the snapshot: %w", a.ID, a.JobID, a.JobVersion, caravan.ErrInvalid)
	}
	if err := rs.txn.Insert(TableAllocs, a); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	if !a.Terminal() {
		rs.usage[a.NodeID] = rs.usage[a.NodeID].Add(&a.Resources)
	}
	if s := rs.summaries[a.JobID]; s != nil {
		s.Add(a, +1)
	}
	return nil
}

// finish writes the derived data: usage of every node with allocations
// that are not terminal, and a summary for every job.
func (rs *restorer) finish() error {
	for _, id := range slices.Sorted(maps.Keys(rs.usage)) {
		if err := rs.txn.Insert(TableNodeUsage, &usageRow{NodeID: id, Usage: rs.usage[id]}); err != nil {
			return fmt.Errorf("insert usage of node %q: %w", id, err)
		}
	}
	it, err := rs.txn.Get(TableJobs, indexID)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		j := obj.(*caravan.Job)
		s := rs.summaries[j.ID]
		if s == nil {
			return fmt.Errorf("job %q has no summary in the snapshot: %w", j.ID, caravan.ErrInvalid)
		}
		if err := rs.txn.Insert(TableJobSummary, s); err != nil {
			return fmt.Errorf("insert summary of job %q: %w", j.ID, err)
		}
	}
	return nil
}
