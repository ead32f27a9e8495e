package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// headerForwardedBy marks a write that a follower forwarded to the leader,
// with the follower's name. A marked request is never forwarded again: a
// server that gets one and is not the leader answers 503.
const headerForwardedBy = "X-Caravan-Forwarded-By"

// proxyTarget is where a proxied request goes, and how to name that place
// in an error.
type proxyTarget struct {
	url  *url.URL
	what string
}

type proxyTargetKey struct{}

func targetOf(r *http.Request) *proxyTarget {
	t, _ := r.Context().Value(proxyTargetKey{}).(*proxyTarget)
	return t
}

func withTarget(r *http.Request, t *proxyTarget) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), proxyTargetKey{}, t))
}

// proxyTransport dials servers and agents on behalf of clients.
func proxyTransport(responseTimeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: responseTimeout,
	}
}

// newProxy returns a reverse proxy to the target in each request's
// context. It sends the request id along and keeps the one this server
// already set on the answer. fail wraps the error of a target that did not
// answer.
func (a *API) newProxy(responseTimeout time.Duration, flush time.Duration, fail func(t *proxyTarget, err error) error) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			t := targetOf(pr.In)
			pr.SetURL(t.url)
			pr.Out.URL.Path, pr.Out.URL.RawPath = t.url.Path, t.url.RawPath
			if t.url.Path == "" {
				pr.Out.URL.Path, pr.Out.URL.RawPath = pr.In.URL.Path, pr.In.URL.RawPath
			}
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Header.Set(api.HeaderRequestID, info(pr.In).id)
			pr.SetXForwarded()
		},
		Transport:     proxyTransport(responseTimeout),
		FlushInterval: flush,
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del(api.HeaderRequestID) // the same id, already set
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away
			}
			a.writeError(w, r, fail(targetOf(r), err))
		},
	}
}

// newForwarder returns the proxy that carries writes to the leader.
func (a *API) newForwarder() *httputil.ReverseProxy {
	p := a.newProxy(2*time.Minute, 0, func(t *proxyTarget, err error) error {
		return fmt.Errorf("forward the write to %s: %w: %v", t.what, caravan.ErrUnavailable, err)
	})
	rewrite := p.Rewrite
	p.Rewrite = func(pr *httputil.ProxyRequest) {
		rewrite(pr)
		pr.Out.Header.Set(headerForwardedBy, a.srv.Name())
	}
	return p
}

// newLogProxy returns the proxy that streams task logs from agents,
// flushing as data arrives.
func (a *API) newLogProxy() *httputil.ReverseProxy {
	return a.newProxy(30*time.Second, -1, func(t *proxyTarget, err error) error {
		return fmt.Errorf("read logs from %s: %w: %v", t.what, errBadGateway, err)
	})
}

// forwardWrites serves a write here when this server leads, and proxies it
// to the leader otherwise.
func (a *API) forwardWrites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.srv.IsLeader() {
			next.ServeHTTP(w, r)
			return
		}
		if by := r.Header.Get(headerForwardedBy); by != "" {
			a.writeError(w, r, fmt.Errorf("a write forwarded by server %s reached server %s, which is not the leader either (leadership is changing; try again): %w",
				by, a.srv.Name(), caravan.ErrNoLeader))
			return
		}
		addr, err := a.srv.LeaderHTTPAddr()
		if err != nil {
			a.writeError(w, r, fmt.Errorf("server %s cannot forward the write to the leader: %w", a.srv.Name(), err))
			return
		}
		requestLogger(r).Debug("forwarding a write to the leader", "leader", addr)
		t := &proxyTarget{url: serviceURL(addr), what: "the leader at " + addr}
		a.forwarder.ServeHTTP(w, withTarget(r, t))
	})
}

// serviceURL makes a base URL of a "host:port" address (or of a URL).
func serviceURL(addr string) *url.URL {
	if strings.Contains(addr, "://") {
		if u, err := url.Parse(addr); err == nil {
			u.Path, u.RawPath, u.RawQuery = "", "", ""
			return u
		}
	}
	return &url.URL{Scheme: "http", Host: addr}
}

// handleAllocLogs proxies a log request to the agent that runs the
// allocation, streaming its answer.
func (a *API) handleAllocLogs() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		snap := a.store.Snapshot()
		al, err := lookupAlloc(snap, r.PathValue("id"))
		if err != nil {
			return err
		}
		node, err := snap.NodeByID(al.NodeID)
		switch {
		case errors.Is(err, caravan.ErrNotFound):
			return fmt.Errorf("node %s of allocation %s is no longer registered, so its logs cannot be read: %w", al.NodeID, al.ID, caravan.ErrUnavailable)
		case err != nil:
			return err
		case node.HTTPAddr == "":
			return fmt.Errorf("node %s (%s) registered no HTTP address, so logs of allocation %s cannot be read: %w", node.ID, node.Name, al.ID, caravan.ErrUnavailable)
		}
		u := serviceURL(node.HTTPAddr)
		u.Path = "/v1/client/allocation/" + al.ID + "/logs"
		t := &proxyTarget{url: u, what: fmt.Sprintf("the agent of node %s at %s", node.Name, node.HTTPAddr)}
		ctx, stop := a.untilShutdown(r.Context())
		defer stop()
		a.logProxy.ServeHTTP(w, withTarget(r.WithContext(ctx), t))
		return nil
	})
}
