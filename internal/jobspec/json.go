package jobspec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/caravan-sched/caravan"
)

// jsonProblem is a problem found at a byte offset of a JSON document.
type jsonProblem struct {
	path string
	off  int
	msg  string
}

// jsonReader walks a JSON document token by token alongside the Go type it
// will decode into. It records where every field is and reports every
// unknown field, duplicate field, value of the wrong kind and value that the
// type's own UnmarshalJSON refuses, by path and offset.
type jsonReader struct {
	src      []byte
	dec      *json.Decoder
	offsets  map[string]int
	problems []jsonProblem
	lines    *lineIndex
}

// readJSON checks src against type t (a struct) and returns the offset of
// every path and the problems found.
func readJSON(src []byte, t reflect.Type) (map[string]int, []jsonProblem) {
	r := &jsonReader{src: src, dec: json.NewDecoder(bytes.NewReader(src)), offsets: map[string]int{}}
	r.dec.UseNumber()
	off := r.start()
	tok, err := r.dec.Token()
	switch {
	case errors.Is(err, io.EOF):
		r.problem("", off, "empty file: a job file holds one JSON object")
		return r.offsets, r.problems
	case err != nil:
		r.syntax(err)
		return r.offsets, r.problems
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		r.problem("", off, "a job file holds one JSON object, not %s", describeToken(tok))
		return r.offsets, r.problems
	}
	r.offsets[""] = off
	if !r.object(t, "", off) {
		return r.offsets, r.problems
	}
	end := r.start()
	if _, err := r.dec.Token(); !errors.Is(err, io.EOF) {
		r.problem("", end, "unexpected text after the job object")
	}
	return r.offsets, r.problems
}

// start returns the offset where the next token begins.
func (r *jsonReader) start() int {
	i := int(r.dec.InputOffset())
	for i < len(r.src) {
		switch r.src[i] {
		case ' ', '\t', '\r', '\n', ',', ':':
			i++
			continue
		}
		break
	}
	return i
}

func (r *jsonReader) problem(path string, off int, format string, args ...any) {
	r.problems = append(r.problems, jsonProblem{path: path, off: off, msg: fmt.Sprintf(format, args...)})
}

// syntax records a syntax error; the walk stops after one.
func (r *jsonReader) syntax(err error) {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		off := int(se.Offset)
		if off > 0 {
			off-- // the offset is just past the bad byte
		}
		r.problem("", min(off, len(r.src)), "invalid JSON: %v", se)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		r.problem("", len(r.src), "invalid JSON: unexpected end of file")
	default:
		r.problem("", int(r.dec.InputOffset()), "invalid JSON: %v", err)
	}
}

// value reads one value for a field of type t (nil: skip it). It returns
// false after a syntax error.
func (r *jsonReader) value(t reflect.Type, path string) bool {
	off := r.start()
	if _, ok := r.offsets[path]; !ok {
		r.offsets[path] = off
	}
	tok, err := r.dec.Token()
	if err != nil {
		r.syntax(err)
		return false
	}
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if tok == nil {
		return true // null leaves any field as it is
	}
	if t == nil || t.Kind() == reflect.Interface {
		return r.skip(tok)
	}
	if isScalarUnmarshaler(t) {
		if !r.skip(tok) {
			return false
		}
		raw := r.src[off:r.dec.InputOffset()]
		if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
			r.problem(path, off, "%v", err)
		}
		return true
	}
	if d, ok := tok.(json.Delim); ok {
		switch {
		case d == '{' && (t.Kind() == reflect.Struct || t.Kind() == reflect.Map):
			return r.object(t, path, off)
		case d == '[' && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
			for i := 0; r.dec.More(); i++ {
				if !r.value(t.Elem(), indexPath(path, i)) {
					return false
				}
			}
			return r.closing()
		}
		r.problem(path, off, "expected %s, got %s", kindName(t), describeToken(tok))
		return r.skip(tok)
	}
	r.scalar(t, tok, path, off)
	return true
}

// object reads the members of an object whose '{' was read, for a struct
// or map type.
func (r *jsonReader) object(t reflect.Type, path string, off int) bool {
	var fields []field
	if t.Kind() == reflect.Struct {
		fields = fieldsOf(t)
	}
	seen := map[string]int{}
	for r.dec.More() {
		keyOff := r.start()
		tok, err := r.dec.Token()
		if err != nil {
			r.syntax(err)
			return false
		}
		key, _ := tok.(string)
		var ft reflect.Type
		name := key
		if t.Kind() == reflect.Map {
			ft = t.Elem()
		} else if f, ok := lookupField(fields, key); ok {
			ft, name = f.typ, f.name
		} else {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = f.name
			}
			r.problem(joinPath(path, key), keyOff, "unknown field%s", caravan.Suggest(names, key))
		}
		p := joinPath(path, name)
		if first, dup := seen[name]; dup {
			r.problem(p, keyOff, "given twice (first on line %d)", r.line(first))
		}
		seen[name] = keyOff
		if _, ok := r.offsets[p]; !ok {
			r.offsets[p] = keyOff
		}
		if !r.value(ft, p) {
			return false
		}
	}
	return r.closing()
}

// line returns the line number of an offset.
func (r *jsonReader) line(off int) int {
	if r.lines == nil {
		r.lines = newLineIndex(r.src)
	}
	return r.lines.pos(off).line
}

// closing reads the '}' or ']' that ends a value.
func (r *jsonReader) closing() bool {
	if _, err := r.dec.Token(); err != nil {
		r.syntax(err)
		return false
	}
	return true
}

// skip reads past the rest of a value whose first token is tok.
func (r *jsonReader) skip(tok json.Token) bool {
	d, ok := tok.(json.Delim)
	if !ok || d == '}' || d == ']' {
		return true
	}
	for depth := 1; depth > 0; {
		tok, err := r.dec.Token()
		if err != nil {
			r.syntax(err)
			return false
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return true
}

// scalar checks a string, number or boolean against type t.
func (r *jsonReader) scalar(t reflect.Type, tok json.Token, path string, off int) {
	bad := func() { r.problem(path, off, "expected %s, got %s", kindName(t), describeToken(tok)) }
	switch t.Kind() {
	case reflect.String:
		if _, ok := tok.(string); !ok {
			bad()
		}
	case reflect.Bool:
		if _, ok := tok.(bool); !ok {
			bad()
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := tok.(json.Number)
		if !ok {
			bad()
			return
		}
		if _, err := strconv.ParseInt(string(n), 10, t.Bits()); err != nil {
			r.problem(path, off, "expected a whole number in range, got %s", n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := tok.(json.Number)
		if !ok {
			bad()
			return
		}
		if _, err := strconv.ParseUint(string(n), 10, t.Bits()); err != nil {
			r.problem(path, off, "expected a whole number in range, got %s", n)
		}
	case reflect.Float32, reflect.Float64:
		n, ok := tok.(json.Number)
		if !ok {
			bad()
			return
		}
		if _, err := strconv.ParseFloat(string(n), t.Bits()); err != nil {
			r.problem(path, off, "number %s is out of range", n)
		}
	default:
		bad()
	}
}

// describeToken names the kind of a JSON token, for messages.
func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '{' {
			return "an object"
		}
		return "a list"
	case string:
		return strconv.Quote(truncate(v, 40)) + " (a string)"
	case json.Number:
		return string(v) + " (a number)"
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return "a value"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// lineIndex turns byte offsets into line and column numbers.
type lineIndex struct {
	src    []byte
	starts []int // offset of the first byte of each line
}

func newLineIndex(src []byte) *lineIndex {
	starts := []int{0}
	for i, c := range src {
		if c == '\n' {
			starts = append(starts, i+1)
		}
	}
	return &lineIndex{src: src, starts: starts}
}

// pos returns the 1-based line and column (in characters) of off.
func (l *lineIndex) pos(off int) pos {
	off = max(0, min(off, len(l.src)))
	line := sort.Search(len(l.starts), func(i int) bool { return l.starts[i] > off }) - 1
	return pos{line: line + 1, col: utf8.RuneCount(l.src[l.starts[line]:off]) + 1}
}

// jobRequest is the API's request body, accepted as a file too.
type jobRequest struct {
	Job *caravan.Job `json:"job"`
}

// wrapped reports whether src is {"job": {...}}, the API's request body.
func wrapped(src []byte) bool {
	var top map[string]json.RawMessage
	if json.Unmarshal(src, &top) != nil || len(top) != 1 {
		return false
	}
	raw, ok := top["job"]
	return ok && len(raw) > 0 && raw[0] == '{'
}

// parseJSON reads a job from the native job JSON.
func parseJSON(src []byte) (*caravan.Job, map[string]pos, []Problem) {
	lines := newLineIndex(src)
	isWrapped := wrapped(src)
	t := reflect.TypeFor[caravan.Job]()
	if isWrapped {
		t = reflect.TypeFor[jobRequest]()
	}
	offsets, jps := readJSON(src, t)
	strip := func(p string) string {
		if !isWrapped {
			return p
		}
		return strings.TrimPrefix(strings.TrimPrefix(p, "job"), ".")
	}
	positions := make(map[string]pos, len(offsets))
	for p, off := range offsets {
		positions[strip(p)] = lines.pos(off)
	}
	if len(jps) > 0 {
		out := make([]Problem, len(jps))
		for i, jp := range jps {
			p := lines.pos(jp.off)
			out[i] = Problem{Line: p.line, Column: p.col, Field: strip(jp.path), Message: jp.msg}
		}
		sortProblems(out)
		return nil, nil, out
	}
	var job caravan.Job
	var err error
	if isWrapped {
		req := jobRequest{Job: &job}
		err = json.Unmarshal(src, &req)
	} else {
		err = json.Unmarshal(src, &job)
	}
	if err != nil {
		return nil, nil, []Problem{{Message: err.Error()}}
	}
	return &job, positions, nil
}
