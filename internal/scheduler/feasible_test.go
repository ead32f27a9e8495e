package scheduler

import (
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

func TestConstraintHolds(t *testing.T) {
	n := testNode("node-7")
	n.Name = "worker-7"
	n.Datacenter = "eu-west-1"
	n.NodePool = "gpu"
	n.Attributes = map[string]string{
		"os": "linux", "cpu.numcores": "16", "kernel.version": "5.15.0-91", "arch": "amd64",
		"features": "avx, avx2,sse4", "name": "b", "driver.docker.version": "24.0.7",
	}
	n.Meta = map[string]string{"rack": "r12", "zone": "a"}
	tests := []struct {
		name string
		c    caravan.Constraint
		want bool
	}{
		{"equal attr", caravan.Constraint{Attribute: "${attr.os}", Operator: "=", Value: "linux"}, true},
		{"empty operator is equal", caravan.Constraint{Attribute: "${attr.os}", Value: "linux"}, true},
		{"equal mismatch", caravan.Constraint{Attribute: "${attr.os}", Operator: "=", Value: "windows"}, false},
		{"equal missing attr", caravan.Constraint{Attribute: "${attr.nope}", Operator: "=", Value: ""}, false},
		{"not equal", caravan.Constraint{Attribute: "${attr.os}", Operator: "!=", Value: "windows"}, true},
		{"not equal same", caravan.Constraint{Attribute: "${attr.os}", Operator: "!=", Value: "linux"}, false},
		{"not equal missing attr", caravan.Constraint{Attribute: "${attr.nope}", Operator: "!=", Value: "x"}, true},
		{"meta", caravan.Constraint{Attribute: "${meta.rack}", Operator: "=", Value: "r12"}, true},
		{"node datacenter", caravan.Constraint{Attribute: "${node.datacenter}", Operator: "=", Value: "eu-west-1"}, true},
		{"node pool", caravan.Constraint{Attribute: "${node.pool}", Operator: "=", Value: "gpu"}, true},
		{"node name", caravan.Constraint{Attribute: "${node.name}", Operator: "=", Value: "worker-7"}, true},
		{"node id", caravan.Constraint{Attribute: "${node.id}", Operator: "=", Value: "node-7"}, true},
		{"node unique id", caravan.Constraint{Attribute: "${node.unique.id}", Operator: "=", Value: "node-7"}, true},
		{"node class is never set", caravan.Constraint{Attribute: "${node.class}", Operator: "is_not_set"}, true},
		{"unknown namespace is never set", caravan.Constraint{Attribute: "${env.HOME}", Operator: "is_set"}, false},
		{"interpolated right side", caravan.Constraint{Attribute: "${meta.zone}", Operator: "=", Value: "${meta.zone}"}, true},
		{"interpolated right side differs", caravan.Constraint{Attribute: "${meta.rack}", Operator: "=", Value: "${meta.zone}"}, false},
		{"literal left side", caravan.Constraint{Attribute: "linux", Operator: "=", Value: "${attr.os}"}, true},
		{"numeric less", caravan.Constraint{Attribute: "${attr.cpu.numcores}", Operator: "<", Value: "100"}, true},
		{"numeric not lexical", caravan.Constraint{Attribute: "${attr.cpu.numcores}", Operator: ">", Value: "9"}, true},
		{"numeric less equal", caravan.Constraint{Attribute: "${attr.cpu.numcores}", Operator: "<=", Value: "16"}, true},
		{"numeric greater equal", caravan.Constraint{Attribute: "${attr.cpu.numcores}", Operator: ">=", Value: "16.5"}, false},
		{"lexical greater", caravan.Constraint{Attribute: "${attr.name}", Operator: ">", Value: "a"}, true},
		{"lexical less", caravan.Constraint{Attribute: "${attr.name}", Operator: "<", Value: "a"}, false},
		{"lexical when one side is not a number", caravan.Constraint{Attribute: "${attr.cpu.numcores}", Operator: "<", Value: "abc"}, true},
		{"compare missing attr", caravan.Constraint{Attribute: "${attr.nope}", Operator: "<", Value: "5"}, false},
		{"compare interpolated numbers", caravan.Constraint{Attribute: "${attr.cpu.numcores}", Operator: ">", Value: "${attr.cpu.numcores}"}, false},
		{"regexp", caravan.Constraint{Attribute: "${attr.kernel.version}", Operator: "regexp", Value: `^5\.\d+`}, true},
		{"regexp mismatch", caravan.Constraint{Attribute: "${attr.arch}", Operator: "regexp", Value: "^arm"}, false},
		{"invalid regexp never holds", caravan.Constraint{Attribute: "${attr.arch}", Operator: "regexp", Value: "("}, false},
		{"set contains all", caravan.Constraint{Attribute: "${attr.features}", Operator: "set_contains", Value: "avx2, sse4"}, true},
		{"set contains one missing", caravan.Constraint{Attribute: "${attr.features}", Operator: "set_contains", Value: "avx,avx512"}, false},
		{"set contains interpolated", caravan.Constraint{Attribute: "${attr.features}", Operator: "set_contains", Value: "${meta.zone}"}, false},
		{"version", caravan.Constraint{Attribute: "${attr.driver.docker.version}", Operator: "version", Value: ">= 20.10, < 25"}, true},
		{"version prerelease", caravan.Constraint{Attribute: "${attr.kernel.version}", Operator: "version", Value: ">= 5.15.0"}, false},
		{"version mismatch", caravan.Constraint{Attribute: "${attr.driver.docker.version}", Operator: "version", Value: "~> 23.0"}, false},
		{"version of a non-version", caravan.Constraint{Attribute: "${attr.os}", Operator: "version", Value: ">= 1"}, false},
		{"invalid version constraint never holds", caravan.Constraint{Attribute: "${attr.os}", Operator: "version", Value: ">= x"}, false},
		{"is set", caravan.Constraint{Attribute: "${meta.rack}", Operator: "is_set"}, true},
		{"is set missing", caravan.Constraint{Attribute: "${meta.gpu}", Operator: "is_set"}, false},
		{"is not set", caravan.Constraint{Attribute: "${meta.gpu}", Operator: "is_not_set"}, true},
		{"is not set present", caravan.Constraint{Attribute: "${meta.rack}", Operator: "is_not_set"}, false},
		{"unknown operator never holds", caravan.Constraint{Attribute: "${attr.os}", Operator: "~=", Value: "linux"}, false},
		{"empty everything", caravan.Constraint{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cp compiler
			if got := cp.compile(tt.c).holds(n); got != tt.want {
				t.Errorf("%s on node: got %v, want %v", tt.c, got, tt.want)
			}
		})
	}
}

func TestCompilerCachesPerEvaluation(t *testing.T) {
	var cp compiler
	c := caravan.Constraint{Attribute: "${attr.os}", Operator: "regexp", Value: "^lin"}
	a, b := cp.compile(c), cp.compile(c)
	if a.re == nil || a.re != b.re {
		t.Errorf("regexp compiled twice: %p %p", a.re, b.re)
	}
	v := caravan.Constraint{Attribute: "${attr.v}", Operator: "version", Value: ">= 1.2"}
	if x, y := cp.compile(v), cp.compile(v); len(x.vc) == 0 || &x.vc[0] != &y.vc[0] {
		t.Errorf("version constraint parsed twice")
	}
	if len(cp.regexps) != 1 || len(cp.versions) != 1 {
		t.Errorf("cache sizes: %d regexps, %d versions", len(cp.regexps), len(cp.versions))
	}
}

func TestFeasibility(t *testing.T) {
	base := func(mut func(n *caravan.Node)) *caravan.Node {
		n := testNode("n1")
		if mut != nil {
			mut(n)
		}
		return n
	}
	job := func(mut func(j *caravan.Job)) *caravan.Job {
		j := testJob("api", caravan.JobTypeService, 1)
		if mut != nil {
			mut(j)
		}
		return j
	}
	tests := []struct {
		name   string
		node   *caravan.Node
		job    *caravan.Job
		ok     bool
		reason string
	}{
		{"plain", base(nil), job(nil), true, ""},
		{"other pool", base(func(n *caravan.Node) { n.NodePool = "gpu" }), job(nil), false, reasonPool},
		{"job pool", base(func(n *caravan.Node) { n.NodePool = "gpu" }), job(func(j *caravan.Job) { j.NodePool = "gpu" }), true, ""},
		{"node without pool is default", base(func(n *caravan.Node) { n.NodePool = "" }), job(nil), true, ""},
		{"job without pool is default", base(nil), job(func(j *caravan.Job) { j.NodePool = "" }), true, ""},
		{"datacenter listed", base(nil), job(func(j *caravan.Job) { j.Datacenters = []string{"dc2", "dc1"} }), true, ""},
		{"datacenter not listed", base(nil), job(func(j *caravan.Job) { j.Datacenters = []string{"dc2"} }), false, reasonDatacenter},
		{"datacenter star", base(nil), job(func(j *caravan.Job) { j.Datacenters = []string{"*"} }), true, ""},
		{"datacenter glob", base(func(n *caravan.Node) { n.Datacenter = "eu-1" }), job(func(j *caravan.Job) { j.Datacenters = []string{"us-*", "eu-*"} }), true, ""},
		{"datacenter glob mismatch", base(func(n *caravan.Node) { n.Datacenter = "ap-1" }), job(func(j *caravan.Job) { j.Datacenters = []string{"eu-*"} }), false, reasonDatacenter},
		{"bad glob", base(nil), job(func(j *caravan.Job) { j.Datacenters = []string{"dc[1"} }), false, reasonDatacenter},
		{"driver missing", base(func(n *caravan.Node) { delete(n.Drivers, "exec") }), job(nil), false, "missing driver exec"},
		{"driver not detected", base(func(n *caravan.Node) { n.Drivers["exec"] = caravan.DriverInfo{} }), job(nil), false, "missing driver exec"},
		{"driver unhealthy", base(func(n *caravan.Node) { n.Drivers["exec"] = caravan.DriverInfo{Detected: true} }), job(nil), false, "unhealthy driver exec"},
		{"node without drivers", base(func(n *caravan.Node) { n.Drivers = nil }), job(nil), false, "missing driver exec"},
		{"task without driver", base(nil), job(func(j *caravan.Job) { j.TaskGroups[0].Tasks[0].Driver = "" }), false, reasonNoDriver},
		{"job constraint", base(nil), job(func(j *caravan.Job) {
			j.Constraints = []caravan.Constraint{{Attribute: "${attr.os}", Value: "windows"}}
		}), false, "${attr.os} = windows"},
		{"group constraint", base(nil), job(func(j *caravan.Job) {
			j.TaskGroups[0].Constraints = []caravan.Constraint{{Attribute: "${meta.rack}", Operator: "is_set"}}
		}), false, "${meta.rack} is_set"},
		{"task constraint", base(nil), job(func(j *caravan.Job) {
			j.TaskGroups[0].Tasks[0].Constraints = []caravan.Constraint{{Attribute: "${attr.os}", Operator: "!=", Value: "linux"}}
		}), false, "${attr.os} != linux"},
		{"nil task ignored", base(nil), job(func(j *caravan.Job) { j.TaskGroups[0].Tasks = append(j.TaskGroups[0].Tasks, nil) }), true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cp compiler
			f := newFeasibility(&cp, tt.job, tt.job.TaskGroups[0])
			ok, reason := f.check(tt.node)
			if diff := cmp.Diff([]any{tt.ok, tt.reason}, []any{ok, reason}); diff != "" {
				t.Errorf("check (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFeasibilityDeduplicatesConstraints(t *testing.T) {
	j := testJob("api", caravan.JobTypeService, 1)
	c := caravan.Constraint{Attribute: "${attr.os}", Value: "linux"}
	j.Constraints = []caravan.Constraint{c}
	j.TaskGroups[0].Constraints = []caravan.Constraint{c}
	j.TaskGroups[0].Tasks[0].Constraints = []caravan.Constraint{c}
	var cp compiler
	if f := newFeasibility(&cp, j, j.TaskGroups[0]); len(f.constraints) != 1 {
		t.Errorf("got %d compiled constraints, want 1", len(f.constraints))
	}
}

// FuzzConstraint checks that any constraint compiles and evaluates on any
// node attribute without panicking, and the same way twice.
func FuzzConstraint(f *testing.F) {
	f.Add("${attr.os}", "=", "linux", "linux")
	f.Add("${attr.x}", "version", ">= 1.2, < 2", "1.5.0-rc1")
	f.Add("${attr.x}", "regexp", "^a(b", "ab")
	f.Add("${attr.x}", "set_contains", "a,,b", "b, a")
	f.Add("${", "<", "${attr.x}", "10")
	f.Fuzz(func(t *testing.T, attribute, operator, value, nodeValue string) {
		n := testNode("n1")
		n.Attributes["x"] = nodeValue
		n.Meta = map[string]string{"x": nodeValue}
		var cp compiler
		c := caravan.Constraint{Attribute: attribute, Operator: operator, Value: value}
		if cp.compile(c).holds(n) != cp.compile(c).holds(n) {
			t.Errorf("%s: two answers", c)
		}
	})
}
