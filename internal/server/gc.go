package server

import (
	"context"
	"sort"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/fsm"
	"github.com/caravan-sched/caravan/internal/state"
)

// maxReapBatch bounds the ids removed by one Raft entry.
const maxReapBatch = 5000

// runGC collects garbage every gc_interval while this server leads.
func (s *Server) runGC(ctx context.Context) error {
	t := time.NewTicker(config.Duration(s.cfg.Server.GCInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := s.CollectGarbage(ctx, false); err != nil && ctx.Err() == nil {
				s.logger.Warn("garbage collection", "error", err)
			}
		}
	}
}

// GCResult counts what a garbage collection removed.
type GCResult struct {
	Jobs        int `json:"jobs"`
	Evals       int `json:"evals"`
	Allocs      int `json:"allocs"`
	JobVersions int `json:"job_versions"`
}

// CollectGarbage removes old terminal evaluations and allocations, finished
// or stopped jobs, and old job versions. With force, age thresholds are
// ignored (everything terminal goes); count thresholds always apply.
//
// Rules that keep history honest: a batch job's allocations stay as long as
// the job does (they are how the scheduler knows an index already ran);
// an allocation waiting for a delayed reschedule stays; a job goes only
// when nothing of it runs or waits.
func (s *Server) CollectGarbage(ctx context.Context, force bool) (GCResult, error) {
	now := time.Now()
	evalCutoff := now.Add(-config.Duration(s.cfg.Server.EvalGCThreshold))
	jobCutoff := now.Add(-config.Duration(s.cfg.Server.JobGCThreshold))
	if force {
		evalCutoff, jobCutoff = now, now
	}
	snap := s.store.Snapshot()
	var reap state.Reap
	purged := map[string]bool{}

	jobs, err := snap.Jobs(state.ListOptions{})
	if err != nil {
		return GCResult{}, err
	}
	for job := range jobs {
		allocs, _ := snap.AllocsByJob(job.ID)
		evals, _ := snap.EvalsByJob(job.ID)
		if jobCollectable(job, allocs, evals, jobCutoff) {
			purged[job.ID] = true
			reap.JobIDs = append(reap.JobIDs, job.ID)
			for _, e := range evals {
				reap.EvalIDs = append(reap.EvalIDs, e.ID)
			}
			for _, a := range allocs {
				reap.AllocIDs = append(reap.AllocIDs, a.ID)
			}
			continue
		}
		reap.JobVersions = append(reap.JobVersions, s.oldVersions(snap, job)...)
	}

	reap.EvalIDs = append(reap.EvalIDs, s.collectEvals(snap, purged, evalCutoff)...)
	reap.AllocIDs = append(reap.AllocIDs, s.collectAllocs(snap, purged, evalCutoff)...)
	res := GCResult{Jobs: len(reap.JobIDs), Evals: len(reap.EvalIDs), Allocs: len(reap.AllocIDs), JobVersions: len(reap.JobVersions)}
	if err := s.applyReap(ctx, reap, now); err != nil {
		return res, err
	}
	if res != (GCResult{}) {
		s.logger.Info("garbage collected", "jobs", res.Jobs, "evals", res.Evals, "allocs", res.Allocs, "job_versions", res.JobVersions)
	}
	return res, nil
}

func jobCollectable(job *caravan.Job, allocs []*caravan.Allocation, evals []*caravan.Evaluation, cutoff time.Time) bool {
	finished := job.Stop || (job.Type == caravan.JobTypeBatch && job.Terminal())
	if !finished || job.SubmitTime.After(cutoff) {
		return false
	}
	for _, a := range allocs {
		if !a.ClientTerminal() && !(a.ServerTerminal() && a.ClientStatus == caravan.AllocClientPending) {
			return false
		}
		if a.ModifyTime.After(cutoff) {
			return false
		}
	}
	for _, e := range evals {
		if !e.Terminal() {
			return false
		}
	}
	return true
}

// oldVersions lists versions beyond the newest max_job_versions.
func (s *Server) oldVersions(snap *state.Snapshot, job *caravan.Job) []state.JobVersionRef {
	keep := s.cfg.Server.MaxJobVersions
	if int(job.Version)+1 <= keep {
		return nil
	}
	versions, err := snap.JobVersions(job.ID)
	if err != nil || len(versions) <= keep {
		return nil
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i].Version > versions[j].Version })
	var out []state.JobVersionRef
	for _, v := range versions[keep:] {
		out = append(out, state.JobVersionRef{JobID: job.ID, Version: v.Version})
	}
	return out
}

// collectEvals picks terminal evaluations older than cutoff, and the oldest
// beyond max_terminal_evals.
func (s *Server) collectEvals(snap *state.Snapshot, purged map[string]bool, cutoff time.Time) []string {
	evals, err := snap.Evals(state.ListOptions{})
	if err != nil {
		return nil
	}
	var old, young []*caravan.Evaluation
	for e := range evals {
		if !e.Terminal() || purged[e.JobID] {
			continue
		}
		if e.ModifyTime.Before(cutoff) || e.ModifyTime.Equal(cutoff) {
			old = append(old, e)
		} else {
			young = append(young, e)
		}
	}
	ids := make([]string, 0, len(old))
	for _, e := range old {
		ids = append(ids, e.ID)
	}
	if over := len(young) - s.cfg.Server.MaxTerminalEvals; over > 0 {
		sort.Slice(young, func(i, j int) bool { return young[i].ModifyTime.Before(young[j].ModifyTime) })
		for _, e := range young[:over] {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// collectAllocs picks terminal allocations that are history: replaced,
// stopped, or of a stopped job; never a batch job's while the job lives, and
// never one waiting for its replacement.
func (s *Server) collectAllocs(snap *state.Snapshot, purged map[string]bool, cutoff time.Time) []string {
	allocs, err := snap.Allocs(state.ListOptions{})
	if err != nil {
		return nil
	}
	var old, young []*caravan.Allocation
	for a := range allocs {
		if purged[a.JobID] || !allocCollectable(snap, a) {
			continue
		}
		if !a.ModifyTime.After(cutoff) {
			old = append(old, a)
		} else {
			young = append(young, a)
		}
	}
	ids := make([]string, 0, len(old))
	for _, a := range old {
		ids = append(ids, a.ID)
	}
	if over := len(young) - s.cfg.Server.MaxTerminalAllocs; over > 0 {
		sort.Slice(young, func(i, j int) bool { return young[i].ModifyTime.Before(young[j].ModifyTime) })
		for _, a := range young[:over] {
			ids = append(ids, a.ID)
		}
	}
	return ids
}

func allocCollectable(snap *state.Snapshot, a *caravan.Allocation) bool {
	if !a.ClientTerminal() {
		return false
	}
	job, err := snap.JobByID(a.JobID)
	if err != nil || job.Stop {
		return true
	}
	if job.Type == caravan.JobTypeBatch {
		return false
	}
	return a.NextAllocation != "" || a.ServerTerminal()
}

func (s *Server) applyReap(ctx context.Context, r state.Reap, now time.Time) error {
	for len(r.JobIDs)+len(r.EvalIDs)+len(r.AllocIDs)+len(r.JobVersions) > 0 {
		var part state.Reap
		budget := maxReapBatch
		take := func(ids *[]string) []string {
			n := min(len(*ids), budget)
			out := (*ids)[:n]
			*ids = (*ids)[n:]
			budget -= n
			return out
		}
		part.JobIDs = take(&r.JobIDs)
		part.EvalIDs = take(&r.EvalIDs)
		part.AllocIDs = take(&r.AllocIDs)
		n := min(len(r.JobVersions), budget)
		part.JobVersions, r.JobVersions = r.JobVersions[:n], r.JobVersions[n:]
		if _, err := s.apply(ctx, fsm.Reap, &fsm.ReapRequest{Time: now, Reap: part}); err != nil {
			return err
		}
	}
	return nil
}
