package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// requestInfo travels in a request's context: its id, its logger, and the
// route pattern once the router matched one.
type requestInfo struct {
	id      string
	logger  *slog.Logger
	pattern string
}

type requestInfoKey struct{}

// info returns the request's requestInfo (a fresh one outside serve, so
// handlers never need to check).
func info(r *http.Request) *requestInfo {
	if ri, ok := r.Context().Value(requestInfoKey{}).(*requestInfo); ok {
		return ri
	}
	return &requestInfo{logger: slog.New(slog.DiscardHandler)}
}

// requestLogger returns the request's logger, which carries its id.
func requestLogger(r *http.Request) *slog.Logger { return info(r).logger }

// validRequestID reports whether a client's X-Request-Id is sane enough to
// adopt: 1 to 64 printable ASCII characters without spaces.
func validRequestID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return !strings.ContainsFunc(id, func(c rune) bool { return c < '!' || c > '~' })
}

// serve is the outermost middleware: it gives the request an id and a
// logger, recovers from panics, and records the access log line and the
// metrics when the handler is done.
func (a *API) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	start := time.Now()
	id := r.Header.Get(api.HeaderRequestID)
	if !validRequestID(id) {
		id = caravan.NewID()
	}
	ri := &requestInfo{id: id, logger: a.logger.With("request_id", id)}
	w.Header().Set(api.HeaderRequestID, id)
	rec := &recorder{ResponseWriter: w}
	r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, ri))
	a.watchShutdown(r)

	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				a.finish(r, ri, rec, start)
				panic(p) // net/http's way to abort a response quietly
			}
			ri.logger.Error("panic serving a request", "method", r.Method, "path", r.URL.Path,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if !rec.wrote {
				a.writeError(rec, r, fmt.Errorf("internal error (request %s)", id))
			}
		}
		a.finish(r, ri, rec, start)
	}()
	next.ServeHTTP(rec, r)
}

// finish writes the access log line and records the metrics of a request.
func (a *API) finish(r *http.Request, ri *requestInfo, rec *recorder, start time.Time) {
	d := time.Since(start)
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	pattern := ri.pattern
	if pattern == "" {
		pattern = "unmatched"
	}
	a.metrics.requests.WithLabelValues(pattern, strconv.Itoa(status)).Inc()
	a.metrics.duration.WithLabelValues(pattern).Observe(d.Seconds())
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("route", pattern), slog.Int("status", status),
		slog.Int64("bytes", rec.bytes), slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr)}
	if by := r.Header.Get(headerForwardedBy); by != "" {
		attrs = append(attrs, slog.String("forwarded_by", by))
	}
	ri.logger.LogAttrs(r.Context(), slog.LevelDebug, "http request", attrs...)
}

// recorder remembers the status and size of a response. It passes Flush
// on, and Unwrap lets http.ResponseController reach the connection.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (rec *recorder) WriteHeader(code int) {
	if !rec.wrote && code >= 200 {
		rec.status, rec.wrote = code, true
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if !rec.wrote {
		rec.status, rec.wrote = http.StatusOK, true
	}
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

// Flush sends buffered data to the client.
func (rec *recorder) Flush() {
	if !rec.wrote {
		rec.status, rec.wrote = http.StatusOK, true
	}
	_ = http.NewResponseController(rec.ResponseWriter).Flush()
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }

// route wraps one route's handler: it records the pattern, checks the
// permission and the declared body size, and forwards writes to the leader
// when this server is a follower.
func (a *API) route(rt route) http.Handler {
	h := rt.handler
	if isWrite(rt.pattern) && !rt.local {
		h = a.forwardWrites(h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info(r).pattern = rt.pattern
		if err := a.authorize(r, rt.perm); err != nil {
			a.writeError(w, r, err)
			return
		}
		if r.ContentLength > maxBodyBytes {
			a.writeError(w, r, fmt.Errorf("request body of %d bytes is over the limit of %d: %w", r.ContentLength, maxBodyBytes, caravan.ErrTooLarge))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// isWrite reports whether a route pattern is for a method other than GET
// (and so HEAD).
func isWrite(pattern string) bool {
	method, _, _ := strings.Cut(pattern, " ")
	return method != http.MethodGet && method != http.MethodHead
}

// authorize checks the caller against the route's permission. ACLs are
// not enforced yet: every caller holds every permission.
func (a *API) authorize(r *http.Request, p permission) error {
	_ = p
	return nil
}

// probeMethods are the methods tried to tell 405 from 404.
var probeMethods = []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete}

// handleUnmatched answers requests no route matched: 405 with an Allow
// header when the path exists for other methods, 404 otherwise, both as
// JSON errors.
func (a *API) handleUnmatched() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range probeMethods {
			probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
			if _, pattern := a.mux.Handler(probe); pattern != "/" && pattern != "" {
				allowed = append(allowed, m)
			}
		}
		if len(allowed) > 0 {
			if slices.Contains(allowed, http.MethodGet) {
				allowed = append(allowed, http.MethodHead)
			}
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			a.writeError(w, r, fmt.Errorf("%s %s: %w (allowed: %s)", r.Method, r.URL.Path, errMethodNotAllowed, strings.Join(allowed, ", ")))
			return
		}
		a.writeError(w, r, fmt.Errorf("no route for %s %s: %w", r.Method, r.URL.Path, caravan.ErrNotFound))
	})
}

// httpMetrics are the API's Prometheus metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newHTTPMetrics registers the API's metrics in reg, or reuses those
// already registered there (a second API over the same server).
func newHTTPMetrics(reg *prometheus.Registry) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "caravan_http_requests_total", Help: "HTTP requests served, by route pattern and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "caravan_http_request_duration_seconds", Help: "Time to serve HTTP requests, by route pattern (blocking queries and streams included).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 12),
		}, []string{"route"}),
	}
	m.requests = register(reg, m.requests)
	m.duration = register(reg, m.duration)
	return m
}

func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
