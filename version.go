package caravan

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a dotted numeric version such as "1.2.10" or "6.1.0-rc1",
// compared segment by segment; a pre-release sorts before its release.
type Version struct {
	Segments   []int
	Prerelease string
}

// ParseVersion reads a version, with an optional leading "v" and an optional
// "-prerelease" or "+build" suffix (build metadata is ignored).
func ParseVersion(s string) (Version, error) {
	orig := s
	s = strings.TrimPrefix(strings.TrimSpace(s), "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	var v Version
	if i := strings.IndexByte(s, '-'); i >= 0 {
		v.Prerelease = s[i+1:]
		s = s[:i]
	}
	if s == "" {
		return Version{}, fmt.Errorf("invalid version %q", orig)
	}
	for _, part := range strings.Split(s, ".") {
		n, err := strconv.Atoi(part)
		if err != nil || n < 0 {
			return Version{}, fmt.Errorf("invalid version %q", orig)
		}
		v.Segments = append(v.Segments, n)
	}
	return v, nil
}

// Compare returns -1, 0 or 1 as v is older than, equal to or newer than w.
func (v Version) Compare(w Version) int {
	n := max(len(v.Segments), len(w.Segments))
	for i := 0; i < n; i++ {
		a, b := 0, 0
		if i < len(v.Segments) {
			a = v.Segments[i]
		}
		if i < len(w.Segments) {
			b = w.Segments[i]
		}
		if a != b {
			if a < b {
				return -1
			}
			return 1
		}
	}
	switch {
	case v.Prerelease == w.Prerelease:
		return 0
	case v.Prerelease == "":
		return 1
	case w.Prerelease == "":
		return -1
	case v.Prerelease < w.Prerelease:
		return -1
	}
	return 1
}

// VersionConstraint is a list of comparisons that must all hold, such as
// ">= 1.2, < 2.0".
type VersionConstraint []versionCheck

type versionCheck struct {
	op string
	v  Version
}

// ParseVersionConstraint reads comma-separated comparisons, each an operator
// (=, !=, >, >=, <, <=, ~>) and a version. A bare version means =.
func ParseVersionConstraint(s string) (VersionConstraint, error) {
	var vc VersionConstraint
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("invalid version constraint %q: empty comparison", s)
		}
		op := "="
		for _, candidate := range []string{">=", "<=", "!=", "~>", ">", "<", "="} {
			if strings.HasPrefix(part, candidate) {
				op = candidate
				part = strings.TrimSpace(part[len(candidate):])
				break
			}
		}
		v, err := ParseVersion(part)
		if err != nil {
			return nil, fmt.Errorf("invalid version constraint %q: %w", s, err)
		}
		vc = append(vc, versionCheck{op: op, v: v})
	}
	return vc, nil
}

// Check reports whether v satisfies every comparison.
func (vc VersionConstraint) Check(v Version) bool {
	for _, c := range vc {
		cmp := v.Compare(c.v)
		ok := false
		switch c.op {
		case "=":
			ok = cmp == 0
		case "!=":
			ok = cmp != 0
		case ">":
			ok = cmp > 0
		case ">=":
			ok = cmp >= 0
		case "<":
			ok = cmp < 0
		case "<=":
			ok = cmp <= 0
		case "~>":
			// Pessimistic: >= c.v and below the next release of its
			// second-to-last segment.
			ok = cmp >= 0 && pessimisticUpper(c.v).Compare(v) > 0
		}
		if !ok {
			return false
		}
	}
	return true
}

func pessimisticUpper(v Version) Version {
	segs := append([]int(nil), v.Segments...)
	if len(segs) > 1 {
		segs = segs[:len(segs)-1]
	}
	segs[len(segs)-1]++
	return Version{Segments: segs}
}
