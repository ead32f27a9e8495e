package scheduler

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

// TestProperties runs the scheduler on bounded random clusters and jobs:
// a first evaluation places the job, then the cluster and the allocations
// change at random (failures, lost nodes, drains, a new job version) and a
// second evaluation reconciles. Every plan must keep the invariants.
func TestProperties(t *testing.T) {
	const rounds = 300
	for seed := range uint64(rounds) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			s := randomCluster(rng)
			j := randomJob(rng)
			s.addJob(j)
			now := testNow
			step := func(name string) {
				t.Helper()
				eval := testEval(j, caravan.TriggerJobRegister)
				opts := Options{Now: now, Seed: int64(seed), NewID: prefixedIDs(name), CandidateLimit: rng.IntN(4)}
				res, err := Compute(s, eval, opts)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				opts.NewID = prefixedIDs(name)
				again, err := Compute(s, eval, opts)
				if err != nil {
					t.Fatalf("%s again: %v", name, err)
				}
				if diff := cmp.Diff(res.Plan, again.Plan); diff != "" {
					t.Fatalf("%s: identical inputs gave different plans:\n%s", name, diff)
				}
				checkFeasible(t, name, s, j, res.Plan)
				s.apply(res.Plan)
				checkLive(t, name, s, j)
				checkCapacity(t, name, s)
			}
			step("place")
			perturb(rng, s, j)
			if rng.IntN(2) == 0 {
				j = newVersion(j, func(n *caravan.Job) { mutateJob(rng, n) })
				s.addJob(j)
			}
			now = now.Add(time.Duration(rng.IntN(120)) * time.Second)
			step("reconcile")
			step("settle")
		})
	}
}

var (
	racks       = []string{"r1", "r2", "r3", "r4", ""}
	testDrivers = []string{caravan.DriverExec, caravan.DriverDocker}
)

func randomCluster(rng *rand.Rand) *fakeState {
	s := newFakeState()
	for i := range 1 + rng.IntN(30) {
		n := testNode(fmt.Sprintf("n%02d", i))
		n.Resources.CPU = 1000 * rng.IntN(9)
		n.Resources.Memory = caravan.MemoryMB(1024 * rng.IntN(9))
		n.Resources.Cores = nil
		for c := range rng.IntN(9) {
			n.Resources.Cores = append(n.Resources.Cores, c)
		}
		if rng.IntN(4) == 0 && len(n.Resources.Cores) > 0 {
			n.Reserved.Cores = []int{0}
		}
		if rng.IntN(4) == 0 {
			n.Reserved.Ports = []int{8080, 20001}
		}
		n.Resources.MinDynamicPort, n.Resources.MaxDynamicPort = 20000, 20000+rng.IntN(6)
		n.Datacenter = []string{"dc1", "dc2"}[rng.IntN(2)]
		n.NodePool = []string{"default", "default", "gpu"}[rng.IntN(3)]
		n.Status = []string{caravan.NodeStatusReady, caravan.NodeStatusReady, caravan.NodeStatusReady, caravan.NodeStatusDown, caravan.NodeStatusInitializing}[rng.IntN(5)]
		if rng.IntN(6) == 0 {
			n.SchedulingEligibility = caravan.NodeIneligible
		}
		if rng.IntN(3) == 0 {
			delete(n.Drivers, testDrivers[rng.IntN(2)])
		}
		n.Attributes["os"] = []string{"linux", "linux", "windows"}[rng.IntN(3)]
		if r := racks[rng.IntN(len(racks))]; r != "" {
			n.Meta = map[string]string{"rack": r}
		}
		s.addNodes(n)
	}
	return s
}

// propertyConstraints are the constraints random jobs use; holdsDirect
// checks them without the scheduler's code.
var propertyConstraints = []caravan.Constraint{
	{Attribute: "${attr.os}", Operator: "=", Value: "linux"},
	{Attribute: "${meta.rack}", Operator: "!=", Value: "r1"},
	{Attribute: "${meta.rack}", Operator: "is_set"},
	{Attribute: "${meta.rack}", Operator: "regexp", Value: "^r[23]$"},
}

func holdsDirect(c caravan.Constraint, n *caravan.Node) bool {
	rack, hasRack := n.Meta["rack"]
	switch c.Value {
	case "linux":
		return n.Attributes["os"] == "linux"
	case "r1":
		return rack != "r1"
	case "^r[23]$":
		return rack == "r2" || rack == "r3"
	}
	return hasRack // is_set
}

func randomJob(rng *rand.Rand) *caravan.Job {
	typ := []string{caravan.JobTypeService, caravan.JobTypeBatch, caravan.JobTypeSystem}[rng.IntN(3)]
	j := testJob("job", typ, rng.IntN(13))
	j.Algorithm = []string{"", caravan.AlgorithmBinpack, caravan.AlgorithmSpread, caravan.AlgorithmFirstFit, caravan.AlgorithmMostFreeMemory}[rng.IntN(5)]
	j.Update = &caravan.UpdateStrategy{MaxParallel: rng.IntN(3)}
	if rng.IntN(3) == 0 {
		j.Datacenters = []string{"dc1"}
	}
	if rng.IntN(3) == 0 {
		j.Spreads = []caravan.Spread{{Attribute: "${meta.rack}", Weight: 50}}
	}
	for range rng.IntN(3) {
		j.Constraints = append(j.Constraints, propertyConstraints[rng.IntN(len(propertyConstraints))])
	}
	for g := range rng.IntN(2) {
		tg := *j.TaskGroups[0]
		tg.Name = fmt.Sprintf("g%d", g)
		tg.Count = ptr(rng.IntN(8))
		tg.Tasks = []*caravan.Task{{Name: "t"}}
		j.TaskGroups = append(j.TaskGroups, &tg)
	}
	for _, tg := range j.TaskGroups {
		tg.Reschedule = &caravan.ReschedulePolicy{Attempts: rng.IntN(3), Interval: caravan.Duration(time.Hour),
			Delay: caravan.Duration(time.Duration(rng.IntN(60)) * time.Second), DelayFunction: caravan.DelayExponential, Unlimited: rng.IntN(3) == 0}
		for _, task := range tg.Tasks {
			task.Driver = testDrivers[rng.IntN(2)]
			task.Resources = caravan.Resources{CPU: 100 * (1 + rng.IntN(15)), Memory: caravan.MemoryMB(128 * (1 + rng.IntN(16))), Cores: rng.IntN(3) / 2 * rng.IntN(3)}
			if rng.IntN(3) == 0 {
				task.Resources.Ports = append(task.Resources.Ports, caravan.Port{Label: "http"})
			}
			if rng.IntN(5) == 0 {
				task.Resources.Ports = append(task.Resources.Ports, caravan.Port{Label: "admin", Value: 9090})
			}
		}
	}
	return j
}

// mutateJob makes a new version: a count change (in place) or a resource
// change (destructive).
func mutateJob(rng *rand.Rand, j *caravan.Job) {
	tg := j.TaskGroups[rng.IntN(len(j.TaskGroups))]
	if rng.IntN(2) == 0 {
		tg.Count = ptr(rng.IntN(10))
		return
	}
	tg.Tasks[0].Resources.Memory += 64
}

// perturb changes the cluster and allocations as time passes: allocations
// fail, complete, get lost; nodes go down, drain or disappear.
func perturb(rng *rand.Rand, s *fakeState, j *caravan.Job) {
	for _, a := range slices.Clone(s.allocs[j.ID]) {
		if a.Terminal() || rng.IntN(3) != 0 {
			continue
		}
		c := a.ShallowCopy()
		switch rng.IntN(4) {
		case 0:
			c.ClientStatus = caravan.AllocClientFailed
			c.ModifyTime = testNow.Add(-time.Duration(rng.IntN(120)) * time.Second)
		case 1:
			c.ClientStatus = caravan.AllocClientComplete
		case 2:
			c.ClientStatus, c.DesiredStatus = caravan.AllocClientLost, caravan.AllocDesiredStop
		default:
			c.ClientStatus = caravan.AllocClientRunning
		}
		s.replaceAlloc(c)
	}
	for _, n := range slices.Clone(s.nodes) {
		switch rng.IntN(10) {
		case 0:
			n.Status = caravan.NodeStatusDown
		case 1:
			n.Drain = &caravan.DrainStrategy{Deadline: caravan.Duration(time.Duration(rng.IntN(3)-1) * time.Hour)}
		case 2:
			s.nodes = slices.DeleteFunc(s.nodes, func(m *caravan.Node) bool { return m == n })
			delete(s.nodeByID, n.ID)
		case 3:
			n.Status = caravan.NodeStatusReady
		}
	}
}

// checkFeasible: every new allocation is on a node that is ready and
// passes the job's pool, datacenters, constraints and drivers.
func checkFeasible(t *testing.T, step string, s *fakeState, j *caravan.Job, p *caravan.Plan) {
	t.Helper()
	for _, a := range newAllocs(s, p) {
		n := s.nodeByID[a.NodeID]
		if n == nil || !n.Ready() || nodePool(n) != j.NodePool {
			t.Fatalf("%s: %s placed on node %s that is gone, not ready or in another pool", step, a.Name, a.NodeID)
		}
		if len(j.Datacenters) > 0 && !slices.Contains(j.Datacenters, n.Datacenter) {
			t.Fatalf("%s: %s placed in datacenter %s", step, a.Name, n.Datacenter)
		}
		for _, c := range j.Constraints {
			if !holdsDirect(c, n) {
				t.Fatalf("%s: %s placed on %s against %s", step, a.Name, n.ID, c)
			}
		}
		for _, task := range j.LookupTaskGroup(a.TaskGroup).Tasks {
			if d := n.Drivers[task.Driver]; !d.Detected || !d.Healthy {
				t.Fatalf("%s: %s placed on %s without driver %s", step, a.Name, n.ID, task.Driver)
			}
		}
	}
}

// checkLive: at most one live allocation per group and index (per group
// and node for system jobs), at most count per group.
func checkLive(t *testing.T, step string, s *fakeState, j *caravan.Job) {
	t.Helper()
	slots := map[string]int{}
	perGroup := map[string]int{}
	for _, a := range s.allocs[j.ID] {
		if a.Terminal() {
			continue
		}
		key := fmt.Sprintf("%s[%d]", a.TaskGroup, a.Index)
		if j.Type == caravan.JobTypeSystem {
			key = a.TaskGroup + "@" + a.NodeID
		}
		if slots[key]++; slots[key] > 1 {
			t.Fatalf("%s: %s has %d live allocations", step, key, slots[key])
		}
		perGroup[a.TaskGroup]++
	}
	if j.Type == caravan.JobTypeSystem {
		return
	}
	for g, n := range perGroup {
		if tg := j.LookupTaskGroup(g); tg != nil && n > tg.GroupCount() {
			t.Fatalf("%s: group %s has %d live allocations, count %d", step, g, n, tg.GroupCount())
		}
	}
}

// checkCapacity: no node holds more than it has, in any dimension,
// counted from the live allocations themselves.
func checkCapacity(t *testing.T, step string, s *fakeState) {
	t.Helper()
	type held struct {
		cpu   int
		mem   caravan.MemoryMB
		cores []int
		ports []int
	}
	byNode := map[string]*held{}
	for _, id := range sortedKeys(s.allocs) {
		for _, a := range s.allocs[id] {
			if a.Terminal() {
				continue
			}
			h := byNode[a.NodeID]
			if h == nil {
				h = &held{}
				byNode[a.NodeID] = h
			}
			h.cpu += a.Resources.CPU
			h.mem += a.Resources.Memory
			h.cores = append(h.cores, a.Resources.Cores...)
			for _, p := range a.Resources.Ports {
				h.ports = append(h.ports, p.Value)
			}
		}
	}
	for id, h := range byNode {
		n := s.nodeByID[id]
		if n == nil {
			continue // gone: its allocations are lost
		}
		cpu, mem := n.Capacity()
		if h.cpu > cpu || h.mem > mem {
			t.Fatalf("%s: node %s holds cpu %d/%d memory %d/%d", step, id, h.cpu, cpu, h.mem, mem)
		}
		if dup := firstDuplicate(h.cores); dup >= 0 {
			t.Fatalf("%s: node %s has core %d twice", step, id, dup)
		}
		if dup := firstDuplicate(h.ports); dup >= 0 {
			t.Fatalf("%s: node %s has port %d twice", step, id, dup)
		}
		for _, c := range h.cores {
			if !slices.Contains(n.Resources.Cores, c) || slices.Contains(n.Reserved.Cores, c) {
				t.Fatalf("%s: node %s gave out core %d", step, id, c)
			}
		}
		for _, p := range h.ports {
			if p < 1 || p > 65535 || slices.Contains(n.Reserved.Ports, p) {
				t.Fatalf("%s: node %s gave out port %d", step, id, p)
			}
		}
	}
}

func firstDuplicate(xs []int) int {
	s := slices.Clone(xs)
	slices.Sort(s)
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return s[i]
		}
	}
	return -1
}
