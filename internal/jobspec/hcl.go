package jobspec

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/caravan-sched/caravan"
)

// The HCL form of a job follows the JSON schema: a field whose value is an
// object is a block, a list of objects is a repeated block under a singular
// name, everything else is an attribute. These functions hold the
// exceptions.

// hclBlockName renames a list field to its singular block name.
func hclBlockName(jsonName string) (string, bool) {
	switch jsonName {
	case "task_groups":
		return "group", true
	case "tasks":
		return "task", true
	case "constraints":
		return "constraint", true
	case "spreads":
		return "spread", true
	case "ports":
		return "port", true
	}
	return "", false
}

// hclLabel names the field that a block's label sets ("" for none).
func hclLabel(blockType string) string {
	switch blockType {
	case "job":
		return "id"
	case "group", "task":
		return "name"
	case "port":
		return "label"
	}
	return ""
}

// hclServerField reports whether a job field is set only by the server.
func hclServerField(name string) bool {
	switch name {
	case "stop", "status", "status_description", "version", "submit_time",
		"create_index", "modify_index", "job_modify_index":
		return true
	}
	return false
}

var jobType = reflect.TypeFor[caravan.Job]()

// hclReader turns an HCL body into the JSON tree of the type it describes,
// recording the position of every path.
type hclReader struct {
	src       []byte // the original source
	lines     *lineIndex
	positions map[string]pos
	problems  []Problem
}

// parseHCL reads a job from HCL.
func parseHCL(filename string, src []byte) (job *caravan.Job, positions map[string]pos, problems []Problem) {
	defer func() {
		// The HCL parser is a library we do not own: a panic on odd input
		// becomes an error, not a crash.
		if r := recover(); r != nil {
			job, positions, problems = nil, nil, []Problem{{Message: fmt.Sprintf("cannot read the file as HCL: %v", r)}}
		}
	}()
	h := &hclReader{src: src, lines: newLineIndex(src), positions: map[string]pos{}}
	file, diags := hclsyntax.ParseConfig(relaxOneLineBlocks(src), filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, nil, h.diagProblems(diags, "")
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return nil, nil, []Problem{{Message: "not native HCL syntax"}}
	}
	tree := h.file(body)
	if tree == nil {
		return nil, nil, h.problems
	}
	b, err := json.Marshal(tree)
	if err != nil {
		return nil, nil, []Problem{{Message: err.Error()}}
	}
	// The values HCL accepted are checked against the job's types as JSON
	// would be (durations, memory sizes, number ranges).
	_, jps := readJSON(b, jobType)
	for _, jp := range jps {
		p := lookupPos(h.positions, jp.path)
		h.problems = append(h.problems, Problem{Line: p.line, Column: p.col, Field: jp.path, Message: jp.msg})
	}
	if len(h.problems) > 0 {
		sortProblems(h.problems)
		return nil, nil, h.problems
	}
	var j caravan.Job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, nil, []Problem{{Message: err.Error()}}
	}
	return &j, h.positions, nil
}

// pos is the place of p in the original source (by byte offset: the
// parsed source may have blanks turned into newlines).
func (h *hclReader) pos(p hcl.Pos) pos { return h.lines.pos(p.Byte) }

// diagProblems turns HCL diagnostics into problems about field.
func (h *hclReader) diagProblems(diags hcl.Diagnostics, field string) []Problem {
	var out []Problem
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		p := Problem{Field: field, Message: d.Summary}
		if d.Detail != "" {
			p.Message += ": " + d.Detail
		}
		if d.Subject != nil {
			at := h.pos(d.Subject.Start)
			p.Line, p.Column = at.line, at.col
		}
		out = append(out, p)
	}
	return out
}

func (h *hclReader) errAt(r hcl.Range, field, format string, args ...any) {
	at := h.pos(r.Start)
	h.problems = append(h.problems, Problem{Line: at.line, Column: at.col, Field: field, Message: fmt.Sprintf(format, args...)})
}

// file reads the one job block of a file.
func (h *hclReader) file(body *hclsyntax.Body) map[string]any {
	for _, name := range sortedAttrs(body) {
		a := body.Attributes[name]
		h.errAt(a.NameRange, "", "unexpected attribute %q: a job file holds one job block, job \"id\" { ... }", name)
	}
	var job *hclsyntax.Block
	for _, b := range body.Blocks {
		switch {
		case b.Type != "job":
			h.errAt(b.TypeRange, "", "unexpected block %q: a job file holds one job block, job \"id\" { ... }", b.Type)
		case job != nil:
			h.errAt(b.TypeRange, "", "a job file holds one job block; the first is on line %d", job.TypeRange.Start.Line)
		default:
			job = b
		}
	}
	if job == nil {
		if len(h.problems) == 0 {
			h.errAt(body.SrcRange, "", "no job block: a job file holds job \"id\" { ... }")
		}
		return nil
	}
	h.positions[""] = h.pos(job.TypeRange.Start)
	return h.block(job, jobType, "")
}

// block reads one block describing struct type t at path.
func (h *hclReader) block(b *hclsyntax.Block, t reflect.Type, path string) map[string]any {
	obj := map[string]any{}
	label := hclLabel(b.Type)
	switch {
	case label == "" && len(b.Labels) > 0:
		h.errAt(b.LabelRanges[0], path, "a %s block takes no label", b.Type)
	case len(b.Labels) > 1:
		h.errAt(b.LabelRanges[1], path, "a %s block takes one label, its %s", b.Type, label)
	case len(b.Labels) == 1:
		obj[label] = b.Labels[0]
		h.positions[joinPath(path, label)] = h.pos(b.LabelRanges[0].Start)
	}
	labelField := ""
	if len(b.Labels) == 1 {
		labelField = label
	}
	h.body(b.Body, t, path, obj, labelField)
	return obj
}

// body reads the attributes and blocks of a body into obj.
// labelField names the field the block's label already set, if any.
func (h *hclReader) body(body *hclsyntax.Body, t reflect.Type, path string, obj map[string]any, labelField string) {
	fields := fieldsOf(t)
	byName := make(map[string]field, len(fields))
	var names []string
	for _, f := range fields {
		if t == jobType && hclServerField(f.name) {
			continue
		}
		n := f.name
		if bn, ok := hclBlockName(f.name); ok {
			n = bn
		}
		byName[n] = f
		names = append(names, n)
	}
	for _, name := range sortedAttrs(body) {
		a := body.Attributes[name]
		f, ok := byName[name]
		if !ok {
			h.unknown(a.NameRange, path, name, names, "attribute")
			continue
		}
		p := joinPath(path, f.name)
		if isBlockType(f.typ) || (f.typ.Kind() == reflect.Slice && isBlockType(f.typ.Elem())) {
			h.errAt(a.NameRange, p, "%s is a block: write %s { ... }", name, name)
			continue
		}
		if f.name == labelField {
			h.errAt(a.NameRange, p, "the %s is already given as the block's label", f.name)
			continue
		}
		h.positions[p] = h.pos(a.NameRange.Start)
		if v, ok := h.value(a.Expr, f.typ, p); ok {
			obj[f.name] = v
		}
	}
	for _, b := range body.Blocks {
		f, ok := byName[b.Type]
		if !ok {
			h.unknown(b.TypeRange, path, b.Type, names, "block")
			continue
		}
		h.childBlock(b, f, path, obj)
	}
}

// childBlock reads block b for field f of the enclosing object.
func (h *hclReader) childBlock(b *hclsyntax.Block, f field, path string, obj map[string]any) {
	p := joinPath(path, f.name)
	ft := f.typ
	switch {
	case ft.Kind() == reflect.Slice && isBlockType(ft.Elem()):
		list, _ := obj[f.name].([]any)
		ip := indexPath(p, len(list))
		if len(list) == 0 {
			h.positions[p] = h.pos(b.TypeRange.Start)
		}
		h.positions[ip] = h.pos(b.TypeRange.Start)
		obj[f.name] = append(list, h.block(b, deref(ft.Elem()), ip))
		return
	case obj[f.name] != nil:
		h.errAt(b.TypeRange, p, "%s is given twice (the first is on line %d)", b.Type, h.positions[p].line)
		return
	}
	h.positions[p] = h.pos(b.TypeRange.Start)
	switch {
	case isBlockType(ft):
		obj[f.name] = h.block(b, deref(ft), p)
	case ft.Kind() == reflect.Map:
		// env { FOO = "bar" } is accepted beside env = { FOO = "bar" }.
		if len(b.Labels) > 0 {
			h.errAt(b.LabelRanges[0], p, "a %s block takes no label", b.Type)
		}
		for _, nb := range b.Body.Blocks {
			h.errAt(nb.TypeRange, p, "unexpected block %q inside %s", nb.Type, b.Type)
		}
		m := map[string]any{}
		for _, name := range sortedAttrs(b.Body) {
			a := b.Body.Attributes[name]
			kp := joinPath(p, name)
			h.positions[kp] = h.pos(a.NameRange.Start)
			if v, ok := h.value(a.Expr, ft.Elem(), kp); ok {
				m[name] = v
			}
		}
		obj[f.name] = m
	default:
		h.errAt(b.TypeRange, p, "%s is an attribute: write %s = ...", b.Type, b.Type)
	}
}

// unknown reports an unknown attribute or block name.
func (h *hclReader) unknown(r hcl.Range, path, name string, names []string, what string) {
	p := joinPath(path, name)
	if hclServerField(name) && path == "" {
		h.errAt(r, p, "%s is set by the server, not in a job file", name)
		return
	}
	if bn, ok := hclBlockName(name); ok {
		h.errAt(r, p, "unknown %s %q: write one %s block for each", what, name, bn)
		return
	}
	h.errAt(r, p, "unknown %s %q%s", what, name, caravan.Suggest(names, name))
}

func deref(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func sortedAttrs(body *hclsyntax.Body) []string {
	names := make([]string, 0, len(body.Attributes))
	for n := range body.Attributes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// value converts an attribute's expression into the JSON value for a field
// of type t: string, json.Number, bool, []any or map[string]any.
func (h *hclReader) value(expr hclsyntax.Expression, t reflect.Type, path string) (any, bool) {
	t = deref(t)
	switch {
	case isScalarUnmarshaler(t):
		return h.scalar(expr, path)
	case t.Kind() == reflect.String:
		s, ok := h.str(expr, path)
		return s, ok
	case t.Kind() == reflect.Bool:
		return h.converted(expr, cty.Bool, path)
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Float64:
		return h.converted(expr, cty.Number, path)
	case t.Kind() == reflect.Slice:
		if tuple, ok := expr.(*hclsyntax.TupleConsExpr); ok {
			out := make([]any, 0, len(tuple.Exprs))
			good := true
			for i, e := range tuple.Exprs {
				ip := indexPath(path, i)
				h.positions[ip] = h.pos(e.Range().Start)
				v, ok := h.value(e, t.Elem(), ip)
				good = good && ok
				out = append(out, v)
			}
			return out, good
		}
		return h.converted(expr, cty.List(cty.String), path)
	case t.Kind() == reflect.Map:
		if oc, ok := expr.(*hclsyntax.ObjectConsExpr); ok {
			out := make(map[string]any, len(oc.Items))
			good := true
			for _, item := range oc.Items {
				k, ok := h.converted(item.KeyExpr, cty.String, path)
				key, isStr := k.(string)
				if !ok || !isStr {
					good = false
					continue
				}
				kp := joinPath(path, key)
				h.positions[kp] = h.pos(item.KeyExpr.Range().Start)
				v, ok := h.value(item.ValueExpr, t.Elem(), kp)
				good = good && ok
				out[key] = v
			}
			return out, good
		}
		return h.converted(expr, cty.Map(cty.String), path)
	}
	h.errAt(expr.Range(), path, "expected %s", kindName(t))
	return nil, false
}

// scalar reads a single value: a string (templates allowed), number or bool.
func (h *hclReader) scalar(expr hclsyntax.Expression, path string) (any, bool) {
	switch expr.(type) {
	case *hclsyntax.TemplateExpr, *hclsyntax.TemplateWrapExpr:
		s, ok := h.str(expr, path)
		return s, ok
	}
	v, ok := h.eval(expr, path)
	if !ok {
		return nil, false
	}
	switch v.Type() {
	case cty.String, cty.Number, cty.Bool:
		return h.toJSON(v, expr, path)
	}
	h.errAt(expr.Range(), path, "expected a string or a number, got %s", v.Type().FriendlyName())
	return nil, false
}

// str reads a string. References inside ${ } are kept as written, such as
// "${attr.os}": the node fills them in, not the parser.
func (h *hclReader) str(expr hclsyntax.Expression, path string) (string, bool) {
	switch e := expr.(type) {
	case *hclsyntax.TemplateExpr:
		var b strings.Builder
		for _, part := range e.Parts {
			if lit, ok := part.(*hclsyntax.LiteralValueExpr); ok && lit.Val.Type() == cty.String && !lit.Val.IsNull() {
				b.WriteString(lit.Val.AsString())
				continue
			}
			ref, ok := h.reference(part, path)
			if !ok {
				return "", false
			}
			b.WriteString(ref)
		}
		return b.String(), true
	case *hclsyntax.TemplateWrapExpr:
		return h.reference(e.Wrapped, path)
	}
	v, ok := h.converted(expr, cty.String, path)
	s, isStr := v.(string)
	return s, ok && isStr
}

// reference renders an interpolated reference back to "${...}".
func (h *hclReader) reference(e hclsyntax.Expression, path string) (string, bool) {
	st, ok := e.(*hclsyntax.ScopeTraversalExpr)
	r := e.Range()
	if !ok || r.Start.Byte < 0 || r.End.Byte > len(h.src) || r.Start.Byte > r.End.Byte {
		h.errAt(r, path, "only references such as ${attr.os} or ${meta.rack} may appear inside ${ } (the node fills them in); write $${ for a literal ${")
		return "", false
	}
	return "${" + string(h.src[st.SrcRange.Start.Byte:st.SrcRange.End.Byte]) + "}", true
}

// eval evaluates an expression without variables or functions.
func (h *hclReader) eval(expr hclsyntax.Expression, path string) (cty.Value, bool) {
	if st, ok := expr.(*hclsyntax.ScopeTraversalExpr); ok {
		r := st.SrcRange
		if r.Start.Byte >= 0 && r.End.Byte <= len(h.src) && r.Start.Byte <= r.End.Byte {
			ref := string(h.src[r.Start.Byte:r.End.Byte])
			h.errAt(r, path, "%s is a reference: write a string, such as \"${%s}\"", ref, ref)
			return cty.NilVal, false
		}
	}
	v, diags := expr.Value(nil)
	if diags.HasErrors() {
		h.problems = append(h.problems, h.diagProblems(diags, path)...)
		return cty.NilVal, false
	}
	if !v.IsWhollyKnown() {
		h.errAt(expr.Range(), path, "value is not known")
		return cty.NilVal, false
	}
	if !saneNumbers(v) {
		h.errAt(expr.Range(), path, "number is out of range")
		return cty.NilVal, false
	}
	return v, true
}

// saneNumbers reports whether every number in v has a modest exponent, so
// that writing it out as decimal text stays small.
func saneNumbers(v cty.Value) bool {
	if v.IsNull() {
		return true
	}
	t := v.Type()
	switch {
	case t == cty.Number:
		f := v.AsBigFloat()
		exp := f.MantExp(nil)
		return !f.IsInf() && exp <= 1024 && exp >= -1024
	case t.IsListType() || t.IsTupleType() || t.IsSetType() || t.IsMapType() || t.IsObjectType():
		for it := v.ElementIterator(); it.Next(); {
			if _, e := it.Element(); !saneNumbers(e) {
				return false
			}
		}
	}
	return true
}

// converted evaluates expr and converts it to type want.
func (h *hclReader) converted(expr hclsyntax.Expression, want cty.Type, path string) (any, bool) {
	v, ok := h.eval(expr, path)
	if !ok {
		return nil, false
	}
	if v.IsNull() {
		return nil, true
	}
	c, err := convert.Convert(v, want)
	if err != nil {
		h.errAt(expr.Range(), path, "expected %s: %v", want.FriendlyName(), err)
		return nil, false
	}
	return h.toJSON(c, expr, path)
}

// toJSON turns a known cty value into its JSON tree form.
func (h *hclReader) toJSON(v cty.Value, expr hclsyntax.Expression, path string) (any, bool) {
	if v.IsNull() {
		return nil, true
	}
	t := v.Type()
	switch {
	case t == cty.String:
		return v.AsString(), true
	case t == cty.Bool:
		return v.True(), true
	case t == cty.Number:
		f := v.AsBigFloat()
		if exp := f.MantExp(nil); f.IsInf() || exp > 1024 || exp < -1024 {
			h.errAt(expr.Range(), path, "number is out of range")
			return nil, false
		}
		return json.Number(f.Text('f', -1)), true
	case t.IsListType() || t.IsTupleType() || t.IsSetType():
		out := []any{}
		for it := v.ElementIterator(); it.Next(); {
			_, e := it.Element()
			j, ok := h.toJSON(e, expr, path)
			if !ok {
				return nil, false
			}
			out = append(out, j)
		}
		return out, true
	case t.IsMapType() || t.IsObjectType():
		out := map[string]any{}
		for it := v.ElementIterator(); it.Next(); {
			k, e := it.Element()
			j, ok := h.toJSON(e, expr, path)
			if !ok {
				return nil, false
			}
			out[k.AsString()] = j
		}
		return out, true
	}
	h.errAt(expr.Range(), path, "unsupported value of type %s", t.FriendlyName())
	return nil, false
}
