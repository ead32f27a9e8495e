package httpapi

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/caravan-sched/caravan"
)

// errNoLeaderKnown says this server knows no leader right now.
var errNoLeaderKnown = fmt.Errorf("this server knows no cluster leader right now; try again shortly: %w", caravan.ErrNoLeader)

// handleHealth answers 200 with caravan.Health while this server knows a
// leader, 503 otherwise.
func (a *API) handleHealth() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		leader := a.srv.LeaderRaftAddr()
		if leader == "" {
			return errNoLeaderKnown
		}
		encode(w, r, http.StatusOK, caravan.Health{
			OK: true, Leader: leader, Server: a.srv.Name(), Index: a.store.LatestIndex(),
		})
		return nil
	})
}

// handleStatusLeader returns the leader's Raft address as a JSON string.
func (a *API) handleStatusLeader() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		leader := a.srv.LeaderRaftAddr()
		if leader == "" {
			return errNoLeaderKnown
		}
		encode(w, r, http.StatusOK, leader)
		return nil
	})
}

// handleStatusPeers returns the Raft addresses of the voters.
func (a *API) handleStatusPeers() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		peers, err := a.srv.Peers()
		if err != nil {
			return err
		}
		if peers == nil {
			peers = []string{}
		}
		encode(w, r, http.StatusOK, peers)
		return nil
	})
}

// handleRaftConfiguration lists the servers with their roles.
func (a *API) handleRaftConfiguration() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		members, err := a.srv.Members()
		if err != nil {
			return err
		}
		if members == nil {
			members = []*caravan.ServerMember{}
		}
		encode(w, r, http.StatusOK, members)
		return nil
	})
}

// handleRaftJoin adds a server to the cluster.
func (a *API) handleRaftJoin() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		req, err := decodeInto[caravan.JoinRequest](r)
		if err != nil {
			return err
		}
		resp, err := a.srv.Join(r.Context(), req)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleRaftRemovePeer removes a server, by id, from the cluster.
func (a *API) handleRaftRemovePeer() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		members, err := a.srv.Members()
		if err != nil {
			return err
		}
		known := false
		for _, m := range members {
			known = known || m.ID == id
		}
		if !known {
			return fmt.Errorf("server %q is not in the Raft configuration: %w", id, caravan.ErrNotFound)
		}
		resp, err := a.srv.RemovePeer(r.Context(), id)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, resp)
		return nil
	})
}

// handleSystemGC collects garbage now, ignoring age thresholds, and
// returns what it removed.
func (a *API) handleSystemGC() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := decodeOptional(r, &noBody{}); err != nil {
			return err
		}
		res, err := a.srv.CollectGarbage(r.Context(), true)
		if err != nil {
			return err
		}
		encode(w, r, http.StatusOK, res)
		return nil
	})
}

// handleMetrics serves the server's Prometheus metrics in the text format.
func (a *API) handleMetrics() http.Handler {
	return promhttp.HandlerFor(a.srv.Metrics(), promhttp.HandlerOpts{
		ErrorLog:      slogPrinter{a},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// slogPrinter passes promhttp's error lines to the API's logger.
type slogPrinter struct{ a *API }

func (p slogPrinter) Println(v ...any) { p.a.logger.Warn("metrics", "error", fmt.Sprint(v...)) }
