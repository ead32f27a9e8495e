package state

import (
	"fmt"
	"time"

	"github.com/caravan-sched/caravan"
)

// UpsertEvals writes evaluations: new ones get their create index and time,
// existing ones keep them.
func (s *Store) UpsertEvals(index uint64, now time.Time, evals []*caravan.Evaluation) error {
	err := s.write(index, func(tx *txn) error { return tx.upsertEvals(evals, now) })
	if err != nil {
		return fmt.Errorf("upsert evaluations: %w", err)
	}
	return nil
}

// RegisterNode creates or updates a node. An existing node keeps its
// CreateIndex, Drain and SchedulingEligibility; everything else is taken
// from node. A node registered as down loses its allocations, as in
// UpdateNodeStatus.
func (s *Store) RegisterNode(index uint64, now time.Time, node *caravan.Node, evals []*caravan.Evaluation) error {
	if node == nil || node.ID == "" {
		return fmt.Errorf("register node: node and its id are required: %w", caravan.ErrInvalid)
	}
	err := s.write(index, func(tx *txn) error {
		old, err := tx.node(node.ID)
		if err != nil {
			return err
		}
		n := copyNode(node)
		n.ModifyIndex = tx.index
		if old == nil {
			n.CreateIndex, n.StatusUpdatedAt = tx.index, now
		} else {
			n.CreateIndex = old.CreateIndex
			n.Drain, n.SchedulingEligibility = old.Drain, old.SchedulingEligibility
			n.StatusUpdatedAt = old.StatusUpdatedAt
			if n.Status != old.Status {
				n.StatusUpdatedAt = now
			}
		}
		if err := tx.putNode(n, now); err != nil {
			return err
		}
		return tx.upsertEvals(evals, now)
	})
	if err != nil {
		return fmt.Errorf("register node %q: %w", node.ID, err)
	}
	return nil
}

// putNode writes a node, and marks its allocations lost when it is down.
func (tx *txn) putNode(n *caravan.Node, now time.Time) error {
	if err := tx.insert(TableNodes, n); err != nil {
		return err
	}
	if tx.nodes != nil {
		delete(tx.nodes, n.ID)
	}
	if n.Status == caravan.NodeStatusDown {
		return tx.loseAllocs(n, now)
	}
	return nil
}

// UpdateNodeStatus sets a node's liveness status. When it becomes down,
// every allocation on it that the agent has not reported finished is lost:
// client status lost, desired status stop, terminal reason lost, and every
// task that had not finished in state lost.
func (s *Store) UpdateNodeStatus(index uint64, now time.Time, nodeID, status, description string, evals []*caravan.Evaluation) error {
	switch status {
	case caravan.NodeStatusInitializing, caravan.NodeStatusReady, caravan.NodeStatusDown:
	default:
		return fmt.Errorf("update status of node %q: unknown status %q: %w", nodeID, status, caravan.ErrInvalid)
	}
	return s.updateNode(index, now, nodeID, evals, "update status of", func(n *caravan.Node) error {
		if n.Status != status {
			n.StatusUpdatedAt = now
		}
		n.Status, n.StatusDescription = status, description
		return nil
	})
}

// UpdateNodeDrain starts a drain (drain not nil: StartedAt is now and
// ForceDeadline now plus the deadline, when there is one) or cancels it
// (nil). A non-empty eligibility is set too.
func (s *Store) UpdateNodeDrain(index uint64, now time.Time, nodeID string, drain *caravan.DrainStrategy, eligibility string, evals []*caravan.Evaluation) error {
	if err := checkEligibility(eligibility, true); err != nil {
		return fmt.Errorf("update drain of node %q: %w", nodeID, err)
	}
	return s.updateNode(index, now, nodeID, evals, "update drain of", func(n *caravan.Node) error {
		n.Drain = nil
		if drain != nil {
			d := *drain
			d.StartedAt, d.ForceDeadline = now, time.Time{}
			if d.Deadline > 0 {
				d.ForceDeadline = now.Add(d.Deadline.D())
			}
			n.Drain = &d
		}
		if eligibility != "" {
			n.SchedulingEligibility = eligibility
		}
		return nil
	})
}

// UpdateNodeEligibility sets whether new allocations may be placed on the
// node.
func (s *Store) UpdateNodeEligibility(index uint64, now time.Time, nodeID, eligibility string, evals []*caravan.Evaluation) error {
	if err := checkEligibility(eligibility, false); err != nil {
		return fmt.Errorf("update eligibility of node %q: %w", nodeID, err)
	}
	return s.updateNode(index, now, nodeID, evals, "update eligibility of", func(n *caravan.Node) error {
		n.SchedulingEligibility = eligibility
		return nil
	})
}

func checkEligibility(e string, emptyOK bool) error {
	switch {
	case e == caravan.NodeEligible, e == caravan.NodeIneligible, e == "" && emptyOK:
		return nil
	}
	return fmt.Errorf("unknown scheduling eligibility %q: %w", e, caravan.ErrInvalid)
}

// updateNode changes a copy of a stored node with change and writes it with
// the evaluations.
func (s *Store) updateNode(index uint64, now time.Time, nodeID string, evals []*caravan.Evaluation, what string, change func(*caravan.Node) error) error {
	err := s.write(index, func(tx *txn) error {
		old, err := tx.node(nodeID)
		if err != nil {
			return err
		}
		if old == nil {
			return errNotFoundf("node %q", nodeID)
		}
		n := copyNode(old)
		if err := change(n); err != nil {
			return err
		}
		n.ModifyIndex = tx.index
		if err := tx.putNode(n, now); err != nil {
			return err
		}
		return tx.upsertEvals(evals, now)
	})
	if err != nil {
		return fmt.Errorf("%s node %q: %w", what, nodeID, err)
	}
	return nil
}

// loseAllocs marks the allocations of a node that went down lost.
func (tx *txn) loseAllocs(n *caravan.Node, now time.Time) error {
	allocs, err := tx.allocsIn(TableNodeUsage, n.ID)
	if err != nil {
		return err
	}
	for _, a := range allocs {
		if a.ClientTerminal() {
			continue
		}
		if err := tx.putAlloc(a, lostAlloc(a, n, tx.index, now)); err != nil {
			return err
		}
	}
	return nil
}

func lostAlloc(a *caravan.Allocation, n *caravan.Node, index uint64, now time.Time) *caravan.Allocation {
	why := fmt.Sprintf("node %s (%s) was lost", n.Name, caravan.ShortID(n.ID))
	c := a.ShallowCopy()
	c.ClientStatus = caravan.AllocClientLost
	c.ClientDescription = why
	c.DesiredStatus = caravan.AllocDesiredStop
	c.DesiredDescription = why
	c.TerminalReason = caravan.TaskStateLost
	c.ModifyIndex, c.AllocModifyIndex, c.ModifyTime = index, index, now
	if len(a.TaskStates) > 0 {
		c.TaskStates = make(map[string]*caravan.TaskState, len(a.TaskStates))
		for name, ts := range a.TaskStates {
			if ts == nil || caravan.TaskStateTerminal(ts.State) {
				c.TaskStates[name] = ts
				continue
			}
			lost := ts.Copy()
			lost.State = caravan.TaskStateLost
			lost.FinishedAt = now
			lost.AppendEvent(&caravan.TaskEvent{Type: caravan.TaskEventLost, Time: now, Message: why})
			c.TaskStates[name] = lost
		}
	}
	return c
}

// DeregisterNodes deletes nodes. Their allocations stay until garbage
// collection. An unknown node is ErrNotFound and nothing is deleted.
func (s *Store) DeregisterNodes(index uint64, nodeIDs []string) error {
	err := s.write(index, func(tx *txn) error {
		for _, id := range nodeIDs {
			n, err := tx.node(id)
			if err != nil {
				return err
			}
			if n == nil {
				return errNotFoundf("node %q", id)
			}
			if err := tx.delete(TableNodes, n); err != nil {
				return err
			}
			delete(tx.nodes, id)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("deregister nodes: %w", err)
	}
	return nil
}

// copyNode returns a copy sharing maps and slices: enough for changing the
// node's scalar fields copy-on-write.
func copyNode(n *caravan.Node) *caravan.Node {
	c := *n
	return &c
}
