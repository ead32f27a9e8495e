package state

import (
	"fmt"
	"maps"
	"slices"

	"github.com/caravan-sched/caravan"
)

// Allocations are found by job and by node through allocation sets rather
// than memdb indexes: one row per job (table job_allocs) or node (table
// node_usage) holding the sorted ids of its allocations. A memdb index
// costs about 500 bytes per allocation (a radix leaf, a node, two watch
// channels and the key); an id in a set costs 16 bytes, sharing the
// allocation's id string. A node's row also holds its usage, so an
// allocation write touches one row per node.
//
// A set changes only when allocations are added or deleted; its row is
// written again (sharing the id slice) whenever one of its allocations
// changes, so watching the row wakes blocking queries on any change. Rows
// exist while the set is not empty.

// allocSet is a row of the job_allocs or node_usage table.
type allocSet struct {
	Key string
	// IDs are sorted and never modified once stored.
	IDs []string
	// Usage (node rows only) is what the node's allocations that are not
	// terminal hold.
	Usage caravan.NodeUsage
}

// setKey names one set: its table and its job or node id.
type setKey struct {
	table, key string
}

// setChange is a set as a write changes it.
type setChange struct {
	orig *allocSet
	// ids are the members without the pending changes.
	ids           []string
	adds, removes []string
	// usage is the node's usage as the write changes it.
	usage caravan.NodeUsage
	// written says an allocation of the set was written, so the set's row
	// must be written again.
	written bool
}

func (c *setChange) add(id string) {
	if i := slices.Index(c.removes, id); i >= 0 {
		c.removes = slices.Delete(c.removes, i, i+1)
		return
	}
	c.adds = append(c.adds, id)
}

func (c *setChange) remove(id string) {
	if i := slices.Index(c.adds, id); i >= 0 {
		c.adds = slices.Delete(c.adds, i, i+1)
		return
	}
	c.removes = append(c.removes, id)
}

func (tx *txn) setChange(table, key string) (*setChange, error) {
	k := setKey{table, key}
	if c, ok := tx.sets[k]; ok {
		return c, nil
	}
	obj, err := tx.first(table, key)
	if err != nil {
		return nil, err
	}
	c := &setChange{}
	if obj != nil {
		c.orig = obj.(*allocSet)
		c.ids, c.usage = c.orig.IDs, c.orig.Usage
	}
	if tx.sets == nil {
		tx.sets = map[setKey]*setChange{}
	}
	tx.sets[k] = c
	return c, nil
}

// members returns the set's ids with the pending changes applied.
func (c *setChange) members() []string {
	if len(c.adds) == 0 && len(c.removes) == 0 {
		return c.ids
	}
	removes := map[string]bool{}
	for _, id := range c.removes {
		removes[id] = true
	}
	slices.Sort(c.adds)
	out := make([]string, 0, len(c.ids)+len(c.adds))
	i := 0
	for _, id := range c.ids {
		for ; i < len(c.adds) && c.adds[i] < id; i++ {
			out = append(out, c.adds[i])
		}
		if !removes[id] {
			out = append(out, id)
		}
	}
	out = append(out, c.adds[i:]...)
	c.ids, c.adds, c.removes = slices.Clip(out), nil, nil
	return c.ids
}

// trackAlloc records in the job and node sets that an allocation was
// added (old nil), changed, or deleted (a nil).
func (tx *txn) trackAlloc(old, a *caravan.Allocation) error {
	cur := a
	if cur == nil {
		cur = old
	}
	for _, k := range []setKey{{tableJobAllocs, cur.JobID}, {TableNodeUsage, cur.NodeID}} {
		c, err := tx.setChange(k.table, k.key)
		if err != nil {
			return err
		}
		c.written = true
		switch {
		case old == nil:
			c.add(a.ID)
		case a == nil:
			c.remove(old.ID)
		}
	}
	return nil
}

// allocsIn returns the allocations of a job's or node's set, as the write
// sees them.
func (tx *txn) allocsIn(table, key string) ([]*caravan.Allocation, error) {
	c, err := tx.setChange(table, key)
	if err != nil {
		return nil, err
	}
	ids := c.members()
	out := make([]*caravan.Allocation, 0, len(ids))
	for _, id := range ids {
		a, err := tx.alloc(id)
		if err != nil {
			return nil, err
		}
		if a == nil {
			return nil, fmt.Errorf("%s %q lists allocation %s, which is not in state", table, key, id)
		}
		out = append(out, a)
	}
	return out, nil
}

// writeSets writes every set the write touched: the new members, or the
// same members in a new row so that watchers wake. Empty sets are deleted.
func (tx *txn) writeSets() error {
	keys := slices.SortedFunc(maps.Keys(tx.sets), func(a, b setKey) int {
		if a.table != b.table {
			return compareStrings(a.table, b.table)
		}
		return compareStrings(a.key, b.key)
	})
	for _, k := range keys {
		c := tx.sets[k]
		if !c.written {
			continue
		}
		ids := c.members()
		if len(ids) == 0 {
			if c.orig != nil {
				if err := tx.delete(k.table, c.orig); err != nil {
					return err
				}
			}
			continue
		}
		if err := tx.insert(k.table, &allocSet{Key: k.key, IDs: ids, Usage: c.usage}); err != nil {
			return err
		}
	}
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// allocsIn returns the allocations of a job's or node's set, watching the
// set.
func (s *Snapshot) allocsIn(table, key string) ([]*caravan.Allocation, error) {
	txn := s.txn
	ch, obj, err := txn.FirstWatch(table, indexID, key)
	if err != nil {
		return nil, fmt.Errorf("look up %s %q: %w", table, key, err)
	}
	s.watch(ch)
	if obj == nil {
		return nil, nil
	}
	ids := obj.(*allocSet).IDs
	out := make([]*caravan.Allocation, 0, len(ids))
	for _, id := range ids {
		a, err := txn.First(TableAllocs, indexID, id)
		if err != nil {
			return nil, fmt.Errorf("look up allocation %s: %w", id, err)
		}
		if a == nil {
			return nil, fmt.Errorf("%s %q lists allocation %s, which is not in state", table, key, id)
		}
		out = append(out, a.(*caravan.Allocation))
	}
	return out, nil
}
