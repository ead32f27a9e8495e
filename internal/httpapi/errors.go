package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/caravan-sched/caravan"
)

// statusFor maps an error to its HTTP status code: the one table.
func statusFor(err error) int {
	switch {
	case errors.Is(err, caravan.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, caravan.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, caravan.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, caravan.ErrForbidden):
		return http.StatusForbidden
	case errors.Is(err, caravan.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, caravan.ErrNotLeader), errors.Is(err, caravan.ErrNoLeader), errors.Is(err, caravan.ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return 499 // client closed the request
	}
	return http.StatusInternalServerError
}
