package scheduler

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/caravan-sched/caravan"
)

// targetKind says where a constraint operand takes its value from.
type targetKind uint8

const (
	targetLiteral targetKind = iota
	targetAttr               // ${attr.X}
	targetMeta               // ${meta.X}
	targetNode               // ${node.X}
	targetUnknown            // ${anything else}: never set
)

// target is a parsed constraint operand: a literal, or a node field named
// with ${...}.
type target struct {
	kind targetKind
	key  string
}

// parseTarget reads "${attr.os}", "${meta.rack}", "${node.datacenter}" or a
// literal value.
func parseTarget(s string) target {
	if !strings.HasPrefix(s, "${") || !strings.HasSuffix(s, "}") {
		return target{kind: targetLiteral, key: s}
	}
	name := strings.TrimSpace(s[2 : len(s)-1])
	switch {
	case strings.HasPrefix(name, "attr."):
		return target{kind: targetAttr, key: name[len("attr."):]}
	case strings.HasPrefix(name, "meta."):
		return target{kind: targetMeta, key: name[len("meta."):]}
	case strings.HasPrefix(name, "node."):
		return target{kind: targetNode, key: name[len("node."):]}
	}
	return target{kind: targetUnknown, key: name}
}

// resolve returns the operand's value on node n, and whether it is set.
func (t target) resolve(n *caravan.Node) (string, bool) {
	switch t.kind {
	case targetLiteral:
		return t.key, true
	case targetAttr:
		v, ok := n.Attributes[t.key]
		return v, ok
	case targetMeta:
		v, ok := n.Meta[t.key]
		return v, ok
	case targetNode:
		switch t.key {
		case "datacenter":
			return n.Datacenter, true
		case "pool":
			return nodePool(n), true
		case "name", "unique.name":
			return n.Name, true
		case "id", "unique.id":
			return n.ID, true
		}
	}
	return "", false
}

// constraintCheck is one constraint compiled for an evaluation: operands
// parsed, regexp compiled, version constraint parsed, literal sets split.
type constraintCheck struct {
	src    caravan.Constraint
	op     string
	reason string // the constraint as failure reports show it
	lhs    target
	rhs    target
	re     *regexp.Regexp
	vc     caravan.VersionConstraint
	set    []string // literal set_contains values
	num    float64  // literal right side, when numeric
	isNum  bool
	broken bool // the value does not compile: no node satisfies it
}

// compiler compiles constraints and caches what is costly to build, so a
// regexp or version constraint is parsed once per evaluation.
type compiler struct {
	regexps  map[string]*regexp.Regexp
	versions map[string]caravan.VersionConstraint
}

func (cp *compiler) regexp(s string) *regexp.Regexp {
	if re, ok := cp.regexps[s]; ok {
		return re
	}
	re, err := regexp.Compile(s)
	if err != nil {
		re = nil
	}
	if cp.regexps == nil {
		cp.regexps = map[string]*regexp.Regexp{}
	}
	cp.regexps[s] = re
	return re
}

func (cp *compiler) version(s string) caravan.VersionConstraint {
	if vc, ok := cp.versions[s]; ok {
		return vc
	}
	vc, err := caravan.ParseVersionConstraint(s)
	if err != nil {
		vc = nil
	}
	if cp.versions == nil {
		cp.versions = map[string]caravan.VersionConstraint{}
	}
	cp.versions[s] = vc
	return vc
}

// compile prepares one constraint.
func (cp *compiler) compile(c caravan.Constraint) *constraintCheck {
	k := &constraintCheck{
		src:    c,
		op:     c.Operator,
		reason: c.String(),
		lhs:    parseTarget(c.Attribute),
		rhs:    parseTarget(c.Value),
	}
	if k.op == "" {
		k.op = caravan.ConstraintEqual
		k.reason = caravan.Constraint{Attribute: c.Attribute, Operator: k.op, Value: c.Value}.String()
	}
	literal := k.rhs.kind == targetLiteral
	switch k.op {
	case caravan.ConstraintRegexp:
		k.re = cp.regexp(c.Value)
		k.broken = k.re == nil
	case caravan.ConstraintVersion:
		k.vc = cp.version(c.Value)
		k.broken = k.vc == nil
	case caravan.ConstraintSetContains:
		if literal {
			k.set = splitSet(c.Value)
		}
	case caravan.ConstraintLess, caravan.ConstraintLessEqual, caravan.ConstraintGreater, caravan.ConstraintGreaterEqual:
		if literal {
			k.num, k.isNum = parseNumber(c.Value)
		}
	case caravan.ConstraintEqual, caravan.ConstraintNotEqual, caravan.ConstraintIsSet, caravan.ConstraintIsNotSet:
	default:
		k.broken = true
	}
	return k
}

// holds reports whether node n satisfies the constraint.
func (k *constraintCheck) holds(n *caravan.Node) bool {
	if k.broken {
		return false
	}
	l, lok := k.lhs.resolve(n)
	switch k.op {
	case caravan.ConstraintIsSet:
		return lok
	case caravan.ConstraintIsNotSet:
		return !lok
	}
	r, rok := k.rhs.resolve(n)
	if k.op == caravan.ConstraintNotEqual {
		// A value that is not set differs from every value.
		return !lok || !rok || l != r
	}
	if !lok || !rok {
		return false
	}
	switch k.op {
	case caravan.ConstraintEqual:
		return l == r
	case caravan.ConstraintRegexp:
		return k.re.MatchString(l)
	case caravan.ConstraintVersion:
		v, err := caravan.ParseVersion(l)
		return err == nil && k.vc.Check(v)
	case caravan.ConstraintSetContains:
		return setContains(l, k.set, r)
	}
	return k.compare(l, r)
}

// compare orders l and r numerically when both are numbers, else
// lexically.
func (k *constraintCheck) compare(l, r string) bool {
	cmp := 0
	ln, lnum := parseNumber(l)
	rn, rnum := k.num, k.isNum
	if k.rhs.kind != targetLiteral {
		rn, rnum = parseNumber(r)
	}
	switch {
	case lnum && rnum:
		switch {
		case ln < rn:
			cmp = -1
		case ln > rn:
			cmp = 1
		}
	default:
		cmp = strings.Compare(l, r)
	}
	switch k.op {
	case caravan.ConstraintLess:
		return cmp < 0
	case caravan.ConstraintLessEqual:
		return cmp <= 0
	case caravan.ConstraintGreater:
		return cmp > 0
	case caravan.ConstraintGreaterEqual:
		return cmp >= 0
	}
	return false
}

func parseNumber(s string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return f, err == nil
}

// splitSet splits a comma-separated set, trimming blanks and dropping
// empty items.
func splitSet(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// setContains reports whether the comma-separated set have holds every
// value of want (or, when want is nil, of wantRaw).
func setContains(have string, want []string, wantRaw string) bool {
	if want == nil {
		want = splitSet(wantRaw)
	}
	for _, w := range want {
		found := false
		for _, item := range strings.Split(have, ",") {
			if strings.TrimSpace(item) == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
