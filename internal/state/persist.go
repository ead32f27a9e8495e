package state

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/hashicorp/go-memdb"
)

// The persisted form of the state is JSON lines: a header, then one
// section per table (a line naming the table and counting its rows, then
// the rows), then an end line. Derived data (node usage, summary counts)
// is not written; Restore computes it again. Allocations are written
// without their job and linked again to their job version on Restore.

const (
	persistFormat  = "caravan-state"
	persistVersion = 1
	// sectionOrphanJobs holds job versions no longer in job_versions that
	// allocations still run (their job was purged).
	sectionOrphanJobs = "orphan_jobs"
)

type persistHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

type sectionHeader struct {
	Table string `json:"table,omitempty"`
	Count int    `json:"count,omitempty"`
	End   bool   `json:"end,omitempty"`
}

// jobRow is the jobs table row: the server-managed fields on top of the
// job version it shares its spec with.
type jobRow struct {
	ID                string    `json:"id"`
	Version           uint64    `json:"version"`
	Stop              bool      `json:"stop,omitempty"`
	Status            string    `json:"status,omitempty"`
	StatusDescription string    `json:"status_description,omitempty"`
	SubmitTime        time.Time `json:"submit_time,omitzero"`
	CreateIndex       uint64    `json:"create_index"`
	ModifyIndex       uint64    `json:"modify_index"`
	JobModifyIndex    uint64    `json:"job_modify_index"`
}

// summaryRow is a job summary without its counts, which Restore computes
// again from the allocations: its groups and indexes.
type summaryRow struct {
	JobID       string   `json:"job_id"`
	Groups      []string `json:"groups"`
	CreateIndex uint64   `json:"create_index"`
	ModifyIndex uint64   `json:"modify_index"`
}

func summaryRowOf(s *caravan.JobSummary) summaryRow {
	return summaryRow{JobID: s.JobID, Groups: slices.Sorted(maps.Keys(s.Groups)), CreateIndex: s.CreateIndex, ModifyIndex: s.ModifyIndex}
}

// persistedAlloc writes an allocation without its job: the outer Job field
// hides the embedded one.
type persistedAlloc struct {
	*caravan.Allocation
	Job *struct{} `json:"job,omitempty"`
}

// Persist writes the snapshot to w, streaming: memory stays bounded
// whatever the size of the state.
func (s *Snapshot) Persist(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(persistHeader{Format: persistFormat, Version: persistVersion}); err != nil {
		return fmt.Errorf("persist state: %w", err)
	}
	plain := []string{TableIndex, TableSequence, TableServers, TableNodes, TableJobVersions}
	for _, t := range plain {
		if err := s.persistTable(enc, t, func(obj any) any { return obj }); err != nil {
			return err
		}
	}
	if err := s.persistTable(enc, TableJobs, func(obj any) any { return rowOf(obj.(*caravan.Job)) }); err != nil {
		return err
	}
	if err := s.persistTable(enc, TableJobSummary, func(obj any) any { return summaryRowOf(obj.(*caravan.JobSummary)) }); err != nil {
		return err
	}
	if err := s.persistTable(enc, TableEvals, func(obj any) any { return obj }); err != nil {
		return err
	}
	if err := s.persistOrphanJobs(enc); err != nil {
		return err
	}
	if err := s.persistTable(enc, TableAllocs, func(obj any) any { return persistedAlloc{Allocation: obj.(*caravan.Allocation)} }); err != nil {
		return err
	}
	if err := enc.Encode(sectionHeader{End: true}); err != nil {
		return fmt.Errorf("persist state: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("persist state: %w", err)
	}
	return nil
}

func rowOf(j *caravan.Job) jobRow {
	return jobRow{
		ID: j.ID, Version: j.Version, Stop: j.Stop, Status: j.Status, StatusDescription: j.StatusDescription,
		SubmitTime: j.SubmitTime, CreateIndex: j.CreateIndex, ModifyIndex: j.ModifyIndex, JobModifyIndex: j.JobModifyIndex,
	}
}

// persistTable writes one table's section: its row count, then each row
// as conv makes it.
func (s *Snapshot) persistTable(enc *json.Encoder, table string, conv func(any) any) error {
	txn := s.txn
	count, err := countRows(txn, table)
	if err != nil {
		return err
	}
	if err := enc.Encode(sectionHeader{Table: table, Count: count}); err != nil {
		return fmt.Errorf("persist %s: %w", table, err)
	}
	it, err := txn.Get(table, indexID)
	if err != nil {
		return fmt.Errorf("persist %s: %w", table, err)
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if err := enc.Encode(conv(obj)); err != nil {
			return fmt.Errorf("persist %s: %w", table, err)
		}
	}
	return nil
}

func countRows(txn *memdb.Txn, table string) (int, error) {
	it, err := txn.Get(table, indexID)
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", table, err)
	}
	n := 0
	for obj := it.Next(); obj != nil; obj = it.Next() {
		n++
	}
	return n, nil
}

// persistOrphanJobs writes the job versions allocations run that are no
// longer in job_versions, once each.
func (s *Snapshot) persistOrphanJobs(enc *json.Encoder) error {
	txn := s.txn
	it, err := txn.Get(TableAllocs, indexID)
	if err != nil {
		return fmt.Errorf("persist %s: %w", sectionOrphanJobs, err)
	}
	kept := map[*caravan.Job]bool{}
	var orphans []*caravan.Job
	for obj := it.Next(); obj != nil; obj = it.Next() {
		j := obj.(*caravan.Allocation).Job
		if j == nil {
			continue
		}
		if _, seen := kept[j]; seen {
			continue
		}
		stored, err := txn.First(TableJobVersions, indexID, j.ID, j.Version)
		if err != nil {
			return fmt.Errorf("persist %s: %w", sectionOrphanJobs, err)
		}
		kept[j] = stored != nil
		if stored == nil {
			orphans = append(orphans, j)
		}
	}
	if err := enc.Encode(sectionHeader{Table: sectionOrphanJobs, Count: len(orphans)}); err != nil {
		return fmt.Errorf("persist %s: %w", sectionOrphanJobs, err)
	}
	for _, j := range orphans {
		if err := enc.Encode(j); err != nil {
			return fmt.Errorf("persist %s: %w", sectionOrphanJobs, err)
		}
	}
	return nil
}
