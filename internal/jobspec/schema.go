package jobspec

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"
)

// field is one JSON field of a struct type.
type field struct {
	name  string // JSON name
	index int
	typ   reflect.Type
}

// fieldsOf returns the JSON fields of struct type t, in declaration order.
func fieldsOf(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		out = append(out, field{name: name, index: i, typ: f.Type})
	}
	return out
}

// lookupField finds the field a JSON key decodes into, as encoding/json
// does: the exact name first, then ignoring case.
func lookupField(fields []field, key string) (field, bool) {
	for _, f := range fields {
		if f.name == key {
			return f, true
		}
	}
	for _, f := range fields {
		if strings.EqualFold(f.name, key) {
			return f, true
		}
	}
	return field{}, false
}

var (
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	timeType        = reflect.TypeFor[time.Time]()
)

// isScalarUnmarshaler reports whether t reads itself from JSON (Duration,
// MemoryMB, time.Time): a single value, not an object to walk.
func isScalarUnmarshaler(t reflect.Type) bool {
	return t.Kind() != reflect.Pointer && reflect.PointerTo(t).Implements(unmarshalerType)
}

// isBlockType reports whether values of t are objects with fields of their
// own (HCL blocks): structs and pointers to structs, except the types that
// read themselves.
func isBlockType(t reflect.Type) bool {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.Kind() == reflect.Struct && !isScalarUnmarshaler(t) && t != timeType
}

// kindName names the JSON kind a Go type expects, for messages.
func kindName(t reflect.Type) string {
	if t == timeType {
		return "a time string"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return kindName(t.Elem())
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a value"
}
