package httpapi

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/state"
)

// Node statuses the list filters on: liveness, or the display word that
// folds in drain and eligibility.
var nodeStatuses = []string{caravan.NodeStatusInitializing, caravan.NodeStatusReady,
	caravan.NodeStatusDown, "draining", caravan.NodeIneligible}

// nodeView returns a node as users see it: without its secret, with the
// newest heartbeat this server has seen.
func (a *API) nodeView(n *caravan.Node) *caravan.Node {
	c := *n
	c.SecretID = ""
	if hb := a.srv.LastHeartbeat(n.ID); hb.After(c.LastHeartbeat) {
		c.LastHeartbeat = hb
	}
	return &c
}

// handleNodeList lists nodes in id order: ?prefix, ?pool, ?status, paging.
func (a *API) handleNodeList() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := parsePaging(r)
		if err != nil {
			return err
		}
		status, err := oneOf(r, "status", nodeStatuses...)
		if err != nil {
			return err
		}
		pool := r.URL.Query().Get("pool")
		keep := func(n *caravan.Node) bool {
			return (pool == "" || n.NodePool == pool) &&
				(status == "" || n.Status == status || n.DisplayStatus() == status)
		}
		return serveRead(a, w, r, func(snap *state.Snapshot, meta *readMeta) ([]*caravan.Node, uint64, error) {
			all, err := snap.Nodes()
			if err != nil {
				return nil, 0, err
			}
			nodes, next := collect(sliceSeq(all, p, nodeID), p, keep, nodeID)
			for i, n := range nodes {
				nodes[i] = a.nodeView(n)
			}
			meta.next = next
			return nodes, snap.TableIndex(state.TableNodes), nil
		})
	})
}

// handleNodeRead returns one node, by id or unique id prefix.
func (a *API) handleNodeRead() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*caravan.Node, uint64, error) {
			n, err := lookupNode(snap, id)
			if err != nil {
				return nil, 0, err
			}
			return a.nodeView(n), snap.TableIndex(state.TableNodes), nil
		})
	})
}

// handleNodeRegister registers an agent's node from {"node": {...}}.
func (a *API) handleNodeRegister() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[caravan.NodeRegisterRequest](r)
		if err != nil {
			return err
		}
		if req.Node == nil {
			return caravan.Invalidf("node", `missing: the body is {"node": {...}}`)
		}
		resp, err := a.srv.RegisterNode(r.Context(), req.Node)
		if err != nil {
			return underField("node", err)
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleNodeHeartbeat records an agent's heartbeat (node secret in
// X-Caravan-Node-Secret) and answers with the next TTL.
func (a *API) handleNodeHeartbeat() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		var req caravan.HeartbeatRequest
		if err := decodeOptional(r, &req); err != nil {
			return err
		}
		resp, err := a.srv.Heartbeat(r.Context(), r.PathValue("id"), r.Header.Get(api.HeaderNodeSecret), req.Status)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// authNode checks the node secret of an agent's request against the
// node's (a node registered without a secret accepts any).
func authNode(snap *state.Snapshot, id, secret string) error {
	n, err := snap.NodeByID(id)
	if err != nil {
		return err
	}
	if n.SecretID != "" && subtle.ConstantTimeCompare([]byte(n.SecretID), []byte(secret)) != 1 {
		return fmt.Errorf("node %s: wrong or missing node secret (%s): %w", id, api.HeaderNodeSecret, caravan.ErrForbidden)
	}
	return nil
}

// handleNodeAllocations answers an agent's watch of its node's
// allocations (node secret required). Its index is the newest
// AllocModifyIndex among them: it moves when the servers change the node's
// allocations (placements, stops), not when agents report status, so an
// agent's blocking query wakes only for work of its own.
//
// Without ?since it returns every allocation with its job. With ?since=N
// it returns api.NodeAllocChanges: the allocations changed after N, their
// jobs once per version, and how many allocations the node has (with
// ?ids=true also every id), so that an agent's watch costs what changed
// rather than all the node runs.
func (a *API) handleNodeAllocations() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id, secret := r.PathValue("id"), r.Header.Get(api.HeaderNodeSecret)
		q := r.URL.Query()
		if q.Has("since") {
			since, err := strconv.ParseUint(q.Get("since"), 10, 64)
			if err != nil {
				return caravan.Invalidf("since", "%q: use a Raft index (a whole number, 0 or more)", q.Get("since"))
			}
			withIDs := false
			if s := q.Get("ids"); s != "" {
				if withIDs, err = strconv.ParseBool(s); err != nil {
					return caravan.Invalidf("ids", "%q: use true or false", s)
				}
			}
			return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) (*api.NodeAllocChanges, uint64, error) {
				if err := authNode(snap, id, secret); err != nil {
					return nil, 0, err
				}
				allocs, err := snap.AllocsByNode(id)
				if err != nil {
					return nil, 0, err
				}
				out := allocChanges(allocs, since, withIDs)
				out.StateIndex = snap.Index()
				return out, out.Index, nil
			})
		}
		return serveRead(a, w, r, func(snap *state.Snapshot, _ *readMeta) ([]*caravan.Allocation, uint64, error) {
			if err := authNode(snap, id, secret); err != nil {
				return nil, 0, err
			}
			allocs, err := snap.AllocsByNode(id)
			if err != nil {
				return nil, 0, err
			}
			var index uint64
			for _, al := range allocs {
				index = max(index, al.AllocModifyIndex)
			}
			if allocs == nil {
				allocs = []*caravan.Allocation{}
			}
			return allocs, index, nil
		})
	})
}

// allocChanges builds the answer to ?since: the allocations changed after
// since without their jobs, and each job version they run once (the state
// store shares one *Job per version).
func allocChanges(allocs []*caravan.Allocation, since uint64, withIDs bool) *api.NodeAllocChanges {
	out := &api.NodeAllocChanges{Since: since, Count: len(allocs), Allocs: []*caravan.Allocation{}, Jobs: []*caravan.Job{}}
	if withIDs {
		out.IDs = make([]api.AllocIndex, 0, len(allocs))
	}
	seen := map[*caravan.Job]bool{}
	for _, al := range allocs {
		out.Index = max(out.Index, al.AllocModifyIndex)
		if withIDs {
			out.IDs = append(out.IDs, api.AllocIndex{ID: al.ID, AllocModifyIndex: al.AllocModifyIndex})
		}
		if al.AllocModifyIndex <= since {
			continue
		}
		if j := al.Job; j != nil && !seen[j] {
			seen[j] = true
			out.Jobs = append(out.Jobs, j)
		}
		out.Allocs = append(out.Allocs, al.Stub())
	}
	return out
}

// handleNodeUpdateAllocs records an agent's batched allocation updates
// (node secret required).
func (a *API) handleNodeUpdateAllocs() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[caravan.AllocUpdateRequest](r)
		if err != nil {
			return err
		}
		for i, u := range req.Allocs {
			path := fmt.Sprintf("allocs[%d]", i)
			if u == nil {
				return caravan.Invalidf(path, "null")
			}
			if err := u.Validate(); err != nil {
				return underField(path, err)
			}
		}
		resp, err := a.srv.UpdateAllocations(r.Context(), r.PathValue("id"), r.Header.Get(api.HeaderNodeSecret), req.Allocs)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleNodeDrain starts or cancels a drain.
func (a *API) handleNodeDrain() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[caravan.NodeDrainRequest](r)
		if err != nil {
			return err
		}
		resp, err := a.srv.DrainNode(r.Context(), r.PathValue("id"), req)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleNodeEligibility makes a node eligible or ineligible.
func (a *API) handleNodeEligibility() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[caravan.NodeEligibilityRequest](r)
		if err != nil {
			return err
		}
		resp, err := a.srv.SetNodeEligibility(r.Context(), r.PathValue("id"), req.Eligibility)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleNodeDeregister removes a node.
func (a *API) handleNodeDeregister() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		resp, err := a.srv.DeregisterNode(r.Context(), r.PathValue("id"))
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}
