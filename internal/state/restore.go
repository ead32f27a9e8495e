package state

import (
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
		db:        db,
		txn:       db.Txn(true),
		versions:  map[versionKey]*caravan.Job{},
		orphans:   map[versionKey]*caravan.Job{},
		summaries: map[string]*caravan.JobSummary{},
		usage:     map[string]caravan.NodeUsage{},
		jobSets:   map[string][]string{},
		nodeSets:  map[string][]string{},
	}
	if err := rs.load(r); err != nil {
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

// restorer reads a persisted state into a new database, in write
// transactions of restoreTxnRows rows: nobody reads the database before
// Restore installs it, and a radix tree transaction copies far fewer nodes
// when it stays small enough to remember every node it copied.
type restorer struct {
	db        *memdb.MemDB
	txn       *memdb.Txn
	puts      int
	versions  map[versionKey]*caravan.Job
	orphans   map[versionKey]*caravan.Job
	summaries map[string]*caravan.JobSummary
	usage     map[string]caravan.NodeUsage
	// jobSets and nodeSets collect the allocation ids of each job and
	// node.
	jobSets, nodeSets map[string][]string
}

// restoreTxnRows is how many rows one restore transaction writes.
const restoreTxnRows = 2048

// put inserts a row, committing the transaction every restoreTxnRows rows.
func (rs *restorer) put(table string, row any) error {
	if rs.puts++; rs.puts%restoreTxnRows == 0 {
		rs.txn.Commit()
		rs.txn = rs.db.Txn(true)
	}
	return rs.txn.Insert(table, row)
}

// insert adds one decoded row of a section.
func (rs *restorer) insert(section string, row any) error {
	switch section {
	case TableIndex, TableSequence, TableServers, TableNodes, TableEvals:
		if err := rs.put(section, row); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		return nil
	case TableJobVersions:
		return rs.insertVersion(row.(*caravan.Job))
	case TableJobs:
		return rs.insertJob(row.(*jobRow))
	case TableJobSummary:
		return rs.insertSummary(row.(*summaryRow))
	case sectionOrphanJobs:
		j := row.(*caravan.Job)
		rs.orphans[versionKey{j.ID, j.Version}] = j
		return nil
	case TableAllocs:
		return rs.insertAlloc(row.(*caravan.Allocation))
	}
	return fmt.Errorf("unknown section %q: %w", section, caravan.ErrInvalid)
}

func (rs *restorer) insertVersion(j *caravan.Job) error {
	if err := rs.put(TableJobVersions, j); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	rs.versions[versionKey{j.ID, j.Version}] = j
	return nil
}

func (rs *restorer) insertJob(row *jobRow) error {
	base := rs.versions[versionKey{row.ID, row.Version}]
	if base == nil {
		return fmt.Errorf("job %q: version %d is not in the snapshot: %w", row.ID, row.Version, caravan.ErrInvalid)
	}
	j := base.ShallowCopy()
	j.Stop, j.Status, j.StatusDescription, j.SubmitTime = row.Stop, row.Status, row.StatusDescription, row.SubmitTime
	j.CreateIndex, j.ModifyIndex, j.JobModifyIndex = row.CreateIndex, row.ModifyIndex, row.JobModifyIndex
	if err := rs.put(TableJobs, j); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return nil
}

// insertSummary keeps a summary's groups and indexes; its counts are
// computed again from the allocations.
func (rs *restorer) insertSummary(row *summaryRow) error {
	s := &caravan.JobSummary{JobID: row.JobID, Groups: make(map[string]caravan.GroupSummary, len(row.Groups)),
		CreateIndex: row.CreateIndex, ModifyIndex: row.ModifyIndex}
	for _, g := range row.Groups {
		s.Groups[g] = caravan.GroupSummary{}
	}
	rs.summaries[s.JobID] = s
	return nil
}

func (rs *restorer) insertAlloc(a *caravan.Allocation) error {
	key := versionKey{a.JobID, a.JobVersion}
	a.Job = rs.versions[key]
	if a.Job == nil {
		a.Job = rs.orphans[key]
	}
	if a.Job == nil {
		return fmt.Errorf("allocation %s: job %q version %d is not in the snapshot: %w", a.ID, a.JobID, a.JobVersion, caravan.ErrInvalid)
	}
	if err := rs.put(TableAllocs, a); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	if !a.Terminal() {
		rs.usage[a.NodeID] = rs.usage[a.NodeID].Add(&a.Resources)
	}
	rs.jobSets[a.JobID] = append(rs.jobSets[a.JobID], a.ID)
	rs.nodeSets[a.NodeID] = append(rs.nodeSets[a.NodeID], a.ID)
	if s := rs.summaries[a.JobID]; s != nil {
		s.Add(a, +1)
	}
	return nil
}

// finish writes the derived data: usage of every node with allocations
// that are not terminal, the allocation sets, and a summary for every job.
func (rs *restorer) finish() error {
	// Rows go in in key order: a radix tree takes sorted keys far faster.
	for _, t := range []struct {
		table string
		sets  map[string][]string
	}{{tableJobAllocs, rs.jobSets}, {TableNodeUsage, rs.nodeSets}} {
		for _, key := range slices.Sorted(maps.Keys(t.sets)) {
			ids := t.sets[key]
			exact := make([]string, len(ids))
			copy(exact, ids)
			slices.Sort(exact)
			set := &allocSet{Key: key, IDs: exact}
			if t.table == TableNodeUsage {
				set.Usage = rs.usage[key]
			}
			if err := rs.put(t.table, set); err != nil {
				return fmt.Errorf("insert %s %q: %w", t.table, key, err)
			}
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
		if err := rs.put(TableJobSummary, s); err != nil {
			return fmt.Errorf("insert summary of job %q: %w", j.ID, err)
		}
	}
	return nil
}
