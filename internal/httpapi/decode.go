package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	jsonv1 "github.com/go-json-experiment/json/v1"

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

// strictOptions decode in one pass what encoding/json would accept
// (names matched exactly first, then case-insensitively, duplicate names
// and invalid UTF-8 let through, values merged into what out holds),
// except that an unknown object member is an error.
var strictOptions = jsonv2.JoinOptions(
	jsonv2.RejectUnknownMembers(true),
	jsonv2.MatchCaseInsensitiveNames(true),
	jsonv1.MatchCaseSensitiveDelimiter(true),
	jsonv1.MergeWithLegacySemantics(true),
	jsontext.AllowDuplicateNames(true),
	jsontext.AllowInvalidUTF8(true),
)

// decodeBytes is decode for a body already read. The body is decoded in
// one pass; only when that fails is it looked at again, to describe the
// problem: a syntax error anywhere comes first, then the first unknown
// field or value of the wrong kind, by its path.
func decodeBytes(body []byte, out any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return caravan.Invalidf("", "empty request body: a JSON object is required")
	}
	err := jsonv2.Unmarshal(body, out, strictOptions)
	if err == nil {
		return nil
	}
	if !json.Valid(body) {
		return caravan.Invalidf("", "request body is not valid JSON: %s", syntaxProblem(body))
	}
	var se *jsonv2.SemanticError
	if !errors.As(err, &se) {
		return caravan.Invalidf("", "%v", err)
	}
	return describeSemantic(body, reflect.TypeOf(out).Elem(), se)
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

// describeSemantic turns a decoding error into a validation error on the
// field path: an unknown field (with the known field it may be a typo
// of), a value the type's own UnmarshalJSON refuses, or a value of the
// wrong kind.
func describeSemantic(body []byte, root reflect.Type, se *jsonv2.SemanticError) error {
	path, t, parent, last := walkPointer(root, se.JSONPointer)
	if errors.Is(se.Err, jsonv2.ErrUnknownName) {
		hint := ""
		if parent != nil {
			hint = suggest(parent, last)
		}
		return caravan.Invalidf(path, "unknown field%s", hint)
	}
	if t == nil {
		t = se.GoType
	}
	if t == nil {
		return caravan.Invalidf(path, "%v", se)
	}
	for t.Kind() == reflect.Pointer && !reflect.PointerTo(t).Implements(unmarshalerType) {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) && se.Err != nil {
		return caravan.Invalidf(path, "%v", se.Err)
	}
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return caravan.Invalidf(path, "expected an object")
	case reflect.Slice, reflect.Array:
		return caravan.Invalidf(path, "expected an array")
	}
	return caravan.Invalidf(path, "expected %s, got %s", kindName(t), describe(valueAt(body, se.ByteOffset)))
}

// walkPointer follows a JSON pointer through the Go type it was decoded
// into. It returns the pointer as a field path ("a.b[2].c"), the type at
// its end (nil when unknown), and the struct type holding the last name
// with that name when the name is not one of its fields.
func walkPointer(root reflect.Type, ptr jsontext.Pointer) (path string, t, parent reflect.Type, last string) {
	t = root
	for tok := range ptr.Tokens() {
		for t != nil && t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		last = tok
		switch {
		case t == nil:
			path = join(path, tok)
		case t.Kind() == reflect.Struct:
			path = join(path, tok)
			f, ok := jsonField(t, tok)
			if !ok {
				return path, nil, t, tok
			}
			t = f.Type
		case t.Kind() == reflect.Slice || t.Kind() == reflect.Array:
			path += "[" + tok + "]"
			t = t.Elem()
		case t.Kind() == reflect.Map:
			path = join(path, tok)
			t = t.Elem()
		default:
			path = join(path, tok)
			t = nil
		}
	}
	return path, t, nil, last
}

// valueAt returns the JSON value that starts at offset in body (after
// white space), or what is left of the body when none does.
func valueAt(body []byte, offset int64) []byte {
	if offset < 0 || offset > int64(len(body)) {
		return nil
	}
	rest := body[offset:]
	v, err := jsontext.NewDecoder(bytes.NewReader(rest), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)).ReadValue()
	if err != nil {
		return rest
	}
	return v
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// jsonField finds the struct field a JSON key decodes into, as
// encoding/json does (exact name first, then case-insensitively), looking
// into embedded structs.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold reflect.StructField
	found := false
	for _, f := range jsonFields(t) {
		name := jsonName(f)
		if name == key {
			return f, true
		}
		if !found && strings.EqualFold(name, key) {
			fold, found = f, true
		}
	}
	return fold, found
}

// jsonFields lists the fields of t that JSON names reach, with those of
// untagged embedded structs in place of the embedded field.
func jsonFields(t reflect.Type) []reflect.StructField {
	var out []reflect.StructField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if jsonName(f) == "-" {
			continue
		}
		if f.Anonymous && f.Tag.Get("json") == "" {
			et := f.Type
			if et.Kind() == reflect.Pointer {
				et = et.Elem()
			}
			if et.Kind() == reflect.Struct {
				out = append(out, jsonFields(et)...)
				continue
			}
		}
		if f.IsExported() {
			out = append(out, f)
		}
	}
	return out
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
	fields := jsonFields(t)
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = jsonName(f)
	}
	return caravan.Suggest(names, key)
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

func describe(raw []byte) string {
	s := strings.TrimSpace(string(raw))
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return s
}
