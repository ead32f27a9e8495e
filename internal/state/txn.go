package state

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/hashicorp/go-memdb"
)

// txn is one write at one Raft index. It gathers the derived data the
// write changes (node usage, job summaries, jobs whose status may change)
// and writes them once, in finish, in a fixed order.
type txn struct {
	mt     *memdb.Txn
	index  uint64
	logger *slog.Logger

	// summaries holds the job summaries this write changes, copied once
	// per write.
	summaries map[string]*summaryChange
	// touched lists jobs whose status must be derived again.
	touched map[string]struct{}
	// sets holds the allocation sets of jobs and nodes the write changes.
	sets map[setKey]*setChange
	// nodes caches node lookups for sharing strings with allocations.
	nodes map[string]*caravan.Node
	// strs interns repeated strings (evaluation ids) within the write.
	strs map[string]string
	// tables lists the tables written, for the index table.
	tables map[string]bool
	// versions caches job version lookups until job_versions is written.
	versions map[versionKey]*caravan.Job
}

func newTxn(mt *memdb.Txn, index uint64, logger *slog.Logger) *txn {
	return &txn{
		mt:        mt,
		index:     index,
		logger:    logger,
		summaries: map[string]*summaryChange{},
		touched:   map[string]struct{}{},
		tables:    map[string]bool{},
	}
}

// first looks up one object by its primary key; nil when there is none.
func (tx *txn) first(table string, args ...any) (any, error) {
	obj, err := tx.mt.First(table, indexID, args...)
	if err != nil {
		return nil, fmt.Errorf("look up %s %v: %w", table, args, err)
	}
	return obj, nil
}

func (tx *txn) insert(table string, obj any) error {
	if err := tx.mt.Insert(table, obj); err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	tx.wrote(table)
	return nil
}

// wrote records a write to table.
func (tx *txn) wrote(table string) {
	tx.tables[table] = true
	if table == TableJobVersions {
		tx.versions = nil
	}
}

func (tx *txn) delete(table string, obj any) error {
	if err := tx.mt.Delete(table, obj); err != nil {
		return fmt.Errorf("delete from %s: %w", table, err)
	}
	tx.wrote(table)
	return nil
}

func (tx *txn) job(id string) (*caravan.Job, error) {
	obj, err := tx.first(TableJobs, id)
	if obj == nil || err != nil {
		return nil, err
	}
	return obj.(*caravan.Job), nil
}

func (tx *txn) jobVersion(id string, version uint64) (*caravan.Job, error) {
	k := versionKey{id, version}
	if j, ok := tx.versions[k]; ok {
		return j, nil
	}
	obj, err := tx.first(TableJobVersions, id, version)
	if err != nil {
		return nil, err
	}
	j, _ := obj.(*caravan.Job)
	if tx.versions == nil {
		tx.versions = map[versionKey]*caravan.Job{}
	}
	tx.versions[k] = j
	return j, nil
}

func (tx *txn) node(id string) (*caravan.Node, error) {
	if n, ok := tx.nodes[id]; ok {
		return n, nil
	}
	obj, err := tx.first(TableNodes, id)
	if err != nil {
		return nil, err
	}
	n, _ := obj.(*caravan.Node)
	if tx.nodes == nil {
		tx.nodes = map[string]*caravan.Node{}
	}
	tx.nodes[id] = n
	return n, nil
}

func (tx *txn) alloc(id string) (*caravan.Allocation, error) {
	obj, err := tx.first(TableAllocs, id)
	if obj == nil || err != nil {
		return nil, err
	}
	return obj.(*caravan.Allocation), nil
}

func (tx *txn) eval(id string) (*caravan.Evaluation, error) {
	obj, err := tx.first(TableEvals, id)
	if obj == nil || err != nil {
		return nil, err
	}
	return obj.(*caravan.Evaluation), nil
}

// intern returns a shared copy of s for strings repeated within one write.
func (tx *txn) intern(s string) string {
	if s == "" {
		return s
	}
	if v, ok := tx.strs[s]; ok {
		return v
	}
	if tx.strs == nil {
		tx.strs = map[string]string{}
	}
	tx.strs[s] = s
	return s
}

// summaryChange is a job summary before a write (nil when there was none)
// and as the write changes it (nil when there is none after it).
type summaryChange struct {
	orig, cur *caravan.JobSummary
}

// summary returns the job's summary as changed by this write, for
// updating in place, or nil when the job has none.
func (tx *txn) summary(jobID string) (*caravan.JobSummary, error) {
	if c, ok := tx.summaries[jobID]; ok {
		return c.cur, nil
	}
	orig, err := tx.storedSummary(jobID)
	if err != nil {
		return nil, err
	}
	c := &summaryChange{orig: orig}
	if orig != nil {
		c.cur = orig.Copy()
	}
	tx.summaries[jobID] = c
	return c.cur, nil
}

// peekSummary returns the job's summary as the write sees it, without
// preparing it for changes.
func (tx *txn) peekSummary(jobID string) (*caravan.JobSummary, error) {
	if c, ok := tx.summaries[jobID]; ok {
		return c.cur, nil
	}
	return tx.storedSummary(jobID)
}

func (tx *txn) storedSummary(jobID string) (*caravan.JobSummary, error) {
	obj, err := tx.first(TableJobSummary, jobID)
	if obj == nil || err != nil {
		return nil, err
	}
	return obj.(*caravan.JobSummary), nil
}

// setSummary makes s the job's summary (nil: none) for the rest of the
// write.
func (tx *txn) setSummary(jobID string, s *caravan.JobSummary) error {
	if _, err := tx.summary(jobID); err != nil {
		return err
	}
	tx.summaries[jobID].cur = s
	return nil
}

// putAlloc writes an allocation that replaces old (nil for a new one) and
// keeps node usage, the job's summary and status in step.
func (tx *txn) putAlloc(old, a *caravan.Allocation) error {
	if old != nil && (old.JobID != a.JobID || old.NodeID != a.NodeID) {
		return fmt.Errorf("allocation %s cannot move from job %q on node %q to job %q on node %q: %w",
			a.ID, old.JobID, old.NodeID, a.JobID, a.NodeID, caravan.ErrInvalid)
	}
	if err := tx.insert(TableAllocs, a); err != nil {
		return fmt.Errorf("allocation %s: %w", a.ID, err)
	}
	if err := tx.trackAlloc(old, a); err != nil {
		return err
	}
	return tx.allocChanged(old, a)
}

// deleteAlloc removes an allocation and its share of the derived data.
func (tx *txn) deleteAlloc(old *caravan.Allocation) error {
	if err := tx.delete(TableAllocs, old); err != nil {
		return fmt.Errorf("allocation %s: %w", old.ID, err)
	}
	if err := tx.trackAlloc(old, nil); err != nil {
		return err
	}
	return tx.allocChanged(old, nil)
}

// allocChanged updates node usage and the job summary for an allocation
// going from old to a (either may be nil), and marks the job for a new
// status.
func (tx *txn) allocChanged(old, a *caravan.Allocation) error {
	if err := tx.adjustUsage(old, a); err != nil {
		return err
	}
	jobID := ""
	if a != nil {
		jobID = a.JobID
	} else {
		jobID = old.JobID
	}
	s, err := tx.summary(jobID)
	if err != nil {
		return err
	}
	if s != nil {
		if old != nil {
			s.Add(old, -1)
		}
		if a != nil {
			s.Add(a, +1)
		}
	}
	tx.touched[jobID] = struct{}{}
	return nil
}

// adjustUsage counts an allocation on its node exactly while it is not
// terminal.
func (tx *txn) adjustUsage(old, a *caravan.Allocation) error {
	oldCounts := old != nil && !old.Terminal()
	newCounts := a != nil && !a.Terminal()
	if oldCounts && newCounts && old.NodeID == a.NodeID && sameResources(&old.Resources, &a.Resources) {
		return nil
	}
	if oldCounts {
		c, err := tx.setChange(TableNodeUsage, old.NodeID)
		if err != nil {
			return err
		}
		c.usage, c.written = c.usage.Remove(&old.Resources), true
	}
	if newCounts {
		c, err := tx.setChange(TableNodeUsage, a.NodeID)
		if err != nil {
			return err
		}
		c.usage, c.written = c.usage.Add(&a.Resources), true
	}
	return nil
}

func sameResources(a, b *caravan.AllocatedResources) bool {
	return a.CPU == b.CPU && a.Memory == b.Memory && slices.Equal(a.Cores, b.Cores) && slices.Equal(a.Ports, b.Ports)
}

// hasOpenEval reports whether the job has a pending or blocked evaluation,
// as this write sees it.
func (tx *txn) hasOpenEval(jobID string) (bool, error) {
	obj, err := tx.mt.First(TableEvals, indexOpenJob, jobID)
	if err != nil {
		return false, fmt.Errorf("look up open evaluations of job %q: %w", jobID, err)
	}
	return obj != nil, nil
}

// finish writes the derived data gathered by the write, then the index
// table for every table written.
func (tx *txn) finish() error {
	for _, id := range slices.Sorted(maps.Keys(tx.touched)) {
		if err := tx.deriveJobStatus(id); err != nil {
			return err
		}
	}
	for _, id := range slices.Sorted(maps.Keys(tx.summaries)) {
		if err := tx.writeSummary(tx.summaries[id]); err != nil {
			return err
		}
	}
	if err := tx.writeSets(); err != nil {
		return err
	}
	return tx.writeIndexes()
}

// writeSummary writes a summary the write created, deleted or changed.
func (tx *txn) writeSummary(c *summaryChange) error {
	switch {
	case c.cur == nil && c.orig == nil:
		return nil
	case c.cur == nil:
		return tx.delete(TableJobSummary, c.orig)
	case c.orig != nil && maps.Equal(c.orig.Groups, c.cur.Groups) && c.cur.CreateIndex == c.orig.CreateIndex:
		return nil
	}
	c.cur.ModifyIndex = tx.index
	if c.orig == nil || c.cur.CreateIndex == 0 {
		c.cur.CreateIndex = tx.index
	}
	return tx.insert(TableJobSummary, c.cur)
}

// deriveJobStatus writes the job again when its derived status changed.
func (tx *txn) deriveJobStatus(jobID string) error {
	j, err := tx.job(jobID)
	if j == nil || err != nil {
		return err
	}
	status, err := tx.statusOf(j, false)
	if err != nil || status == j.Status {
		return err
	}
	c := j.ShallowCopy()
	c.Status = status
	c.ModifyIndex = tx.index
	return tx.insert(TableJobs, c)
}

// statusOf derives a job's status from its summary and open evaluations;
// moreOpen counts an open evaluation not written yet.
func (tx *txn) statusOf(j *caravan.Job, moreOpen bool) (string, error) {
	s, err := tx.peekSummary(j.ID)
	if err != nil {
		return "", err
	}
	if s == nil {
		s = &caravan.JobSummary{JobID: j.ID}
	}
	open, err := tx.hasOpenEval(j.ID)
	if err != nil {
		return "", err
	}
	return caravan.DeriveJobStatus(j, s, open || moreOpen), nil
}

// writeIndexes records the Raft index for every table the write changed.
func (tx *txn) writeIndexes() error {
	for _, t := range slices.Sorted(maps.Keys(tx.tables)) {
		if err := tx.insert(TableIndex, &indexRow{Table: t, Index: tx.index}); err != nil {
			return err
		}
	}
	return nil
}

// upsertEval inserts or updates an evaluation at this index.
func (tx *txn) upsertEval(e *caravan.Evaluation, now time.Time) error {
	if e == nil {
		return fmt.Errorf("evaluation is null: %w", caravan.ErrInvalid)
	}
	if e.ID == "" || e.JobID == "" {
		return fmt.Errorf("evaluation %q for job %q: id and job_id are required: %w", e.ID, e.JobID, caravan.ErrInvalid)
	}
	old, err := tx.eval(e.ID)
	if err != nil {
		return err
	}
	c := *e
	c.ModifyIndex, c.ModifyTime = tx.index, now
	if old != nil {
		c.CreateIndex, c.CreateTime = old.CreateIndex, old.CreateTime
	} else {
		c.CreateIndex, c.CreateTime = tx.index, now
	}
	if err := tx.insert(TableEvals, &c); err != nil {
		return fmt.Errorf("evaluation %s: %w", e.ID, err)
	}
	tx.touched[c.JobID] = struct{}{}
	if old != nil && old.JobID != c.JobID {
		tx.touched[old.JobID] = struct{}{}
	}
	return nil
}

func (tx *txn) upsertEvals(evals []*caravan.Evaluation, now time.Time) error {
	for _, e := range evals {
		if err := tx.upsertEval(e, now); err != nil {
			return err
		}
	}
	return nil
}
