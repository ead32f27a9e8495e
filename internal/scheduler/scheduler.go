// Package scheduler turns an evaluation into a plan. It is a pure function of
// a state snapshot and an evaluation: no goroutines, clock, network or disk.
// The current time and a random seed come in through Options, so the same
// inputs always give the same plan.
package scheduler

import (
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
}

// Result is the outcome of one evaluation.
type Result struct {
	// Plan holds the allocation changes and, in Plan.Evals, the
	// evaluation's own update (status complete, failed placement metrics,
	// queued counts) and any new evaluations: a blocked one for what did
	// not fit, delayed ones for reschedules that must wait.
	Plan *caravan.Plan
}
