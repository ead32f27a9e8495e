package scheduler

import (
	"fmt"
	"iter"
	"slices"
	"strings"

	"github.com/caravan-sched/caravan"
)

// fakeState is an in-memory State: maps of jobs, allocations and nodes,
// with node usage computed from the allocations that are not terminal.
type fakeState struct {
	jobs     map[string]*caravan.Job
	allocs   map[string][]*caravan.Allocation // by job
	byID     map[string]*caravan.Allocation
	nodes    []*caravan.Node // sorted by id
	nodeByID map[string]*caravan.Node
	usage    map[string]caravan.NodeUsage
	// inUse are the keys of usage, sorted; nil when they must be sorted
	// again.
	inUse []string
	index uint64
	// failNodes makes Nodes fail, to test state errors.
	failNodes bool
}

var _ State = (*fakeState)(nil)

func newFakeState() *fakeState {
	return &fakeState{
		jobs:     map[string]*caravan.Job{},
		allocs:   map[string][]*caravan.Allocation{},
		byID:     map[string]*caravan.Allocation{},
		nodeByID: map[string]*caravan.Node{},
		usage:    map[string]caravan.NodeUsage{},
		index:    100,
	}
}

func (s *fakeState) Job(id string) (*caravan.Job, error) {
	if j, ok := s.jobs[id]; ok {
		return j, nil
	}
	return nil, fmt.Errorf("job %s: %w", id, caravan.ErrNotFound)
}

func (s *fakeState) AllocsByJob(jobID string) ([]*caravan.Allocation, error) {
	return s.allocs[jobID], nil
}

func (s *fakeState) Node(id string) (*caravan.Node, error) {
	if n, ok := s.nodeByID[id]; ok {
		return n, nil
	}
	return nil, fmt.Errorf("node %s: %w", id, caravan.ErrNotFound)
}

func (s *fakeState) Nodes() ([]*caravan.Node, error) {
	if s.failNodes {
		return nil, fmt.Errorf("node table: %w", caravan.ErrUnavailable)
	}
	return s.nodes, nil
}

func (s *fakeState) NodeUsage(nodeID string) (caravan.NodeUsage, error) {
	return s.usage[nodeID], nil
}

func (s *fakeState) NodesInUse(from string) iter.Seq2[string, caravan.NodeUsage] {
	return func(yield func(string, caravan.NodeUsage) bool) {
		if s.inUse == nil {
			s.inUse = sortedKeys(s.usage)
		}
		ids := s.inUse
		i, _ := slices.BinarySearch(ids, from)
		for k := range ids {
			id := ids[(i+k)%len(ids)]
			if !yield(id, s.usage[id]) {
				return
			}
		}
	}
}

func (s *fakeState) Index() uint64 { return s.index }

// addNodes adds nodes and keeps the list sorted by id.
func (s *fakeState) addNodes(nodes ...*caravan.Node) {
	for _, n := range nodes {
		s.nodeByID[n.ID] = n
		s.nodes = append(s.nodes, n)
	}
	slices.SortFunc(s.nodes, func(a, b *caravan.Node) int { return strings.Compare(a.ID, b.ID) })
}

func (s *fakeState) addJob(j *caravan.Job) { s.jobs[j.ID] = j }

// addAlloc stores an allocation and counts it in its node's usage when it
// is not terminal.
func (s *fakeState) addAlloc(a *caravan.Allocation) {
	s.allocs[a.JobID] = append(s.allocs[a.JobID], a)
	s.byID[a.ID] = a
	if !a.Terminal() {
		s.setUsage(a.NodeID, s.usage[a.NodeID].Add(&a.Resources))
	}
}

func (s *fakeState) setUsage(nodeID string, u caravan.NodeUsage) {
	if _, ok := s.usage[nodeID]; !ok {
		s.inUse = nil
	}
	s.usage[nodeID] = u
}

// replaceAlloc swaps a stored allocation for its new value, keeping usage
// right.
func (s *fakeState) replaceAlloc(a *caravan.Allocation) {
	old := s.byID[a.ID]
	list := s.allocs[a.JobID]
	i := slices.Index(list, old)
	list[i] = a
	s.byID[a.ID] = a
	if !old.Terminal() {
		s.setUsage(old.NodeID, s.usage[old.NodeID].Remove(&old.Resources))
	}
	if !a.Terminal() {
		s.setUsage(a.NodeID, s.usage[a.NodeID].Add(&a.Resources))
	}
}

// apply folds a plan into the state as the plan applier would: stops and
// updates merge into the stored allocations (client fields kept), new
// allocations are added.
func (s *fakeState) apply(p *caravan.Plan) {
	s.index++
	for _, id := range sortedKeys(p.NodeUpdate) {
		for _, a := range p.NodeUpdate[id] {
			s.mergeServerFields(a)
		}
	}
	for _, id := range sortedKeys(p.NodeAllocation) {
		for _, a := range p.NodeAllocation[id] {
			if _, ok := s.byID[a.ID]; ok {
				s.mergeServerFields(a)
				continue
			}
			s.addAlloc(a)
		}
	}
}

func (s *fakeState) mergeServerFields(a *caravan.Allocation) {
	old, ok := s.byID[a.ID]
	if !ok {
		return
	}
	c := old.ShallowCopy()
	c.DesiredStatus, c.DesiredDescription = a.DesiredStatus, a.DesiredDescription
	c.JobVersion, c.Job = a.JobVersion, a.Job
	c.NextAllocation, c.FollowupEvalID = a.NextAllocation, a.FollowupEvalID
	s.replaceAlloc(c)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// seqIDs returns an id maker that counts: id-001, id-002, ...
func seqIDs() func() string { return prefixedIDs("id") }

// prefixedIDs returns an id maker that counts: prefix-001, prefix-002, ...
func prefixedIDs(prefix string) func() string {
	n := 0
	return func() string {
		n++
		return fmt.Sprintf("%s-%03d", prefix, n)
	}
}

// testNode is a ready node in the default pool and dc1 with 4 cores of
// 1000 MHz, 8 GB, healthy exec and docker drivers, os linux.
func testNode(id string) *caravan.Node {
	n := &caravan.Node{
		ID:         id,
		Name:       id,
		Datacenter: "dc1",
		NodePool:   caravan.DefaultNodePool,
		Attributes: map[string]string{"os": "linux"},
		Resources: caravan.NodeResources{
			CPU: 4000, Memory: 8192, Cores: []int{0, 1, 2, 3},
			MinDynamicPort: 20000, MaxDynamicPort: 32000,
		},
		Drivers: map[string]caravan.DriverInfo{
			caravan.DriverExec:   {Detected: true, Healthy: true},
			caravan.DriverDocker: {Detected: true, Healthy: true},
		},
		Status:                caravan.NodeStatusReady,
		SchedulingEligibility: caravan.NodeEligible,
	}
	return n
}

// testJob is a canonical job with one group "web" of count tasks "main"
// (exec, 500 MHz, 256 MB).
func testJob(id, typ string, count int) *caravan.Job {
	j := &caravan.Job{
		ID:   id,
		Type: typ,
		TaskGroups: []*caravan.TaskGroup{{
			Name:  "web",
			Count: &count,
			Tasks: []*caravan.Task{{
				Name:      "main",
				Driver:    caravan.DriverExec,
				Config:    caravan.TaskConfig{Command: "/bin/true"},
				Resources: caravan.Resources{CPU: 500, Memory: 256},
			}},
		}},
	}
	j.Canonicalize()
	return j
}

// testEval is a pending evaluation of the job.
func testEval(j *caravan.Job, trigger string) *caravan.Evaluation {
	return &caravan.Evaluation{
		ID: "eval-1", Priority: j.Priority, Type: j.Type, TriggeredBy: trigger,
		JobID: j.ID, Status: caravan.EvalStatusPending,
	}
}

// testAlloc is a running allocation of the job's group "web" on node.
func testAlloc(id string, j *caravan.Job, node string, index int) *caravan.Allocation {
	return &caravan.Allocation{
		ID: id, EvalID: "eval-0", Name: caravan.AllocName(j.ID, "web", index),
		JobID: j.ID, JobVersion: j.Version, TaskGroup: "web", Index: index,
		NodeID: node, NodeName: node, Job: j,
		Resources:     caravan.AllocatedResources{CPU: 500, Memory: 256},
		DesiredStatus: caravan.AllocDesiredRun, ClientStatus: caravan.AllocClientRunning,
	}
}
