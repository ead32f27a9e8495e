// Package httpapi is the HTTP API of a caravan server: the native /v1
// routes, the myNomad-style dialect, and the middleware around them.
//
// Every route is listed in routes.go with the permission it needs. A
// request goes through these layers:
//
//	request ──▶ serve: request id, logger in the context, panic recovery,
//	            access log, metrics
//	              │
//	              ▼
//	            ServeMux (Go 1.22 patterns) ──▶ unmatched: JSON 404 / 405
//	              │
//	              ▼
//	            route: permission, body size, forwarding of writes to the
//	            leader when this server follows
//	              │
//	              ▼
//	            handler: decode (strict, with field paths) ─▶ server method
//	            or state snapshot (blocking query) ─▶ encode, or writeError
//	            (the one table of status codes)
//
// Handlers hold no logic of their own: writes call the server's methods,
// reads run on state snapshots.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/caravan-sched/caravan/internal/server"
	"github.com/caravan-sched/caravan/internal/state"
)

// API serves caravan's HTTP API over one server.
type API struct {
	srv     *server.Server
	store   *state.Store
	logger  *slog.Logger
	metrics *httpMetrics
	mux     *http.ServeMux

	// forwarder proxies writes to the leader; logProxy proxies log
	// requests to agents.
	forwarder *httputil.ReverseProxy
	logProxy  *httputil.ReverseProxy

	// keepAlive is how often an idle event stream sends "{}".
	keepAlive time.Duration

	// stopped ends when an http.Server serving the API starts shutting
	// down: long requests (blocking queries, event streams, log follows)
	// end then rather than hold the shutdown or outlive it.
	stopped context.Context
	stop    context.CancelFunc
	// hooked holds the *http.Server values whose shutdown is watched.
	hooked sync.Map
}

// New returns the HTTP API of srv. Log lines go to logger (nil discards
// them).
func New(srv *server.Server, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &API{
		srv:     srv,
		store:   srv.State(),
		logger:  logger.With("component", "http", "server", srv.Name()),
		metrics: newHTTPMetrics(srv.Metrics()),
		mux:     http.NewServeMux(),

		keepAlive: eventKeepAlive,
	}
	a.stopped, a.stop = context.WithCancel(context.Background())
	a.forwarder = a.newForwarder()
	a.logProxy = a.newLogProxy()
	context.AfterFunc(a.stopped, func() {
		for _, p := range []*httputil.ReverseProxy{a.forwarder, a.logProxy} {
			if t, ok := p.Transport.(*http.Transport); ok {
				t.CloseIdleConnections()
			}
		}
	})
	for _, rt := range a.routes() {
		a.mux.Handle(rt.pattern, a.route(rt))
	}
	a.mux.Handle("/", a.handleUnmatched())
	return a
}

// ServeHTTP serves one request through the middleware and the router.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.serve(w, r, a.mux)
}

// watchShutdown makes the shutdown of the http.Server that serves r end
// the API's long requests (see API.stopped).
func (a *API) watchShutdown(r *http.Request) {
	hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return
	}
	if _, seen := a.hooked.LoadOrStore(hs, struct{}{}); !seen {
		hs.RegisterOnShutdown(a.stop)
	}
}

// untilShutdown returns a context that also ends when the server starts
// shutting down.
func (a *API) untilShutdown(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(a.stopped, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}
