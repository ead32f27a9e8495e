package scheduler

import (
	"path"
	"slices"
	"strings"

	"github.com/caravan-sched/caravan"
)

// Reasons a node is filtered, as AllocMetric.ConstraintFiltered counts them.
// Constraints are reported as they read ("${attr.os} = linux"), drivers as
// "missing driver docker" or "unhealthy driver docker".
const (
	reasonNotReady   = "node not ready"
	reasonPool       = "node pool"
	reasonDatacenter = "datacenter"
	reasonNoDriver   = "task has no driver"
)

// feasibility decides which nodes a task group may run on, apart from
// capacity: pool, datacenter, drivers, constraints. It is compiled once per
// group and evaluation.
type feasibility struct {
	pool        string
	anyDC       bool
	dcs         []string
	drivers     []driverCheck
	constraints []*constraintCheck
}

type driverCheck struct {
	name, missing, unhealthy string
}

// newFeasibility compiles the job's and the group's placement rules.
func newFeasibility(cp *compiler, job *caravan.Job, tg *caravan.TaskGroup) *feasibility {
	f := &feasibility{pool: job.NodePool}
	if f.pool == "" {
		f.pool = caravan.DefaultNodePool
	}
	f.anyDC = len(job.Datacenters) == 0
	for _, dc := range job.Datacenters {
		if dc == "*" {
			f.anyDC = true
		}
		f.dcs = append(f.dcs, dc)
	}
	add := func(cs []caravan.Constraint) {
		for _, c := range cs {
			if !slices.ContainsFunc(f.constraints, func(k *constraintCheck) bool { return k.src == c }) {
				f.constraints = append(f.constraints, cp.compile(c))
			}
		}
	}
	add(job.Constraints)
	add(tg.Constraints)
	for _, t := range tg.Tasks {
		if t == nil {
			continue
		}
		add(t.Constraints)
		f.addDriver(t.Driver)
	}
	return f
}

func (f *feasibility) addDriver(name string) {
	for _, d := range f.drivers {
		if d.name == name {
			return
		}
	}
	f.drivers = append(f.drivers, driverCheck{
		name:      name,
		missing:   "missing driver " + name,
		unhealthy: "unhealthy driver " + name,
	})
}

// check reports whether node n passes the group's rules (readiness aside),
// and the first reason it fails.
func (f *feasibility) check(n *caravan.Node) (bool, string) {
	if nodePool(n) != f.pool {
		return false, reasonPool
	}
	if !f.datacenter(n.Datacenter) {
		return false, reasonDatacenter
	}
	for i := range f.drivers {
		d := &f.drivers[i]
		if d.name == "" {
			return false, reasonNoDriver
		}
		info, ok := n.Drivers[d.name]
		if !ok || !info.Detected {
			return false, d.missing
		}
		if !info.Healthy {
			return false, d.unhealthy
		}
	}
	for _, k := range f.constraints {
		if !k.holds(n) {
			return false, k.reason
		}
	}
	return true, ""
}

// inPool reports whether n is in the job's pool and datacenters.
func (f *feasibility) inPool(n *caravan.Node) bool {
	return nodePool(n) == f.pool && f.datacenter(n.Datacenter)
}

// datacenter matches dc against the job's list: names, or globs such as
// "dc*".
func (f *feasibility) datacenter(dc string) bool {
	if f.anyDC {
		return true
	}
	for _, want := range f.dcs {
		if want == dc {
			return true
		}
		if strings.ContainsAny(want, "*?[") {
			if ok, err := path.Match(want, dc); err == nil && ok {
				return true
			}
		}
	}
	return false
}

func nodePool(n *caravan.Node) string {
	if n.NodePool == "" {
		return caravan.DefaultNodePool
	}
	return n.NodePool
}
