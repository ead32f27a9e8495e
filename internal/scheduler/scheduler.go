// Package scheduler turns an evaluation into a plan. It is a pure function of
// a state snapshot and an evaluation: no goroutines, clock, network or disk.
// The current time and a random seed come in through Options, so the same
// inputs always give the same plan.
//
// Compute works in three steps:
//
//	reconcile ──▶ stops, in-place updates, delayed reschedules, and a list of
//	   │          placements to make (per task group, by index)
//	   ▼
//	place ──────▶ for each placement: feasible nodes (pool, datacenter,
//	   │          constraints, drivers), then capacity, then a ranking over a
//	   │          few candidates walked from a seeded random offset (binpack
//	   │          looks at the nodes in use first, so that evaluations run at
//	   │          the same time fill the same nodes)
//	   ▼
//	outcome ────▶ the evaluation's own update, a blocked evaluation for what
//	              did not fit, delayed evaluations for reschedules that wait
package scheduler

import (
	"errors"
	"fmt"
	"hash/fnv"
	"iter"
	"math/bits"
	"math/rand/v2"
	"time"

	"github.com/caravan-sched/caravan"
)

// State is the read-only view of the cluster the scheduler works from. The
// state store's snapshot implements it; tests use an in-memory fake.
//
// Values returned are shared and must not be modified.
type State interface {
	// Job returns the newest version of the job, or caravan.ErrNotFound.
	Job(id string) (*caravan.Job, error)
	// AllocsByJob returns every allocation of the job that is still in
	// state, of every version, terminal ones included.
	AllocsByJob(jobID string) ([]*caravan.Allocation, error)
	// Node returns one node, or caravan.ErrNotFound.
	Node(id string) (*caravan.Node, error)
	// Nodes returns every node, sorted by id. The slice is shared and
	// cached by the store until the node table changes, so calling it for
	// every evaluation costs nothing.
	Nodes() ([]*caravan.Node, error)
	// NodeUsage returns what the allocations on the node that are not
	// terminal hold.
	NodeUsage(nodeID string) (caravan.NodeUsage, error)
	// NodesInUse iterates the nodes that hold allocations (terminal ones
	// may count), with their NodeUsage, in id order from the first id at
	// or after from, wrapping around to the first node, each once.
	NodesInUse(from string) iter.Seq2[string, caravan.NodeUsage]
	// Index is the Raft index the state reflects.
	Index() uint64
}

// Options are the inputs that are not in the state.
type Options struct {
	// Now is the time decisions are made at (reschedule delays, drain
	// deadlines).
	Now time.Time
	// Seed makes the randomised candidate order repeatable.
	Seed int64
	// DefaultAlgorithm is used for jobs that name none.
	DefaultAlgorithm string
	// CandidateLimit bounds how many feasible nodes are ranked for one
	// placement (0: the scheduler's default, which grows with log2 of the
	// cluster size).
	CandidateLimit int
	// NewID makes the ids of new allocations and evaluations; nil means
	// caravan.NewID. Tests pass a counter so plans are repeatable.
	NewID func() string
}

// Result is the outcome of one evaluation.
type Result struct {
	// Plan holds the allocation changes and, in Plan.Evals, the
	// evaluation's own update (status complete, failed placement metrics,
	// queued counts) and any new evaluations: a blocked one for what did
	// not fit, delayed ones for reschedules that must wait.
	Plan *caravan.Plan
	// Placed counts the new allocations in the plan; Failed counts the
	// placements that found no node.
	Placed, Failed int
}

// Compute reconciles the evaluation's job with the cluster and returns the
// plan that gets there. It fails only when the state cannot be read (or is
// nil); a job that cannot be scheduled gives a plan whose evaluation update
// says why.
func Compute(state State, eval *caravan.Evaluation, opts Options) (*Result, error) {
	if state == nil || eval == nil {
		return nil, fmt.Errorf("scheduler: nil state or evaluation: %w", caravan.ErrInvalid)
	}
	c := newEvalCtx(state, eval, opts)
	if err := c.run(); err != nil {
		return nil, fmt.Errorf("scheduler: evaluation %s of job %s: %w", eval.ID, eval.JobID, err)
	}
	return c.result(), nil
}

// evalCtx is everything one evaluation works with. It lives for one call of
// Compute.
type evalCtx struct {
	state State
	eval  *caravan.Evaluation
	job   *caravan.Job // nil when the job is gone
	opts  Options
	rng   *rand.Rand
	newID func() string

	nodes []*caravan.Node
	limit int
	algo  string
	plan  *caravan.Plan
	// loads holds the usage of the nodes this plan changed.
	loads nodeMap[caravan.NodeUsage]
	// posUsage, when not nil (evaluations with many placements), holds at
	// i the usage of c.nodes[i] once posKnown[i]: each node's usage is
	// read from the state once per evaluation instead of once per look.
	posUsage []caravan.NodeUsage
	posKnown []bool
	compiler compiler
	// inPlaceCache remembers which old versions update in place.
	inPlaceCache map[inPlaceKey]bool
	// groups are the task groups' outcomes, in job order.
	groups []*groupOutcome
	// delayed are the reschedule evaluations created, in order.
	delayed []*caravan.Evaluation
	// failedDesc marks the evaluation failed when not empty.
	failedDesc string
}

func newEvalCtx(state State, eval *caravan.Evaluation, opts Options) *evalCtx {
	h := fnv.New64a()
	h.Write([]byte(eval.ID))
	newID := opts.NewID
	if newID == nil {
		newID = caravan.NewID
	}
	return &evalCtx{
		state: state,
		eval:  eval,
		opts:  opts,
		rng:   rand.New(rand.NewPCG(uint64(opts.Seed), h.Sum64())),
		newID: newID,
		plan: &caravan.Plan{
			EvalID:        eval.ID,
			Priority:      eval.Priority,
			JobID:         eval.JobID,
			SnapshotIndex: state.Index(),
		},
	}
}

func (c *evalCtx) run() error {
	job, err := c.state.Job(c.eval.JobID)
	switch {
	case errors.Is(err, caravan.ErrNotFound):
		job = nil
	case err != nil:
		return fmt.Errorf("read job: %w", err)
	}
	allocs, err := c.state.AllocsByJob(c.eval.JobID)
	if err != nil {
		return fmt.Errorf("read allocations: %w", err)
	}
	if job == nil || job.Stop {
		c.stopAll(allocs)
		return nil
	}
	c.job = job
	c.plan.Priority = job.Priority
	c.plan.JobVersion = job.Version
	c.plan.AllAtOnce = job.AllAtOnce
	if !c.pickAlgorithm() {
		return nil
	}
	if c.nodes, err = c.state.Nodes(); err != nil {
		return fmt.Errorf("read nodes: %w", err)
	}
	c.limit = candidateLimit(c.opts.CandidateLimit, len(c.nodes))
	switch job.Type {
	case caravan.JobTypeService, caravan.JobTypeBatch, "":
		return c.reconcileGeneric(allocs)
	case caravan.JobTypeSystem:
		return c.reconcileSystem(allocs)
	}
	c.failedDesc = fmt.Sprintf("unknown job type %q", job.Type)
	return nil
}

// pickAlgorithm settles the ranking algorithm, or fails the evaluation when
// it is unknown.
func (c *evalCtx) pickAlgorithm() bool {
	c.algo = c.job.Algorithm
	if c.algo == "" {
		c.algo = c.opts.DefaultAlgorithm
	}
	if c.algo == "" {
		c.algo = caravan.AlgorithmBinpack
	}
	switch c.algo {
	case caravan.AlgorithmBinpack, caravan.AlgorithmSpread, caravan.AlgorithmFirstFit, caravan.AlgorithmMostFreeMemory:
		return true
	}
	c.failedDesc = fmt.Sprintf("unknown placement algorithm %q", c.algo)
	return false
}

// candidateLimit is how many nodes that fit are ranked for one placement:
// the option when set, else max(2, ceil(log2(nodes))).
func candidateLimit(opt, nodes int) int {
	if opt > 0 {
		return opt
	}
	if nodes <= 2 {
		return 2
	}
	return max(2, bits.Len(uint(nodes-1)))
}

// stopAll stops every allocation that is not terminal: the job is stopped
// or gone.
func (c *evalCtx) stopAll(allocs []*caravan.Allocation) {
	for _, a := range sortedAllocs(allocs) {
		if !a.Terminal() {
			c.appendStop(a, caravan.AllocDesiredStop, descJobStopped)
		}
	}
}

// usage returns what the node holds: the state's usage plus this plan's
// changes.
func (c *evalCtx) usage(nodeID string) (caravan.NodeUsage, error) {
	if u, ok := c.loads.get(nodeID); ok {
		return u, nil
	}
	u, err := c.state.NodeUsage(nodeID)
	if errors.Is(err, caravan.ErrNotFound) {
		return caravan.NodeUsage{}, nil
	}
	if err != nil {
		return caravan.NodeUsage{}, fmt.Errorf("read usage of node %s: %w", nodeID, err)
	}
	return u, nil
}

func (c *evalCtx) setUsage(nodeID string, u caravan.NodeUsage) {
	c.loads.set(nodeID, u)
	if c.posUsage != nil {
		if pos := c.nodePos(nodeID); pos >= 0 {
			c.posUsage[pos], c.posKnown[pos] = u, true
		}
	}
}

// usageAt is usage for the node at pos in c.nodes.
func (c *evalCtx) usageAt(pos int) (caravan.NodeUsage, error) {
	if c.posUsage == nil {
		return c.usage(c.nodes[pos].ID)
	}
	if c.posKnown[pos] {
		return c.posUsage[pos], nil
	}
	u, err := c.usage(c.nodes[pos].ID)
	if err != nil {
		return u, err
	}
	c.posUsage[pos], c.posKnown[pos] = u, true
	return u, nil
}

// setUsageAt is setUsage for the node at pos in c.nodes.
func (c *evalCtx) setUsageAt(pos int, u caravan.NodeUsage) {
	c.loads.set(c.nodes[pos].ID, u)
	if c.posUsage != nil {
		c.posUsage[pos], c.posKnown[pos] = u, true
	}
}

// cacheUsage makes usage lookups by position cheap for the rest of the
// evaluation: worth it when it will look at many nodes many times.
func (c *evalCtx) cacheUsage() {
	if c.posUsage == nil {
		c.posUsage = make([]caravan.NodeUsage, len(c.nodes))
		c.posKnown = make([]bool, len(c.nodes))
	}
}
