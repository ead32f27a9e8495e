package httpapi

import (
	"errors"
	"fmt"
	"iter"
	"net/http"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
)

// unique returns the one item of seq, ErrNotFound when there is none, and
// ErrInvalid when the prefix matches more than one.
func unique[T any](seq iter.Seq[T], kind, prefix string, id func(T) string) (T, error) {
	var found, zero T
	n := 0
	for v := range seq {
		if n == 1 {
			return zero, caravan.Invalidf("id", "%s id prefix %q matches more than one (%s, %s, …)", kind, prefix, id(found), id(v))
		}
		found, n = v, 1
	}
	if n == 0 {
		return zero, fmt.Errorf("%s %q: %w", kind, prefix, caravan.ErrNotFound)
	}
	return found, nil
}

// lookupAlloc finds an allocation by id or unique id prefix.
func lookupAlloc(snap *state.Snapshot, id string) (*caravan.Allocation, error) {
	al, err := snap.AllocByID(id)
	if !errors.Is(err, caravan.ErrNotFound) {
		return al, err
	}
	seq, err := snap.Allocs(state.ListOptions{Prefix: id})
	if err != nil {
		return nil, err
	}
	return unique(seq, "allocation", id, allocID)
}

// lookupEval finds an evaluation by id or unique id prefix.
func lookupEval(snap *state.Snapshot, id string) (*caravan.Evaluation, error) {
	ev, err := snap.EvalByID(id)
	if !errors.Is(err, caravan.ErrNotFound) {
		return ev, err
	}
	seq, err := snap.Evals(state.ListOptions{Prefix: id})
	if err != nil {
		return nil, err
	}
	return unique(seq, "evaluation", id, evalID)
}

// lookupNode finds a node by id or unique id prefix.
func lookupNode(snap *state.Snapshot, id string) (*caravan.Node, error) {
	n, err := snap.NodeByID(id)
	if !errors.Is(err, caravan.ErrNotFound) {
		return n, err
	}
	nodes, err := snap.Nodes()
	if err != nil {
		return nil, err
	}
	return unique(sliceSeq(nodes, paging{prefix: id}, nodeID), "node", id, nodeID)
}

// allocSource picks the cheapest way to list allocations for the filters:
// by job, by node, or the whole table.
func allocSource(snap *state.Snapshot, p paging, job, node string) (iter.Seq[*caravan.Allocation], error) {
	switch {
	case job != "":
		list, err := snap.AllocsByJob(job)
		return sliceSeq(list, p, allocID), err
	case node != "":
		list, err := snap.AllocsByNode(node)
		return sliceSeq(list, p, allocID), err
	}
	return snap.Allocs(p.listOptions())
}

// handleAllocList lists allocations without their jobs, in id order:
// ?job_id, ?node_id, ?client_status, ?prefix, paging.
func (a *API) handleAllocList() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := parsePaging(r)
		if err != nil {
			return err
		}
		status, err := oneOf(r, "client_status", caravan.AllocClientPending, caravan.AllocClientRunning,
			caravan.AllocClientComplete, caravan.AllocClientFailed, caravan.AllocClientLost)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		job, node := q.Get("job_id"), q.Get("node_id")
		keep := func(al *caravan.Allocation) bool {
			return (job == "" || al.JobID == job) && (node == "" || al.NodeID == node) &&
				(status == "" || al.ClientStatus == status)
		}
		return serveRead(a, w, r, func(snap *state.Snapshot, meta *readMeta) ([]*caravan.Allocation, uint64, error) {
			seq, err := allocSource(snap, p, job, node)
			if err != nil {
				return nil, 0, err
			}
			allocs, next := collect(seq, p, keep, allocID)
			meta.next = next
			return stubs(allocs), snap.TableIndex(state.TableAllocs), nil
		})
	})
}

// handleAllocRead returns one allocation with its job.
func (a *API) handleAllocRead() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*caravan.Allocation, uint64, error) {
			al, err := lookupAlloc(snap, id)
			return al, snap.TableIndex(state.TableAllocs), err
		})
	})
}

// handleAllocStop stops one allocation.
func (a *API) handleAllocStop() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := decodeOptional(r, &noBody{}); err != nil {
			return err
		}
		resp, err := a.srv.StopAllocation(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleEvalList lists evaluations in id order: ?job_id, ?status,
// ?prefix, paging.
func (a *API) handleEvalList() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := parsePaging(r)
		if err != nil {
			return err
		}
		status, err := oneOf(r, "status", caravan.EvalStatusPending, caravan.EvalStatusBlocked,
			caravan.EvalStatusComplete, caravan.EvalStatusFailed, caravan.EvalStatusCancelled)
		if err != nil {
			return err
		}
		job := r.URL.Query().Get("job_id")
		keep := func(e *caravan.Evaluation) bool { return status == "" || e.Status == status }
		return serveRead(a, w, r, func(snap *state.Snapshot, meta *readMeta) ([]*caravan.Evaluation, uint64, error) {
			var seq iter.Seq[*caravan.Evaluation]
			if job != "" {
				list, err := snap.EvalsByJob(job)
				if err != nil {
					return nil, 0, err
				}
				seq = sliceSeq(list, p, evalID)
			} else if seq, err = snap.Evals(p.listOptions()); err != nil {
				return nil, 0, err
			}
			evals, next := collect(seq, p, keep, evalID)
			meta.next = next
			return evals, snap.TableIndex(state.TableEvals), nil
		})
	})
}

// handleEvalRead returns one evaluation.
func (a *API) handleEvalRead() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*caravan.Evaluation, uint64, error) {
			ev, err := lookupEval(snap, id)
			return ev, snap.TableIndex(state.TableEvals), err
		})
	})
}

// handleEvalAllocations returns the allocations an evaluation placed.
func (a *API) handleEvalAllocations() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) ([]*caravan.Allocation, uint64, error) {
			ev, err := lookupEval(snap, id)
			if err != nil {
				return nil, 0, err
			}
			allocs, err := snap.AllocsByEval(ev.ID)
			return stubs(allocs), snap.TableIndex(state.TableAllocs, state.TableEvals), err
		})
	})
}
