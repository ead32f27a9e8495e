package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/caravan-sched/caravan"
)

// Errors of the HTTP layer itself, beside the domain's sentinels.
var (
	// errMethodNotAllowed: the path exists, the method does not.
	errMethodNotAllowed = errors.New("method not allowed")
	// errBadGateway: a server or agent this request was proxied to did
	// not answer.
	errBadGateway = errors.New("upstream did not answer")
)

// statusFor maps an error to its HTTP status code: the one table.
func statusFor(err error) int {
	switch {
	case errors.Is(err, caravan.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, caravan.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed
	case errors.Is(err, caravan.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, caravan.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, caravan.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, errBadGateway):
		return http.StatusBadGateway
	case errors.Is(err, caravan.ErrNotLeader), errors.Is(err, caravan.ErrNoLeader), errors.Is(err, caravan.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed the request
	}
	return http.StatusInternalServerError
}

// writeError answers with err's status code and a caravan.ErrorResponse
// that carries the field paths of a validation error and the request id.
// Server-side failures are logged; client errors only at debug level.
func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusFor(err)
	ri := info(r)
	level := slog.LevelDebug
	switch {
	case status == http.StatusInternalServerError:
		level = slog.LevelError
	case status >= 500:
		level = slog.LevelWarn
	}
	ri.logger.LogAttrs(r.Context(), level, "request failed", slog.String("method", r.Method),
		slog.String("path", r.URL.Path), slog.Int("status", status), slog.Any("error", err))
	if status == 499 {
		return // nobody is listening
	}
	body := caravan.ErrorResponse{Error: err.Error(), RequestID: ri.id}
	var ve *caravan.ValidationError
	if errors.As(err, &ve) {
		body.Fields = ve.Fields
	}
	encode(w, r, status, body)
}
