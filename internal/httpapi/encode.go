package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/caravan-sched/caravan"
)

// encode writes v as the JSON body of a response with status (one line,
// without HTML escaping: "&&" in a command stays readable).
func encode[T any](w http.ResponseWriter, r *http.Request, status int, v T) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		requestLogger(r).Error("encode response", "error", err)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, `{"error":%q,"request_id":%q}`+"\n", "encode response: "+err.Error(), info(r).id)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// decodeInto reads a request body strictly into a new T (see decode).
func decodeInto[T any](r *http.Request) (*T, error) {
	out := new(T)
	if err := decode(r, out); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeOptional is decode for bodies that may be left out: an empty body
// leaves out untouched.
func decodeOptional(r *http.Request, out any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body over %d bytes: %w", mbe.Limit, caravan.ErrTooLarge)
		}
		return fmt.Errorf("read request body: %w", caravan.ErrInvalid)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeBytes(body, out)
}

// apiFunc is a handler that returns its error instead of writing it.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// handle turns an apiFunc into a handler that answers errors through
// writeError.
func (a *API) handle(fn apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := fn(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// underField moves the field paths of a validation error under prefix, so
// they name fields of the body as sent ("job.task_groups[0].name" for a
// job wrapped in {"job": ...}).
func underField(prefix string, err error) error {
	var ve *caravan.ValidationError
	if prefix == "" || !errors.As(err, &ve) {
		return err
	}
	fields := make([]caravan.FieldError, len(ve.Fields))
	for i, f := range ve.Fields {
		fields[i] = f
		switch {
		case f.Path == "":
			fields[i].Path = prefix
		case f.Path[0] == '[':
			fields[i].Path = prefix + f.Path
		default:
			fields[i].Path = prefix + "." + f.Path
		}
	}
	return &caravan.ValidationError{Fields: fields}
}

// boolParam reads an optional true/false query parameter.
func boolParam(r *http.Request, name string) (bool, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, caravan.Invalidf(name, "%q: use true or false", s)
	}
	return b, nil
}
