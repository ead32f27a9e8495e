package caravan

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Every layer wraps them with context and matches them with
// errors.Is; the HTTP API maps them to status codes in one table.
var (
	// ErrNotFound means the object asked for does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid means the request or object is malformed or breaks a rule.
	ErrInvalid = errors.New("invalid")
	// ErrConflict means the write conflicts with the current state (for
	// example a check-and-set index that no longer matches).
	ErrConflict = errors.New("conflict")
	// ErrNotLeader means the write must go to the Raft leader.
	ErrNotLeader = errors.New("not the leader")
	// ErrNoLeader means no leader is known right now; try again.
	ErrNoLeader = errors.New("no cluster leader")
	// ErrForbidden means the caller lacks the permission.
	ErrForbidden = errors.New("permission denied")
	// ErrTooLarge means a request body is over the size limit.
	ErrTooLarge = errors.New("request too large")
	// ErrUnavailable means a dependency (driver, peer) cannot be reached.
	ErrUnavailable = errors.New("unavailable")
)

// FieldError is one problem with one field, named by its path in the JSON
// document, such as "task_groups[0].tasks[1].resources.memory".
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (e FieldError) String() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// ValidationError lists every problem found in an object. It matches
// ErrInvalid with errors.Is.
type ValidationError struct {
	Fields []FieldError
}

// Error joins the field problems into one line.
func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.String()
	}
	return strings.Join(parts, "; ")
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// validator collects field errors while walking an object.
type validator struct {
	fields []FieldError
}

func (v *validator) addf(path, format string, args ...any) {
	v.fields = append(v.fields, FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(v.fields) == 0 {
		return nil
	}
	return &ValidationError{Fields: v.fields}
}

// Invalidf returns a ValidationError for a single field.
func Invalidf(path, format string, args ...any) error {
	return &ValidationError{Fields: []FieldError{{Path: path, Message: fmt.Sprintf(format, args...)}}}
}
