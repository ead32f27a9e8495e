package state

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caravan-sched/caravan"
)

// The write methods below are called by the Raft FSM, one per command, with
// the entry's index and the time the leader put into it. Each is one
// transaction: on error nothing is written. They take ownership of the
// objects passed in; the caller must not modify them afterwards.

// RegisteredJob is what RegisterJob wrote.
type RegisteredJob struct {
	JobID   string
	Version uint64
}

// RegisterJob creates or updates a job (already canonicalized and
// validated). A job without an id gets the next number of the job id
// sequence, from 1001. A new job gets version 0 (or, when allocations of a
// purged job with the same id remain, the version after theirs); an
// existing one a new
// version when its spec changed, when it was stopped, or when
// forceNewVersion (a restart), and keeps its version otherwise. eval, when
// not nil, is written for the job.
func (s *Store) RegisterJob(index uint64, now time.Time, job *caravan.Job, eval *caravan.Evaluation, forceNewVersion bool) (RegisteredJob, error) {
	out, err := s.RegisterJobs(index, []JobRegistration{{Time: now, Job: job, Eval: eval, ForceNewVersion: forceNewVersion}})
	if err != nil {
		return RegisteredJob{}, err
	}
	return out[0], nil
}

// JobRegistration is one job registration of RegisterJobs: the arguments
// of RegisterJob.
type JobRegistration struct {
	Time            time.Time
	Job             *caravan.Job
	Eval            *caravan.Evaluation
	ForceNewVersion bool
}

// RegisterJobs makes several registrations, one after another as
// RegisterJob would, in one transaction at one index: a job registered
// twice sees its first registration. When one fails, none is written.
func (s *Store) RegisterJobs(index uint64, regs []JobRegistration) ([]RegisteredJob, error) {
	for _, r := range regs {
		if err := checkJobShape(r.Job); err != nil {
			return nil, fmt.Errorf("register job: %w", err)
		}
	}
	out := make([]RegisteredJob, len(regs))
	err := s.write(index, func(tx *txn) error {
		for i, r := range regs {
			reg, err := tx.registerWithEval(r)
			if err != nil {
				return fmt.Errorf("register job %q: %w", r.Job.ID, err)
			}
			out[i] = reg
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// registerWithEval writes one registration and its evaluation.
func (tx *txn) registerWithEval(r JobRegistration) (RegisteredJob, error) {
	j, newVersion, err := tx.registerJob(r.Time, r.Job, r.ForceNewVersion)
	if err != nil {
		return RegisteredJob{}, err
	}
	var e *caravan.Evaluation
	if r.Eval != nil {
		e = evalForJob(r.Eval, j)
	}
	// The job is written with the status it has once e is written.
	if j.Status, err = tx.statusOf(j, e != nil && openEvalJob(e) != ""); err != nil {
		return RegisteredJob{}, err
	}
	if newVersion {
		if err := tx.insert(TableJobVersions, j); err != nil {
			return RegisteredJob{}, err
		}
	}
	if err := tx.insert(TableJobs, j); err != nil {
		return RegisteredJob{}, err
	}
	if e != nil {
		if err := tx.upsertEval(e, r.Time); err != nil {
			return RegisteredJob{}, err
		}
	}
	return RegisteredJob{JobID: j.ID, Version: j.Version}, nil
}

// checkJobShape refuses a job the store cannot work with: null, or with a
// null task group or task. (The server validates jobs before they reach the
// log; this keeps a malformed entry from crashing every server.)
func checkJobShape(j *caravan.Job) error {
	if j == nil {
		return caravan.Invalidf("job", "null")
	}
	for i, tg := range j.TaskGroups {
		if tg == nil {
			return caravan.Invalidf(fmt.Sprintf("task_groups[%d]", i), "null")
		}
		for k, t := range tg.Tasks {
			if t == nil {
				return caravan.Invalidf(fmt.Sprintf("task_groups[%d].tasks[%d]", i, k), "null")
			}
		}
	}
	return nil
}

// evalForJob fills in the evaluation's job fields.
func evalForJob(e *caravan.Evaluation, j *caravan.Job) *caravan.Evaluation {
	c := *e
	c.JobID = j.ID
	c.JobModifyIndex = j.JobModifyIndex
	if c.SubmitTime.IsZero() {
		c.SubmitTime = j.SubmitTime
	}
	return &c
}

// registerJob returns the job to write, and whether it is a new version.
func (tx *txn) registerJob(now time.Time, job *caravan.Job, forceNewVersion bool) (*caravan.Job, bool, error) {
	j := job.ShallowCopy()
	if j.ID == "" {
		id, err := tx.nextJobID()
		if err != nil {
			return nil, false, err
		}
		j.ID = id
	}
	old, err := tx.job(j.ID)
	if err != nil {
		return nil, false, err
	}
	j.Stop = false
	j.ModifyIndex = tx.index
	newVersion := true
	switch {
	case old == nil:
		first, err := tx.newSummary(j)
		if err != nil {
			return nil, false, err
		}
		j.Version, j.CreateIndex = first, tx.index
	case old.Stop || forceNewVersion || !old.SpecEqual(j):
		j.Version, j.CreateIndex = old.Version+1, old.CreateIndex
	default:
		newVersion = false
		// The stored version keeps being the spec: share it.
		kept, err := tx.jobVersion(old.ID, old.Version)
		if err != nil {
			return nil, false, err
		}
		if kept != nil {
			j = kept.ShallowCopy()
			j.Stop, j.ModifyIndex = false, tx.index
		}
		j.Version, j.CreateIndex = old.Version, old.CreateIndex
		j.JobModifyIndex, j.SubmitTime = old.JobModifyIndex, old.SubmitTime
		j.Status, j.StatusDescription = old.Status, old.StatusDescription
	}
	if newVersion {
		j.JobModifyIndex, j.SubmitTime = tx.index, now
		if err := tx.addSummaryGroups(j); err != nil {
			return nil, false, err
		}
	}
	return j, newVersion, nil
}

// nextJobID hands out the next free number of the job id sequence.
func (tx *txn) nextJobID() (string, error) {
	obj, err := tx.first(TableSequence, jobIDSequence)
	if err != nil {
		return "", err
	}
	next := uint64(firstJobNumber)
	if obj != nil {
		next = max(next, obj.(*sequenceRow).Value+1)
	}
	for {
		id := strconv.FormatUint(next, 10)
		taken, err := tx.job(id)
		if err != nil {
			return "", err
		}
		if taken == nil {
			if err := tx.insert(TableSequence, &sequenceRow{Name: jobIDSequence, Value: next}); err != nil {
				return "", err
			}
			return id, nil
		}
		next++
	}
}

// newSummary starts the summary of a new job, counting any allocations of
// an earlier, purged job with the same id that are still in state. It
// returns the new job's first version: 0, or one above the newest version
// those allocations run, so that a job version is never confused with an
// earlier job's.
func (tx *txn) newSummary(j *caravan.Job) (uint64, error) {
	s := &caravan.JobSummary{JobID: j.ID, Groups: map[string]caravan.GroupSummary{}}
	allocs, err := tx.allocsIn(tableJobAllocs, j.ID)
	if err != nil {
		return 0, err
	}
	var first uint64
	for _, a := range allocs {
		s.Add(a, +1)
		first = max(first, a.JobVersion+1)
	}
	return first, tx.setSummary(j.ID, s)
}

// addSummaryGroups lists every task group of the job in its summary.
func (tx *txn) addSummaryGroups(j *caravan.Job) error {
	s, err := tx.summary(j.ID)
	if s == nil || err != nil {
		return err
	}
	for _, tg := range j.TaskGroups {
		if _, ok := s.Groups[tg.Name]; !ok {
			s.Groups[tg.Name] = caravan.GroupSummary{}
		}
	}
	return nil
}

// StopJob stops a job, or with purge deletes it with its versions and
// summary (its allocations and evaluations stay until garbage collection).
// eval, when not nil, is written for the job. An unknown job is
// ErrNotFound.
func (s *Store) StopJob(index uint64, now time.Time, jobID string, purge bool, eval *caravan.Evaluation) error {
	err := s.write(index, func(tx *txn) error {
		j, err := tx.job(jobID)
		if err != nil {
			return err
		}
		if j == nil {
			return errNotFoundf("job %q", jobID)
		}
		if purge {
			err = tx.purgeJob(j)
		} else {
			err = tx.stopJob(j)
		}
		if err != nil {
			return err
		}
		if eval != nil {
			return tx.upsertEval(evalForJob(eval, j), now)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("stop job %q: %w", jobID, err)
	}
	return nil
}

func (tx *txn) stopJob(j *caravan.Job) error {
	c := j.ShallowCopy()
	c.Stop = true
	c.Status = caravan.JobStatusStopped
	c.ModifyIndex = tx.index
	return tx.insert(TableJobs, c)
}

// purgeJob deletes the job, every version of it and its summary.
func (tx *txn) purgeJob(j *caravan.Job) error {
	if err := tx.delete(TableJobs, j); err != nil {
		return err
	}
	if n, err := tx.mt.DeleteAll(TableJobVersions, indexID+"_prefix", j.ID); err != nil {
		return fmt.Errorf("delete versions of job %q: %w", j.ID, err)
	} else if n > 0 {
		tx.wrote(TableJobVersions)
	}
	return tx.setSummary(j.ID, nil)
}
