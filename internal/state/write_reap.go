package state

import (
	"fmt"

	"github.com/caravan-sched/caravan"
)

// JobVersionRef names one version of a job.
type JobVersionRef struct {
	JobID   string `json:"job_id"`
	Version uint64 `json:"version"`
}

// Reap is what garbage collection deletes in one write.
type Reap struct {
	EvalIDs  []string `json:"eval_ids,omitempty"`
	AllocIDs []string `json:"alloc_ids,omitempty"`
	// JobIDs are purged: the job, its versions and its summary.
	JobIDs []string `json:"job_ids,omitempty"`
	// JobVersions are old versions to delete. The job's current version,
	// and versions that allocations still run, are kept.
	JobVersions []JobVersionRef `json:"job_versions,omitempty"`
}

// Reap deletes what garbage collection found. Objects already gone are
// skipped.
func (s *Store) Reap(index uint64, r Reap) error {
	err := s.write(index, func(tx *txn) error {
		for _, id := range r.EvalIDs {
			e, err := tx.eval(id)
			if err != nil {
				return err
			}
			if e == nil {
				continue
			}
			if err := tx.delete(TableEvals, e); err != nil {
				return err
			}
			tx.touched[e.JobID] = struct{}{}
		}
		for _, id := range r.AllocIDs {
			a, err := tx.alloc(id)
			if err != nil {
				return err
			}
			if a == nil {
				continue
			}
			if err := tx.deleteAlloc(a); err != nil {
				return err
			}
		}
		for _, id := range r.JobIDs {
			j, err := tx.job(id)
			if err != nil {
				return err
			}
			if j != nil {
				if err := tx.purgeJob(j); err != nil {
					return err
				}
			}
		}
		for _, v := range r.JobVersions {
			if err := tx.reapVersion(v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reap: %w", err)
	}
	return nil
}

// reapVersion deletes an old job version unless it is the job's current
// one or an allocation still runs it.
func (tx *txn) reapVersion(v JobVersionRef) error {
	ver, err := tx.jobVersion(v.JobID, v.Version)
	if ver == nil || err != nil {
		return err
	}
	if j, err := tx.job(v.JobID); err != nil {
		return err
	} else if j != nil && j.Version == v.Version {
		tx.logger.Warn("not reaping the current version of a job", "job_id", v.JobID, "job_version", v.Version)
		return nil
	}
	allocs, err := tx.allocsIn(tableJobAllocs, v.JobID)
	if err != nil {
		return err
	}
	for _, a := range allocs {
		if a.JobVersion == v.Version {
			tx.logger.Warn("not reaping a job version allocations still run", "job_id", v.JobID, "job_version", v.Version, "alloc_id", a.ID)
			return nil
		}
	}
	return tx.delete(TableJobVersions, ver)
}

// UpsertServer records a Raft peer.
func (s *Store) UpsertServer(index uint64, m ServerMember) error {
	if m.ID == "" {
		return fmt.Errorf("upsert server: id is required: %w", caravan.ErrInvalid)
	}
	err := s.write(index, func(tx *txn) error {
		c := m
		return tx.insert(TableServers, &c)
	})
	if err != nil {
		return fmt.Errorf("upsert server %q: %w", m.ID, err)
	}
	return nil
}

// RemoveServer forgets a Raft peer; an unknown one is not an error.
func (s *Store) RemoveServer(index uint64, id string) error {
	err := s.write(index, func(tx *txn) error {
		obj, err := tx.first(TableServers, id)
		if obj == nil || err != nil {
			return err
		}
		return tx.delete(TableServers, obj)
	})
	if err != nil {
		return fmt.Errorf("remove server %q: %w", id, err)
	}
	return nil
}
