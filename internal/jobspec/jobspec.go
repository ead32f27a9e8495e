// Package jobspec reads job files: the native job JSON (strictly: unknown
// fields are errors) and HCL with the same schema. Every problem is
// reported with the file, line, column and the field's JSON path, and a job
// that parses is also checked with caravan's own validation, so a bad file
// is caught before it reaches a server. docs/jobspec.md documents the
// format for users.
//
//	source ──JSON──▶ strict typed walk (positions by offset) ──────────────▶ caravan.Job
//	       └─HCL───▶ one-line blocks spread ─▶ hclsyntax body ─▶ typed walk ─▶ JSON tree ─┘
//	                                                   (positions by path, from byte offsets)
//	                                                 │
//	      Canonicalize a copy + Validate ◀───────────┘ field paths ─▶ positions
package jobspec

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/caravan-sched/caravan"
)

// Format is the syntax of a job file.
type Format int

// Formats. FormatAuto picks by file extension, then by the first
// character (a '{' means JSON).
const (
	FormatAuto Format = iota
	FormatJSON
	FormatHCL
)

// maxProblems bounds how many problems one error lists.
const maxProblems = 20

// Problem is one thing wrong in a job file.
type Problem struct {
	// Line and Column are 1-based; 0 when the place is not known.
	Line   int
	Column int
	// Field is the JSON path of the field, such as
	// "task_groups[0].tasks[0].resources.memory"; empty for syntax errors.
	Field   string
	Message string
}

// Error lists the problems of a job file. It matches caravan.ErrInvalid.
type Error struct {
	Filename string
	Problems []Problem
}

// Error renders one problem per line: "file:line:column: field: message".
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Filename)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
		}
		b.WriteString(": ")
		if p.Field != "" {
			b.WriteString(p.Field)
			b.WriteString(": ")
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// Is reports whether target is caravan.ErrInvalid.
func (e *Error) Is(target error) bool { return target == caravan.ErrInvalid }

// pos is a place in a file.
type pos struct{ line, col int }

// Parse reads a job from src, which came from filename (used for the
// format and in messages; "-" or "" mean standard input). The job is
// returned as written (the server fills in defaults), after checking that
// it would pass validation.
func Parse(filename string, src []byte) (*caravan.Job, error) {
	return ParseFormat(filename, src, FormatAuto)
}

// ParseFormat is Parse with an explicit format.
func ParseFormat(filename string, src []byte, format Format) (*caravan.Job, error) {
	name := filename
	if name == "" || name == "-" {
		name = "<stdin>"
	}
	if format == FormatAuto {
		format = detect(filename, src)
	}
	var (
		job       *caravan.Job
		positions map[string]pos
		problems  []Problem
	)
	if format == FormatJSON {
		job, positions, problems = parseJSON(src)
	} else {
		job, positions, problems = parseHCL(name, src)
	}
	if len(problems) == 0 {
		problems = validate(job, positions)
	}
	if len(problems) > 0 {
		if len(problems) > maxProblems {
			n := len(problems) - maxProblems
			problems = append(problems[:maxProblems:maxProblems], Problem{Message: fmt.Sprintf("and %d more problems", n)})
		}
		return nil, &Error{Filename: name, Problems: problems}
	}
	return job, nil
}

// detect picks a format by extension, then by content.
func detect(filename string, src []byte) Format {
	switch strings.ToLower(filepath.Ext(filename)) {
	case ".json":
		return FormatJSON
	case ".hcl", ".nomad", ".caravan":
		return FormatHCL
	}
	if t := bytes.TrimLeft(src, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		return FormatJSON
	}
	return FormatHCL
}

// validate runs caravan's validation on a canonicalized copy and places
// each field problem at the closest position known for its path.
func validate(job *caravan.Job, positions map[string]pos) []Problem {
	c := job.Copy()
	c.Canonicalize()
	err := c.Validate()
	if err == nil {
		return nil
	}
	ve, ok := err.(*caravan.ValidationError)
	if !ok {
		return []Problem{{Message: err.Error()}}
	}
	out := make([]Problem, 0, len(ve.Fields))
	for _, f := range ve.Fields {
		p := lookupPos(positions, f.Path)
		out = append(out, Problem{Line: p.line, Column: p.col, Field: f.Path, Message: f.Message})
	}
	sortProblems(out)
	return out
}

// lookupPos returns the position of path, or of its closest ancestor that
// has one.
func lookupPos(positions map[string]pos, path string) pos {
	for {
		if p, ok := positions[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i <= 0 {
			return positions[""]
		}
		path = path[:i]
	}
}

// sortProblems orders problems by place in the file; unplaced ones last.
func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		a, b := ps[i], ps[j]
		if (a.Line == 0) != (b.Line == 0) {
			return a.Line != 0
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}

// joinPath appends a field name to a JSON path.
func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// indexPath appends an index to a JSON path.
func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
