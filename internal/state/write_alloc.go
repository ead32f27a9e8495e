package state

import (
	"fmt"
	"slices"
	"time"

	"github.com/caravan-sched/caravan"
)

// UpdateAllocsFromClient merges what a node's agent reports into its
// allocations: client status, description, terminal reason and task
// states. Allocations that are unknown or on another node are ignored. A
// client status never goes back from terminal to not terminal, and a lost
// allocation stays lost; the same holds for each task state.
func (s *Store) UpdateAllocsFromClient(index uint64, now time.Time, nodeID string, updates []*caravan.AllocClientUpdate, evals []*caravan.Evaluation) error {
	for i, u := range updates {
		if u == nil {
			return fmt.Errorf("update allocations of node %q: update %d is null: %w", nodeID, i, caravan.ErrInvalid)
		}
		if err := u.Validate(); err != nil {
			return fmt.Errorf("update allocations of node %q: update %d: %w", nodeID, i, err)
		}
	}
	err := s.write(index, func(tx *txn) error {
		for _, u := range updates {
			old, err := tx.alloc(u.ID)
			if err != nil {
				return err
			}
			if old == nil || old.NodeID != nodeID {
				tx.logger.Debug("ignoring client update of an allocation not on the node", "alloc_id", u.ID, "node_id", nodeID)
				continue
			}
			if err := tx.putAlloc(old, mergeClientUpdate(old, u, tx.index, now)); err != nil {
				return err
			}
		}
		return tx.upsertEvals(evals, now)
	})
	if err != nil {
		return fmt.Errorf("update allocations of node %q: %w", nodeID, err)
	}
	return nil
}

// mergeClientUpdate returns a copy of a with the agent's report merged in.
func mergeClientUpdate(a *caravan.Allocation, u *caravan.AllocClientUpdate, index uint64, now time.Time) *caravan.Allocation {
	c := a.ShallowCopy()
	c.ModifyIndex, c.ModifyTime = index, now
	switch {
	case a.ClientStatus == caravan.AllocClientLost:
		// Lost stays lost.
	case a.ClientTerminal() && !terminalClientStatus(u.ClientStatus):
		// Never back from terminal.
	default:
		c.ClientStatus = clientStatus(u.ClientStatus)
		c.ClientDescription = u.ClientDescription
		c.TerminalReason = ""
		if c.ClientTerminal() {
			c.TerminalReason = taskState(u.TerminalReason)
		}
	}
	if len(u.TaskStates) > 0 {
		c.TaskStates = mergeTaskStates(a.TaskStates, u.TaskStates)
	}
	return c
}

// mergeTaskStates merges reported task states into stored ones: a task
// state that is terminal stays. The write owns reported and returns it,
// completed with the stored states, to keep no second map.
func mergeTaskStates(stored, reported map[string]*caravan.TaskState) map[string]*caravan.TaskState {
	sanitizeTaskStates(reported)
	for name, old := range stored {
		ts, ok := reported[name]
		if !ok || old != nil && caravan.TaskStateTerminal(old.State) && !caravan.TaskStateTerminal(ts.State) {
			reported[name] = old
		}
	}
	return reported
}

// sanitizeTaskStates drops null task states and events from states the
// write owns, and shares the words they use.
func sanitizeTaskStates(states map[string]*caravan.TaskState) {
	for name, ts := range states {
		if ts == nil {
			delete(states, name)
			continue
		}
		ts.State = taskState(ts.State)
		ts.Events = slices.DeleteFunc(ts.Events, func(e *caravan.TaskEvent) bool { return e == nil })
		for _, e := range ts.Events {
			e.Type = taskEventType(e.Type)
		}
	}
}

func terminalClientStatus(s string) bool {
	return s == caravan.AllocClientComplete || s == caravan.AllocClientFailed || s == caravan.AllocClientLost
}

// PlanUpdate is what the plan applier commits of one plan.
type PlanUpdate struct {
	EvalID string `json:"eval_id"`
	JobID  string `json:"job_id"`
	// Stops are copies of stored allocations with the new desired status
	// and description.
	Stops []*caravan.Allocation `json:"stops,omitempty"`
	// Allocs are new placements, and updates of existing allocations
	// (server-side fields only, or an in-place update to a new job
	// version).
	Allocs []*caravan.Allocation `json:"allocs,omitempty"`
	// Evals are written with the plan.
	Evals []*caravan.Evaluation `json:"evals,omitempty"`
}

// ApplyPlans commits plans in one transaction. New allocations are linked
// to their stored job version (skipped, and logged, when it no longer
// exists). For allocations that exist, only server-side fields are merged:
// desired status and description, next allocation, follow-up evaluation,
// reschedule tracker, and the job version for an in-place update; the
// stored client status and task states are kept. Stops of unknown
// allocations are ignored.
func (s *Store) ApplyPlans(index uint64, now time.Time, plans []PlanUpdate) error {
	err := s.write(index, func(tx *txn) error {
		for i := range plans {
			if err := tx.applyPlan(&plans[i], now); err != nil {
				return fmt.Errorf("plan of evaluation %q: %w", plans[i].EvalID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply plans: %w", err)
	}
	return nil
}

func (tx *txn) applyPlan(p *PlanUpdate, now time.Time) error {
	for _, a := range p.Stops {
		if a == nil {
			return fmt.Errorf("a stop is null: %w", caravan.ErrInvalid)
		}
		old, err := tx.alloc(a.ID)
		if err != nil {
			return err
		}
		if old == nil {
			continue
		}
		if err := tx.mergePlanned(old, a, now); err != nil {
			return err
		}
	}
	for _, a := range p.Allocs {
		if err := tx.placeAlloc(a, now); err != nil {
			return err
		}
	}
	return tx.upsertEvals(p.Evals, now)
}

// placeAlloc writes a new allocation or merges an update into an existing
// one.
func (tx *txn) placeAlloc(a *caravan.Allocation, now time.Time) error {
	if a == nil {
		return fmt.Errorf("an allocation is null: %w", caravan.ErrInvalid)
	}
	if a.ID == "" || a.JobID == "" || a.NodeID == "" || a.TaskGroup == "" {
		return fmt.Errorf("allocation %q: id, job_id, node_id and task_group are required: %w", a.ID, caravan.ErrInvalid)
	}
	old, err := tx.alloc(a.ID)
	if err != nil {
		return err
	}
	if old != nil {
		return tx.mergePlanned(old, a, now)
	}
	job, err := tx.jobVersion(a.JobID, a.JobVersion)
	if err != nil {
		return err
	}
	if job == nil {
		tx.logger.Warn("skipping a placement of a job version no longer in state",
			"alloc_id", a.ID, "job_id", a.JobID, "job_version", a.JobVersion)
		return nil
	}
	// The write owns a: storing it, not a copy, leaves no garbage between
	// the allocations in the heap.
	c := a
	if err := tx.lean(c, job); err != nil {
		return err
	}
	if c.DesiredStatus == "" {
		c.DesiredStatus = caravan.AllocDesiredRun
	}
	if c.ClientStatus == "" {
		c.ClientStatus = caravan.AllocClientPending
	}
	c.CreateIndex, c.ModifyIndex, c.AllocModifyIndex = tx.index, tx.index, tx.index
	c.CreateTime, c.ModifyTime = now, now
	return tx.putAlloc(nil, c)
}

// mergePlanned merges the server-side fields of a planned allocation into
// the stored one.
func (tx *txn) mergePlanned(old, a *caravan.Allocation, now time.Time) error {
	c := old.ShallowCopy()
	if a.DesiredStatus != "" {
		c.DesiredStatus = desiredStatus(a.DesiredStatus)
		c.DesiredDescription = a.DesiredDescription
	}
	if a.NextAllocation != "" {
		c.NextAllocation = a.NextAllocation
	}
	if a.FollowupEvalID != "" {
		c.FollowupEvalID = a.FollowupEvalID
	}
	if a.RescheduleTracker != nil {
		c.RescheduleTracker = a.RescheduleTracker
	}
	if a.JobVersion != old.JobVersion && a.JobID == old.JobID {
		job, err := tx.jobVersion(old.JobID, a.JobVersion)
		if err != nil {
			return err
		}
		if job == nil {
			tx.logger.Warn("skipping an in-place update to a job version no longer in state",
				"alloc_id", a.ID, "job_id", a.JobID, "job_version", a.JobVersion)
		} else {
			c.JobVersion, c.Job = job.Version, job
		}
	}
	c.ModifyIndex, c.AllocModifyIndex, c.ModifyTime = tx.index, tx.index, now
	return tx.putAlloc(old, c)
}

// lean links a new allocation to its job version and shares its repeated
// strings with objects already in state, so that each allocation costs
// little memory.
func (tx *txn) lean(a *caravan.Allocation, job *caravan.Job) error {
	a.Job, a.JobID = job, job.ID
	if tg := job.LookupTaskGroup(a.TaskGroup); tg != nil {
		a.TaskGroup = tg.Name
	}
	n, err := tx.node(a.NodeID)
	if err != nil {
		return err
	}
	if n != nil {
		a.NodeID = n.ID
		if a.NodeName == n.Name {
			a.NodeName = n.Name
		}
	}
	a.EvalID = tx.intern(a.EvalID)
	for i := range a.Resources.Ports {
		a.Resources.Ports[i].Label = tx.intern(a.Resources.Ports[i].Label)
	}
	a.DesiredStatus = desiredStatus(a.DesiredStatus)
	a.ClientStatus = clientStatus(a.ClientStatus)
	a.TerminalReason = taskState(a.TerminalReason)
	sanitizeTaskStates(a.TaskStates)
	return nil
}

// desiredStatus, clientStatus and taskState return the package constant
// equal to s, so stored objects share one copy of each word.
func desiredStatus(s string) string {
	for _, c := range [...]string{caravan.AllocDesiredRun, caravan.AllocDesiredStop, caravan.AllocDesiredEvict} {
		if s == c {
			return c
		}
	}
	return s
}

func clientStatus(s string) string {
	for _, c := range [...]string{caravan.AllocClientPending, caravan.AllocClientRunning, caravan.AllocClientComplete, caravan.AllocClientFailed, caravan.AllocClientLost} {
		if s == c {
			return c
		}
	}
	return s
}

func taskEventType(s string) string {
	for _, c := range [...]string{caravan.TaskEventReceived, caravan.TaskEventSetup, caravan.TaskEventSetupFailure,
		caravan.TaskEventDriverFailure, caravan.TaskEventStarted, caravan.TaskEventExited, caravan.TaskEventTimeout,
		caravan.TaskEventOOM, caravan.TaskEventKilling, caravan.TaskEventKilled, caravan.TaskEventRestarting,
		caravan.TaskEventNotRestarting, caravan.TaskEventSiblingFailed, caravan.TaskEventLost, caravan.TaskEventReattached} {
		if s == c {
			return c
		}
	}
	return s
}

func taskState(s string) string {
	for _, c := range [...]string{caravan.TaskStatePending, caravan.TaskStateRunning, caravan.TaskStateComplete, caravan.TaskStateFailed,
		caravan.TaskStateTimeout, caravan.TaskStateOOM, caravan.TaskStateCancelled, caravan.TaskStateLost} {
		if s == c {
			return c
		}
	}
	return s
}
