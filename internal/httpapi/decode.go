package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/caravan-sched/caravan"
)

// maxBodyBytes bounds every request body; a larger one gets 413.
const maxBodyBytes = 8 << 20

// decode reads a JSON request body into out, strictly: an unknown field, a
// value of the wrong type or a malformed value is a 400 that names the
// field by its path ("task_groups[0].tasks[0].resources.memory: ...").
func decode(r *http.Request, out any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body over %d bytes: %w", mbe.Limit, caravan.ErrTooLarge)
		}
		return fmt.Errorf("read request body: %w", caravan.ErrInvalid)
	}
	return decodeBytes(body, out)
}

// decodeBytes is decode for a body already read.
func decodeBytes(body []byte, out any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return caravan.Invalidf("", "empty request body: a JSON object is required")
	}
	if !json.Valid(body) {
		return caravan.Invalidf("", "request body is not valid JSON: %s", syntaxProblem(body))
	}
	if err := checkShape(body, reflect.TypeOf(out).Elem(), ""); err != nil {
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return caravan.Invalidf(te.Field, "expected %s, got JSON %s", te.Type, te.Value)
		}
		return caravan.Invalidf("", "%v", err)
	}
	return nil
}

// syntaxProblem says where a JSON document stops being valid.
func syntaxProblem(body []byte) string {
	var v any
	err := json.Unmarshal(body, &v)
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(body[:min(int(se.Offset), len(body))], []byte("\n"))
		return fmt.Sprintf("%v (line %d, byte %d)", se, line, se.Offset)
	}
	if err != nil {
		return err.Error()
	}
	return "unknown problem"
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// checkShape walks a JSON document alongside the Go type it will decode
// into, and reports the first unknown field, wrong kind of value, or value
// that the type's own UnmarshalJSON refuses, with its path.
func checkShape(raw json.RawMessage, t reflect.Type, path string) error {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		v := reflect.New(t)
		if err := v.Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			return caravan.Invalidf(path, "%v", err)
		}
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkShape(raw, t.Elem(), path)
	case reflect.Struct:
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			return caravan.Invalidf(path, "expected an object")
		}
		for key, val := range fields {
			f, ok := jsonField(t, key)
			if !ok {
				return caravan.Invalidf(join(path, key), "unknown field%s", suggest(t, key))
			}
			if err := checkShape(val, f.Type, join(path, key)); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return caravan.Invalidf(path, "expected an array")
		}
		for i, item := range items {
			if err := checkShape(item, t.Elem(), path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
	case reflect.Map:
		var items map[string]json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return caravan.Invalidf(path, "expected an object")
		}
		for k, item := range items {
			if err := checkShape(item, t.Elem(), join(path, k)); err != nil {
				return err
			}
		}
	case reflect.Interface:
		return nil
	default:
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			return caravan.Invalidf(path, "expected %s, got %s", kindName(t), describe(raw))
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonField finds the struct field a JSON key decodes into, as
// encoding/json does (exact name first, then case-insensitively).
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	found := false
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := jsonName(f)
		if name == "-" {
			continue
		}
		if name == key {
			return f, true
		}
		if !found && strings.EqualFold(name, key) {
			fold, found = f, true
		}
	}
	return fold, found
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		return f.Name
	}
	return name
}

// suggest names a known field close to an unknown key, for typos.
func suggest(t reflect.Type, key string) string {
	best, bestDist := "", 3
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := jsonName(f)
		if d := editDistance(strings.ToLower(name), strings.ToLower(key)); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

func describe(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}
