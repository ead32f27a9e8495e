package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
)

// eventKeepAlive is how often an idle event stream sends "{}" (the API's
// keepAlive, which tests shorten).
const eventKeepAlive = 10 * time.Second

// parseTopics reads the repeated ?topic parameter: Job, Allocation,
// Evaluation, Node or *, each optionally with ":key" (an object id, or an
// allocation's job or node id, or an evaluation's job id). None means
// every event.
func parseTopics(r *http.Request) (events.Filter, error) {
	f := events.Filter{}
	for _, s := range r.URL.Query()["topic"] {
		name, key, hasKey := strings.Cut(s, ":")
		topic := events.Topic(name)
		switch topic {
		case events.TopicJob, events.TopicAllocation, events.TopicEvaluation, events.TopicNode, events.TopicAll:
		default:
			return nil, caravan.Invalidf("topic", "%q: use Job, Allocation, Evaluation, Node or *, optionally followed by :key", s)
		}
		if hasKey && key == "" {
			return nil, caravan.Invalidf("topic", "%q: the key after the colon is empty", s)
		}
		if !hasKey {
			key = "*"
		}
		f[topic] = append(f[topic], key)
	}
	return f, nil
}

// handleEventStream streams state changes as NDJSON, one caravan.Event per
// line, from ?index (events after it, while the server still holds them)
// or from now. An idle stream sends "{}" every 10 s. When the server cuts
// the subscriber off (it fell behind, or the server stops), the stream
// ends with an error line ({"error": ..., "request_id": ...}); the client
// reconnects from the last index it saw.
func (a *API) handleEventStream() http.Handler {
	return a.handle(func(w http.ResponseWriter, r *http.Request) error {
		filter, err := parseTopics(r)
		if err != nil {
			return err
		}
		var from uint64
		if s := r.URL.Query().Get("index"); s != "" {
			if from, err = strconv.ParseUint(s, 10, 64); err != nil {
				return caravan.Invalidf("index", "%q: use a Raft index (a whole number, 0 or more)", s)
			}
		}
		sub, err := a.srv.Events().Subscribe(events.SubscribeRequest{Filter: filter, FromIndex: from})
		if err != nil {
			return err
		}
		defer sub.Close()

		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		a.streamEvents(w, r, sub)
		return nil
	})
}

// streamEvents writes batches of events until the client leaves or the
// subscription ends. Errors after the header went out can only be told in
// the stream itself.
func (a *API) streamEvents(w http.ResponseWriter, r *http.Request, sub *events.Subscription) {
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	streamCtx, stop := a.untilShutdown(r.Context())
	defer stop()
	var last uint64
	for {
		ctx, cancel := context.WithTimeout(streamCtx, a.keepAlive)
		evs, err := sub.Next(ctx)
		cancel()
		switch {
		case r.Context().Err() != nil:
			return
		case streamCtx.Err() != nil:
			msg := fmt.Sprintf("the server is shutting down; reconnect from index %d: %v", last, caravan.ErrUnavailable)
			_ = enc.Encode(caravan.ErrorResponse{Error: msg, RequestID: info(r).id})
			_ = rc.Flush()
			return
		case errors.Is(err, context.DeadlineExceeded):
			if _, err := w.Write([]byte("{}\n")); err != nil {
				return
			}
		case err != nil:
			requestLogger(r).Info("event stream cut off", "error", err)
			_ = enc.Encode(caravan.ErrorResponse{Error: err.Error(), RequestID: info(r).id})
			_ = rc.Flush()
			return
		default:
			for i := range evs {
				e := &evs[i]
				last = e.Index
				if err := enc.Encode(caravan.Event{Topic: string(e.Topic), Type: e.Type, Key: e.Key, Index: e.Index, Payload: e.Payload}); err != nil {
					return
				}
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}
