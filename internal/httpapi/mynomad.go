package httpapi

import (
	"net/http"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/state"
)

// The myNomad-style dialect: the routes and bodies users of such an API
// already know, as thin adapters onto the same server methods as /v1. Job
// bodies are the job itself (not wrapped in {"job": ...}); nodes register
// with the node itself. docs/api.md shows every shape.

// nomadJobResponse answers a job registration, update or restart.
type nomadJobResponse struct {
	JobID      string   `json:"job_id"`
	EvalID     string   `json:"eval_id,omitempty"`
	JobVersion uint64   `json:"job_version"`
	Status     string   `json:"status"`
	Index      uint64   `json:"index"`
	Warnings   []string `json:"warnings,omitempty"`
}

// nomadStopResponse answers a job stop.
type nomadStopResponse struct {
	JobID  string `json:"job_id"`
	EvalID string `json:"eval_id,omitempty"`
	Status string `json:"status"`
	Index  uint64 `json:"index"`
}

// nomadJob is a job with its allocations and their counts, as
// GET /jobs/{job_id} shows it.
type nomadJob struct {
	*caravan.Job
	Summary     map[string]caravan.GroupSummary `json:"summary,omitempty"`
	Allocations []*caravan.Allocation           `json:"allocations"`
}

// nomadHeartbeat is the body of POST /heartbeat.
type nomadHeartbeat struct {
	NodeID   string `json:"node_id"`
	SecretID string `json:"secret_id,omitempty"`
	Status   string `json:"status,omitempty"`
}

// jobStatus is a job's status now, for answers to writes.
func (a *API) jobStatus(id string) string {
	if j, err := a.store.Snapshot().JobByID(id); err == nil {
		return j.Status
	}
	return caravan.JobStatusPending
}

// handleNomadRegister registers a node from the node itself as JSON. A
// node without an id gets a new one; a node without a status registers as
// ready (the dialect has no fingerprinting step).
func (a *API) handleNomadRegister() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		node, err := decodeInto[caravan.Node](r)
		if err != nil {
			return err
		}
		if node.ID == "" {
			node.ID = caravan.NewID()
		}
		if node.Status == "" {
			node.Status = caravan.NodeStatusReady
		}
		resp, err := a.srv.RegisterNode(r.Context(), node)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleNomadHeartbeat records a heartbeat from {"node_id", "secret_id"}
// (or the secret in X-Caravan-Node-Secret) and answers with the TTL.
func (a *API) handleNomadHeartbeat() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[nomadHeartbeat](r)
		if err != nil {
			return err
		}
		if req.NodeID == "" {
			return caravan.Invalidf("node_id", "missing")
		}
		secret := req.SecretID
		if secret == "" {
			secret = r.Header.Get(api.HeaderNodeSecret)
		}
		resp, err := a.srv.Heartbeat(r.Context(), req.NodeID, secret, req.Status)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleNomadJobRegister registers (POST /jobs) or updates
// (PUT /jobs/{job_id}) a job from the job itself as JSON.
func (a *API) handleNomadJobRegister() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		job, err := decodeInto[caravan.Job](r)
		if err != nil {
			return err
		}
		if err := matchPathID(r.PathValue("job_id"), &job.ID, "id"); err != nil {
			return err
		}
		resp, err := a.srv.RegisterJob(r.Context(), job, false)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, nomadJobResponse{
			JobID: resp.JobID, EvalID: resp.EvalID, JobVersion: resp.JobVersion,
			Status: a.jobStatus(resp.JobID), Index: resp.Index, Warnings: resp.Warnings,
		})
		return nil
	})
}

// handleNomadJobRead returns a job with its status, its allocations and
// their counts.
func (a *API) handleNomadJobRead() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("job_id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*nomadJob, uint64, error) {
			job, err := snap.JobByID(id)
			if err != nil {
				return nil, 0, err
			}
			allocs, err := snap.AllocsByJob(id)
			if err != nil {
				return nil, 0, err
			}
			out := &nomadJob{Job: job, Allocations: stubs(allocs)}
			if s, err := snap.JobSummary(id); err == nil {
				out.Summary = s.Groups
			}
			return out, snap.TableIndex(state.TableJobs, state.TableAllocs), nil
		})
	})
}

// handleNomadJobStop stops a job (DELETE /jobs/{job_id} and
// POST /jobs/{job_id}/delete); ?purge=true also removes it.
func (a *API) handleNomadJobStop() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		purge, err := boolParam(r, "purge")
		if err != nil {
			return err
		}
		if err := decodeOptional(r, &noBody{}); err != nil {
			return err
		}
		id := r.PathValue("job_id")
		resp, err := a.srv.StopJob(r.Context(), id, purge)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, nomadStopResponse{JobID: id, EvalID: resp.EvalID, Status: caravan.JobStatusStopped, Index: resp.Index})
		return nil
	})
}

// handleNomadJobRestart replaces every allocation of a job.
func (a *API) handleNomadJobRestart() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := decodeOptional(r, &noBody{}); err != nil {
			return err
		}
		resp, err := a.srv.RestartJob(r.Context(), r.PathValue("job_id"))
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, nomadJobResponse{
			JobID: resp.JobID, EvalID: resp.EvalID, JobVersion: resp.JobVersion,
			Status: a.jobStatus(resp.JobID), Index: resp.Index, Warnings: resp.Warnings,
		})
		return nil
	})
}
