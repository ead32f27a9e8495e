package state

import (
	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/hashicorp/go-memdb"
)

// eventsOf turns a committed transaction's changes into events, in the
// order of the changes. Tables without a topic (versions, summaries,
// usage, indexes) give none.
func eventsOf(index uint64, changes memdb.Changes) []events.Event {
	out := make([]events.Event, 0, len(changes))
	for i := range changes {
		c := &changes[i]
		var e events.Event
		switch c.Table {
		case TableJobs:
			e = jobEvent(c)
		case TableAllocs:
			e = allocEvent(c)
		case TableEvals:
			e = evalEvent(c)
		case TableNodes:
			e = nodeEvent(c)
		default:
			continue
		}
		e.Index = index
		out = append(out, e)
	}
	return out
}

func jobEvent(c *memdb.Change) events.Event {
	e := events.Event{Topic: events.TopicJob}
	if c.Deleted() {
		j := c.Before.(*caravan.Job)
		e.Type, e.Key, e.Payload = events.JobDeregistered, j.ID, j
		return e
	}
	j := c.After.(*caravan.Job)
	e.Key, e.Payload = j.ID, j
	before, _ := c.Before.(*caravan.Job)
	switch {
	case before == nil, before.JobModifyIndex != j.JobModifyIndex, before.Stop && !j.Stop:
		e.Type = events.JobRegistered
	case !before.Stop && j.Stop:
		e.Type = events.JobStopped
	default:
		e.Type = events.JobUpdated
	}
	return e
}

func allocEvent(c *memdb.Change) events.Event {
	e := events.Event{Topic: events.TopicAllocation, Type: events.AllocationUpdated}
	obj := c.After
	switch {
	case c.Created():
		e.Type = events.AllocationCreated
	case c.Deleted():
		e.Type, obj = events.AllocationDeleted, c.Before
	}
	a := obj.(*caravan.Allocation).ShallowCopy()
	a.Job = nil // subscribers read the job from its own events
	e.Key, e.FilterKeys, e.Payload = a.ID, []string{a.JobID, a.NodeID}, a
	return e
}

func evalEvent(c *memdb.Change) events.Event {
	e := events.Event{Topic: events.TopicEvaluation, Type: events.EvaluationUpdated}
	obj := c.After
	if c.Deleted() {
		e.Type, obj = events.EvaluationDeleted, c.Before
	}
	ev := obj.(*caravan.Evaluation)
	e.Key, e.FilterKeys, e.Payload = ev.ID, []string{ev.JobID}, ev
	return e
}

func nodeEvent(c *memdb.Change) events.Event {
	e := events.Event{Topic: events.TopicNode, Type: events.NodeUpdated}
	obj := c.After
	switch {
	case c.Created():
		e.Type = events.NodeRegistered
	case c.Deleted():
		e.Type, obj = events.NodeDeregistered, c.Before
	}
	n := obj.(*caravan.Node)
	e.Key, e.Payload = n.ID, n.Sanitized()
	return e
}
