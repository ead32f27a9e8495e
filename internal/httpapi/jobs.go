package httpapi

import (
	"fmt"
	"net/http"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
)

func jobID(j *caravan.Job) string          { return j.ID }
func allocID(a *caravan.Allocation) string { return a.ID }
func evalID(e *caravan.Evaluation) string  { return e.ID }
func nodeID(n *caravan.Node) string        { return n.ID }

// jobFilter reads the job list filters ?status and ?type.
func jobFilter(r *http.Request) (func(*caravan.Job) bool, error) {
	status, err := oneOf(r, "status", caravan.JobStatusPending, caravan.JobStatusRunning,
		caravan.JobStatusComplete, caravan.JobStatusFailed, caravan.JobStatusStopped)
	if err != nil {
		return nil, err
	}
	typ, err := oneOf(r, "type", caravan.JobTypeService, caravan.JobTypeBatch, caravan.JobTypeSystem)
	if err != nil {
		return nil, err
	}
	return func(j *caravan.Job) bool {
		return (status == "" || j.Status == status) && (typ == "" || j.Type == typ)
	}, nil
}

// handleJobList lists jobs as stubs with their summaries, in id order:
// ?prefix, ?status, ?type, paging.
func (a *API) handleJobList() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := parsePaging(r)
		if err != nil {
			return err
		}
		keep, err := jobFilter(r)
		if err != nil {
			return err
		}
		return serveRead(a, w, r, func(snap *state.Snapshot, meta *readMeta) ([]*caravan.JobStub, uint64, error) {
			seq, err := snap.Jobs(p.listOptions())
			if err != nil {
				return nil, 0, err
			}
			jobs, next := collect(seq, p, keep, jobID)
			out := make([]*caravan.JobStub, len(jobs))
			for i, j := range jobs {
				s, _ := snap.JobSummary(j.ID) // nil (no counts) when missing
				out[i] = j.Stub(s)
			}
			meta.next = next
			return out, snap.TableIndex(state.TableJobs, state.TableJobSummary), nil
		})
	})
}

// handleJobRegister registers a job from {"job": {...}}. On /v1/job/{id}
// the body's id must be the path's, or empty.
func (a *API) handleJobRegister() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[caravan.JobRegisterRequest](r)
		if err != nil {
			return err
		}
		if req.Job == nil {
			return caravan.Invalidf("job", `missing: the body is {"job": {...}}`)
		}
		if err := matchPathID(r.PathValue("id"), &req.Job.ID, "job.id"); err != nil {
			return err
		}
		resp, err := a.srv.RegisterJob(r.Context(), req.Job, false)
		if err != nil {
			return underField("job", err)
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// matchPathID fills an empty body id from the path, or checks that the
// two agree.
func matchPathID(pathID string, bodyID *string, field string) error {
	switch {
	case pathID == "":
	case *bodyID == "":
		*bodyID = pathID
	case *bodyID != pathID:
		return caravan.Invalidf(field, "%q does not match the id %q in the path", *bodyID, pathID)
	}
	return nil
}

// handleJobRead returns the newest version of a job.
func (a *API) handleJobRead() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*caravan.Job, uint64, error) {
			job, err := snap.JobByID(id)
			return job, snap.TableIndex(state.TableJobs), err
		})
	})
}

// handleJobVersions returns every kept version of a job, newest first.
func (a *API) handleJobVersions() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) ([]*caravan.Job, uint64, error) {
			versions, err := snap.JobVersions(id)
			return versions, snap.TableIndex(state.TableJobVersions, state.TableJobs), err
		})
	})
}

// handleJobAllocations returns a job's allocations (without the job).
func (a *API) handleJobAllocations() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) ([]*caravan.Allocation, uint64, error) {
			if _, err := snap.JobByID(id); err != nil {
				return nil, 0, err
			}
			allocs, err := snap.AllocsByJob(id)
			return stubs(allocs), snap.TableIndex(state.TableAllocs, state.TableJobs), err
		})
	})
}

// stubs returns the allocations without their job, never nil.
func stubs(allocs []*caravan.Allocation) []*caravan.Allocation {
	out := make([]*caravan.Allocation, len(allocs))
	for i, al := range allocs {
		out[i] = al.Stub()
	}
	return out
}

// handleJobEvaluations returns a job's evaluations.
func (a *API) handleJobEvaluations() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) ([]*caravan.Evaluation, uint64, error) {
			if _, err := snap.JobByID(id); err != nil {
				return nil, 0, err
			}
			evals, err := snap.EvalsByJob(id)
			if evals == nil {
				evals = []*caravan.Evaluation{}
			}
			return evals, snap.TableIndex(state.TableEvals, state.TableJobs), err
		})
	})
}

// handleJobSummary returns a job's allocation counts by group and status.
func (a *API) handleJobSummary() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*caravan.JobSummary, uint64, error) {
			s, err := snap.JobSummary(id)
			if err != nil {
				return nil, 0, fmt.Errorf("job %q: %w", id, err)
			}
			return s, snap.TableIndex(state.TableJobSummary), nil
		})
	})
}

// handleJobStop stops a job; ?purge=true also removes it.
func (a *API) handleJobStop() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		purge, err := boolParam(r, "purge")
		if err != nil {
			return err
		}
		resp, err := a.srv.StopJob(r.Context(), r.PathValue("id"), purge)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// noBody is the body of actions that take no arguments: empty, or {}.
type noBody struct{}

// handleJobEvaluate forces a new evaluation of a job.
func (a *API) handleJobEvaluate() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := decodeOptional(r, &noBody{}); err != nil {
			return err
		}
		resp, err := a.srv.EvaluateJob(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleJobRestart replaces every allocation of a job (a new version with
// the same spec).
func (a *API) handleJobRestart() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := decodeOptional(r, &noBody{}); err != nil {
			return err
		}
		resp, err := a.srv.RestartJob(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}
