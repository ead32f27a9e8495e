package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/logs"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

// stopTimeout bounds telling the servers about a stop asked through the
// agent API.
const stopTimeout = 10 * time.Second

// routes lists every route of the agent API.
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /allocations", a.handleAllocs)
	mux.HandleFunc("GET /allocations/{allocation_id}", a.handleAlloc)
	mux.HandleFunc("DELETE /allocations/{allocation_id}", a.handleStopAlloc)
	mux.HandleFunc("GET /v1/agent/health", a.handleHealth)
	mux.HandleFunc("GET /v1/client/allocation/{alloc_id}/logs", a.handleLogs)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.writeError(w, r, fmt.Errorf("no route %s %s: %w", r.Method, r.URL.Path, caravan.ErrNotFound))
	})
	return a.withRequestID(mux)
}

type requestIDKey struct{}

// withRequestID gives every request an id (the client's X-Request-Id when
// it sent a sane one), in the answer's header and in log lines.
func (a *Agent) withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(api.HeaderRequestID)
		if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c < '!' || c > '~' }) {
			id = caravan.NewID()
		}
		w.Header().Set(api.HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func requestID(r *http.Request) string {
	id, _ := r.Context().Value(requestIDKey{}).(string)
	return id
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// writeError answers with the status the error's sentinel maps to.
func (a *Agent) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, caravan.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, caravan.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, caravan.ErrUnavailable):
		status = http.StatusServiceUnavailable
	}
	if status == http.StatusInternalServerError {
		a.log.Error("agent api", "method", r.Method, "path", r.URL.Path, "request_id", requestID(r), "error", err)
	}
	body := caravan.ErrorResponse{Error: err.Error(), RequestID: requestID(r)}
	var ve *caravan.ValidationError
	if errors.As(err, &ve) {
		body.Fields = ve.Fields
	}
	writeJSON(w, status, body)
}

// lookup finds an allocation by id or unique id prefix.
func (a *Agent) lookup(id string) (*allocEntry, error) {
	if id == "" {
		return nil, caravan.Invalidf("allocation_id", "missing")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.runners[id]; ok {
		return e, nil
	}
	var found *allocEntry
	for k, e := range a.runners {
		if strings.HasPrefix(k, id) {
			if found != nil {
				return nil, caravan.Invalidf("allocation_id", "prefix %q matches several allocations", id)
			}
			found = e
		}
	}
	if found == nil {
		return nil, fmt.Errorf("allocation %q: %w", id, caravan.ErrNotFound)
	}
	return found, nil
}

// handleAllocs lists the agent's allocations with their task states
// (without their jobs), oldest first.
func (a *Agent) handleAllocs(w http.ResponseWriter, r *http.Request) {
	entries := a.entries()
	out := make([]*caravan.Allocation, 0, len(entries))
	for _, e := range entries {
		out = append(out, a.allocOf(e).Stub())
	}
	slices.SortFunc(out, func(x, y *caravan.Allocation) int {
		return cmp.Or(cmp.Compare(x.CreateIndex, y.CreateIndex), strings.Compare(x.ID, y.ID))
	})
	writeJSON(w, http.StatusOK, out)
}

// handleAlloc returns one allocation with its job and task states.
func (a *Agent) handleAlloc(w http.ResponseWriter, r *http.Request) {
	e, err := a.lookup(r.PathValue("allocation_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.allocOf(e))
}

// StopResponse answers DELETE /allocations/{allocation_id}.
type StopResponse struct {
	ID string `json:"id"`
	// EvalID and Index are the servers' answer to the stop.
	EvalID string `json:"eval_id,omitempty"`
	Index  uint64 `json:"index,omitempty"`
	// Warning says the servers could not be told; the allocation is
	// stopped here anyway.
	Warning string `json:"warning,omitempty"`
}

// handleStopAlloc asks the servers to stop the allocation, stops it here
// and reports it.
func (a *Agent) handleStopAlloc(w http.ResponseWriter, r *http.Request) {
	e, err := a.lookup(r.PathValue("allocation_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	id := e.id
	ctx, cancel := context.WithTimeout(r.Context(), stopTimeout)
	defer cancel()
	out := StopResponse{ID: id}
	resp, err := a.client.StopAllocation(ctx, id)
	if err != nil {
		out.Warning = "the servers were not told: " + err.Error()
		a.log.Warn("stop allocation on the servers", "alloc_id", id, "request_id", requestID(r), "error", err)
	} else {
		out.EvalID, out.Index = resp.EvalID, resp.Index
	}
	if run := a.runnerOf(e); run != nil {
		run.Stop(stopKill("stopped through the agent API"))
	}
	a.log.Info("allocation stopped through the agent API", "alloc_id", id, "request_id", requestID(r))
	writeJSON(w, http.StatusOK, out)
}

// handleHealth answers 200 while the agent is registered and in touch
// with the servers, 503 otherwise.
func (a *Agent) handleHealth(w http.ResponseWriter, r *http.Request) {
	ok := a.conn.connected(time.Now())
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	writeJSON(w, status, caravan.Health{OK: ok, Agent: a.identity.NodeID})
}

// logRequest is a parsed log request.
type logRequest struct {
	task, stream string
	opt          logs.ReadOptions
}

// parseLogRequest reads task, type, follow, offset and origin.
func parseLogRequest(r *http.Request, tasks []string) (logRequest, error) {
	q := r.URL.Query()
	lr := logRequest{task: q.Get("task"), stream: cmp.Or(q.Get("type"), "stdout")}
	if lr.task == "" {
		if len(tasks) != 1 {
			return lr, caravan.Invalidf("task", "missing: the allocation has the tasks %s", strings.Join(tasks, ", "))
		}
		lr.task = tasks[0]
	}
	if lr.stream != "stdout" && lr.stream != "stderr" {
		return lr, caravan.Invalidf("type", "%q: use stdout or stderr", lr.stream)
	}
	if s := q.Get("follow"); s != "" {
		f, err := strconv.ParseBool(s)
		if err != nil {
			return lr, caravan.Invalidf("follow", "%q: use true or false", s)
		}
		lr.opt.Follow = f
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return lr, caravan.Invalidf("offset", "%q: use a number of bytes, 0 or more", s)
		}
		lr.opt.Offset = n
	}
	switch o := q.Get("origin"); o {
	case "", "start":
	case "end":
		lr.opt.FromEnd = true
	default:
		return lr, caravan.Invalidf("origin", "%q: use start or end", o)
	}
	return lr, nil
}

// handleLogs serves a task's output from its rotated files; with follow it
// sends new output as it comes, until the task is dead and everything was
// sent, or the client goes away.
func (a *Agent) handleLogs(w http.ResponseWriter, r *http.Request) {
	e, err := a.lookup(r.PathValue("alloc_id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	run := a.runnerOf(e)
	var names []string
	if run != nil {
		al := run.ServerAlloc()
		if tg := al.Job.LookupTaskGroup(al.TaskGroup); tg != nil {
			for _, t := range tg.Tasks {
				names = append(names, t.Name)
			}
		}
	} else if final := a.allocOf(e); final != nil {
		names = slices.Sorted(maps.Keys(final.TaskStates))
	}
	lr, err := parseLogRequest(r, names)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	if !slices.Contains(names, lr.task) {
		a.writeError(w, r, fmt.Errorf("task %q of allocation %s: %w", lr.task, e.id, caravan.ErrNotFound))
		return
	}
	if run != nil {
		lr.opt.Done = run.Task(lr.task).Dead()
	} else {
		lr.opt.Done = closed()
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	dir := taskrunner.LogDir(e.dir)
	if err := logs.Copy(r.Context(), w, dir, lr.task+"."+lr.stream, lr.opt); err != nil && r.Context().Err() == nil {
		a.log.LogAttrs(r.Context(), slog.LevelWarn, "serve task logs", slog.String("alloc_id", e.id),
			slog.String("task", lr.task), slog.String("request_id", requestID(r)), slog.Any("error", err))
	}
}

// closed returns a closed channel: the tasks of a finished allocation are
// dead.
func closed() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
