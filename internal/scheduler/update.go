package scheduler

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"

	"github.com/caravan-sched/caravan"
)

// inPlaceKey caches the spec comparison per job version and group: the
// state shares one *Job among the allocations of a version.
type inPlaceKey struct {
	job   *caravan.Job
	group string
}

// inPlace reports whether allocation a, of an older job version, can take
// the new version where it runs: its group's spec (count aside) and what
// the job gives every group (pool, datacenters, constraints, meta) did not
// change. An allocation whose job version is missing cannot.
func (c *evalCtx) inPlace(a *caravan.Allocation, tg *caravan.TaskGroup) bool {
	if a.Job == nil {
		return false
	}
	key := inPlaceKey{a.Job, tg.Name}
	if v, ok := c.inPlaceCache[key]; ok {
		return v
	}
	v := groupSpecEqual(a.Job, c.job, tg)
	if c.inPlaceCache == nil {
		c.inPlaceCache = map[inPlaceKey]bool{}
	}
	c.inPlaceCache[key] = v
	return v
}

func groupSpecEqual(old, cur *caravan.Job, tg *caravan.TaskGroup) bool {
	otg := lookupGroup(old, tg.Name)
	if otg == nil {
		return false
	}
	if old.Type != cur.Type || old.NodePool != cur.NodePool ||
		!slices.Equal(old.Datacenters, cur.Datacenters) ||
		!slices.Equal(old.Constraints, cur.Constraints) ||
		!maps.Equal(old.Meta, cur.Meta) {
		return false
	}
	a, b := groupSpec(otg), groupSpec(tg)
	return a != nil && bytes.Equal(a, b)
}

// groupSpec is the group's spec without its count, as JSON.
func groupSpec(tg *caravan.TaskGroup) []byte {
	c := *tg
	c.Count = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return nil
	}
	return b
}

// updateInPlace moves a live allocation to the job's version where it runs.
func (c *evalCtx) updateInPlace(a *caravan.Allocation) {
	c.update(a, func(cp *caravan.Allocation) {
		cp.JobVersion = c.job.Version
		cp.Job = c.job
		cp.EvalID = c.eval.ID
	})
}

// nodeByID finds a node in the sorted node list, or nil when it is gone.
func (c *evalCtx) nodeByID(id string) *caravan.Node {
	if pos := c.nodePos(id); pos >= 0 {
		return c.nodes[pos]
	}
	return nil
}

// nodePos is the position of a node in the sorted node list, or -1.
func (c *evalCtx) nodePos(id string) int {
	pos, found := slices.BinarySearchFunc(c.nodes, id, func(n *caravan.Node, id string) int {
		return strings.Compare(n.ID, id)
	})
	if !found {
		return -1
	}
	return pos
}
