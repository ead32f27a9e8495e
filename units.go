package caravan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Duration is a time.Duration that reads and writes JSON as a string such as
// "30s", "90m" or "1h30m". A bare JSON number is taken as whole seconds.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		s, err := jsonString(b)
		if err != nil {
			return err
		}
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*d = v
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("duration must be a string such as \"30s\" or a number of seconds, not %s", b)
	}
	if f < 0 || f > float64(math.MaxInt64/int64(time.Second)) || math.IsNaN(f) {
		return fmt.Errorf("duration %s seconds is out of range", b)
	}
	*d = Duration(f * float64(time.Second))
	return nil
}

// jsonString decodes a JSON string. Strings without escapes (durations and
// amounts of memory always are) are taken as they are, without the cost of
// a JSON decoder.
func jsonString(b []byte) (string, error) {
	if n := len(b); n >= 2 && b[n-1] == '"' {
		inner := b[1 : n-1]
		plain := utf8.Valid(inner)
		for _, c := range inner {
			if c == '\\' || c == '"' || c < 0x20 {
				plain = false
				break
			}
		}
		if plain {
			return string(inner), nil
		}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", err
	}
	return s, nil
}

// ParseDuration reads "30s", "1h30m", "90m" or a plain number of seconds.
// Negative durations are refused.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return Duration(time.Duration(n) * time.Second), nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: use a number with a unit, such as \"30s\", \"90m\" or \"1h30m\"", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return Duration(v), nil
}

// MemoryMB is an amount of memory in megabytes (MiB). In JSON it is a number
// of MB or a string with a unit: "512M", "512MB", "8G", "1.5GiB", "1T",
// "65536K". A string without a unit is MB.
type MemoryMB int64

// UnmarshalJSON reads a number of MB or a string with a unit.
func (m *MemoryMB) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		s, err := jsonString(b)
		if err != nil {
			return err
		}
		v, err := ParseMemory(s)
		if err != nil {
			return err
		}
		*m = v
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("memory must be a whole number of MB or a string such as \"512M\" or \"8G\", not %s", b)
	}
	if n < 0 || n > maxMemoryMB {
		return fmt.Errorf("memory %d MB is out of range", n)
	}
	*m = MemoryMB(n)
	return nil
}

// maxMemoryMB is 1 EiB in MB: far above any machine, well inside int64 bytes.
const maxMemoryMB = 1 << 40

// ParseMemory reads an amount of memory with an optional unit (K, M, G, T,
// with or without a trailing B or iB, in either case) and returns whole MB,
// rounding up.
func ParseMemory(s string) (MemoryMB, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty memory amount")
	}
	u := strings.ToUpper(s)
	u = strings.TrimSuffix(u, "IB")
	u = strings.TrimSuffix(u, "B")
	mult := 1.0 // MB
	if n := len(u); n > 0 {
		switch u[n-1] {
		case 'K':
			mult, u = 1.0/1024, u[:n-1]
		case 'M':
			u = u[:n-1]
		case 'G':
			mult, u = 1024, u[:n-1]
		case 'T':
			mult, u = 1024*1024, u[:n-1]
		}
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(u), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("invalid memory amount %q: use a number of MB or a unit, such as \"512M\" or \"8G\"", orig)
	}
	if f < 0 {
		return 0, fmt.Errorf("memory amount %q is negative", orig)
	}
	mb := math.Ceil(f * mult)
	if mb > maxMemoryMB {
		return 0, fmt.Errorf("memory amount %q is out of range", orig)
	}
	return MemoryMB(mb), nil
}

// Bytes returns m in bytes.
func (m MemoryMB) Bytes() int64 { return int64(m) << 20 }
