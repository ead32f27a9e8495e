package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/fsm"
)

// RegisterJob validates and submits a job: a new job, or a new version of
// an existing one. force makes a new version even when the spec is
// unchanged (a restart).
func (s *Server) RegisterJob(ctx context.Context, job *caravan.Job, force bool) (*caravan.JobRegisterResponse, error) {
	if job == nil {
		return nil, caravan.Invalidf("job", "missing")
	}
	job.Canonicalize()
	if err := job.Validate(); err != nil {
		return nil, err
	}
	if job.ID != "" {
		if cur, err := s.store.Snapshot().JobByID(job.ID); err == nil && cur.Type != job.Type {
			return nil, caravan.Invalidf("type", "job %s is a %s job; its type cannot change to %s (stop and purge it first)", job.ID, cur.Type, job.Type)
		}
	}
	now := time.Now()
	job.SubmitTime = now
	eval := s.evalFor(job, caravan.TriggerJobRegister, now)
	out, index, err := s.registerJob(ctx, fsm.JobRegisterRequest{Time: now, Job: job, Eval: eval, ForceNewVersion: force})
	if err != nil {
		return nil, err
	}
	return &caravan.JobRegisterResponse{
		JobID: out.JobID, EvalID: eval.ID, JobVersion: out.Version, Index: index,
		Warnings: jobWarnings(job),
	}, nil
}

// jobWarnings tells users what the server did with their spec that they
// may not expect.
func jobWarnings(job *caravan.Job) []string {
	var w []string
	for _, tg := range job.TaskGroups {
		for _, t := range tg.Tasks {
			if t.Config.Port > 0 {
				w = append(w, fmt.Sprintf("task %s: config.port %d is published on a host port the scheduler picks (label %q in the allocation's resources)", t.Name, t.Config.Port, caravan.DockerPortLabel))
			}
		}
	}
	return w
}

// StopJob stops a job's allocations; purge also removes the job from state.
func (s *Server) StopJob(ctx context.Context, id string, purge bool) (*caravan.EvalResponse, error) {
	job, err := s.store.Snapshot().JobByID(id)
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", id, err)
	}
	now := time.Now()
	eval := s.evalFor(job, caravan.TriggerJobDeregister, now)
	resp, err := s.apply(ctx, fsm.JobStop, &fsm.JobStopRequest{Time: now, JobID: job.ID, Purge: purge, Eval: eval})
	if err != nil {
		return nil, err
	}
	s.blocked.Untrack(job.ID)
	return &caravan.EvalResponse{EvalID: eval.ID, Index: resp.Index}, nil
}

// EvaluateJob forces a new evaluation of a job.
func (s *Server) EvaluateJob(ctx context.Context, id string) (*caravan.EvalResponse, error) {
	job, err := s.store.Snapshot().JobByID(id)
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", id, err)
	}
	now := time.Now()
	eval := s.evalFor(job, caravan.TriggerForce, now)
	resp, err := s.apply(ctx, fsm.EvalUpsert, &fsm.EvalUpsertRequest{Time: now, Evals: []*caravan.Evaluation{eval}})
	if err != nil {
		return nil, err
	}
	return &caravan.EvalResponse{EvalID: eval.ID, Index: resp.Index}, nil
}

// RestartJob replaces every allocation of a running job, max_parallel at a
// time, by registering its spec again as a new version.
func (s *Server) RestartJob(ctx context.Context, id string) (*caravan.JobRegisterResponse, error) {
	job, err := s.store.Snapshot().JobByID(id)
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", id, err)
	}
	if job.Stop {
		return nil, fmt.Errorf("job %q is stopped; register it again to start it: %w", id, caravan.ErrConflict)
	}
	return s.RegisterJob(ctx, job.Copy(), true)
}

// StopAllocation stops one allocation. The scheduler replaces it when its
// job still wants the copy.
func (s *Server) StopAllocation(ctx context.Context, id string) (*caravan.EvalResponse, error) {
	alloc, err := s.lookupAlloc(id)
	if err != nil {
		return nil, err
	}
	if alloc.Terminal() {
		return nil, fmt.Errorf("allocation %s is already %s: %w", alloc.ID, alloc.ClientStatus, caravan.ErrConflict)
	}
	now := time.Now()
	job := alloc.Job
	if cur, err := s.store.Snapshot().JobByID(alloc.JobID); err == nil {
		job = cur
	}
	var evals []*caravan.Evaluation
	var evalID string
	if job != nil {
		e := s.evalFor(job, caravan.TriggerAllocStop, now)
		evals, evalID = []*caravan.Evaluation{e}, e.ID
	}
	stop := alloc.ShallowCopy()
	stop.Job = nil
	stop.DesiredStatus = caravan.AllocDesiredStop
	stop.DesiredDescription = "stopped by a user"
	resp, err := s.apply(ctx, fsm.PlanApply, &fsm.PlanApplyRequest{Time: now, Plans: []stateplan{{
		EvalID: evalID, JobID: alloc.JobID, Stops: []*caravan.Allocation{stop}, Evals: evals,
	}}})
	if err != nil {
		return nil, err
	}
	return &caravan.EvalResponse{EvalID: evalID, Index: resp.Index}, nil
}

// lookupAlloc finds an allocation by id or unique id prefix.
func (s *Server) lookupAlloc(id string) (*caravan.Allocation, error) {
	snap := s.store.Snapshot()
	if a, err := snap.AllocByID(id); err == nil {
		return a, nil
	}
	if len(id) < 4 || strings.ContainsAny(id, " /") {
		return nil, fmt.Errorf("allocation %q: %w", id, caravan.ErrNotFound)
	}
	return uniquePrefix(snap.Allocs, id, "allocation", func(a *caravan.Allocation) string { return a.ID })
}
