package scheduler

import (
	"math"

	"github.com/caravan-sched/caravan"
)

// defaultSpreadWeight is the weight of a spread that names none.
const defaultSpreadWeight = 50

// spreadState keeps, for one spread stanza of a group, how many of the
// group's allocations each attribute value holds.
//
// The primary spread (the heaviest) chooses where candidates come from:
// the values with the fewest allocations first. For the first allocations
// of a group that is any value without one yet, found by walking the node
// list; once every value holds some, the group's feasible nodes are indexed
// by value (once per evaluation) and candidates come from the lowest tier.
// Other spreads lower a node's score by their weight times the share of
// allocations its value already holds.
type spreadState struct {
	target target
	weight int
	counts map[string]int
	total  int

	// The index, built on demand (primary only): values in order of first
	// appearance, their feasible nodes with room, and the nodes without
	// the attribute, used only when every value is full.
	indexed bool
	values  []string
	lists   [][]int32
	missing []int32
}

// initSpreads sets up the job's and the group's spreads and counts the
// kept allocations per value.
func (g *groupPlacer) initSpreads(kept []*caravan.Allocation) {
	stanzas := append(append([]caravan.Spread(nil), g.c.job.Spreads...), g.tg.Spreads...)
	if len(stanzas) == 0 {
		return
	}
	var all []*spreadState
	for _, s := range stanzas {
		w := s.Weight
		if w <= 0 {
			w = defaultSpreadWeight
		}
		all = append(all, &spreadState{target: parseTarget(s.Attribute), weight: w})
	}
	heaviest := 0
	for i, sp := range all {
		if sp.weight > all[heaviest].weight {
			heaviest = i
		}
	}
	g.primary = all[heaviest]
	g.secondary = append(all[:heaviest:heaviest], all[heaviest+1:]...)
	for _, a := range kept {
		if n := g.c.nodeByID(a.NodeID); n != nil {
			g.countSpreads(n)
		}
	}
}

// countSpreads counts one more allocation of the group on node n.
func (g *groupPlacer) countSpreads(n *caravan.Node) {
	if g.primary == nil {
		return
	}
	g.primary.add(n)
	for _, sp := range g.secondary {
		sp.add(n)
	}
}

func (sp *spreadState) add(n *caravan.Node) {
	sp.total++
	if v, ok := sp.target.resolve(n); ok {
		if sp.counts == nil {
			sp.counts = map[string]int{}
		}
		sp.counts[v]++
	}
}

// zero reports whether n has the attribute and its value holds no
// allocation of the group yet.
func (sp *spreadState) zero(n *caravan.Node) bool {
	v, ok := sp.target.resolve(n)
	return ok && sp.counts[v] == 0
}

// penalty is what a secondary spread takes off node n's score.
func (sp *spreadState) penalty(n *caravan.Node) float64 {
	w := float64(sp.weight) / 100
	v, ok := sp.target.resolve(n)
	if !ok {
		return w
	}
	return w * float64(sp.counts[v]) / float64(sp.total+1)
}

// chooseSpread finds candidates in the primary spread's least used values.
func (g *groupPlacer) chooseSpread(best *pick) error {
	sp := g.primary
	if !sp.indexed {
		budget := max(64, 4*g.limit)
		var err error
		if g.list != nil {
			err = g.walkList(&g.list, best, true, budget)
		} else {
			err = g.walkNodes(best, true, budget)
		}
		if err != nil || best.found > 0 {
			return err
		}
		g.buildIndex()
	}
	for {
		tier := g.lowestTier()
		if len(tier) == 0 {
			return g.walkList(&sp.missing, best, false, math.MaxInt)
		}
		off := 0
		if g.algo != caravan.AlgorithmFirstFit {
			off = g.c.rng.IntN(len(tier))
		}
		for k := range tier {
			v := tier[(off+k)%len(tier)]
			if err := g.walkList(&sp.lists[v], best, false, math.MaxInt); err != nil {
				return err
			}
			if best.found >= g.limit {
				break
			}
		}
		if best.found > 0 {
			return nil
		}
		// Every node of the tier failed and left its list: the next
		// round looks at the next tier.
	}
}

// lowestTier returns the values with room that hold the fewest
// allocations.
func (g *groupPlacer) lowestTier() []int {
	sp := g.primary
	g.tier = g.tier[:0]
	low := math.MaxInt
	for i, v := range sp.values {
		if len(sp.lists[i]) == 0 {
			continue
		}
		switch n := sp.counts[v]; {
		case n < low:
			low = n
			g.tier = append(g.tier[:0], i)
		case n == low:
			g.tier = append(g.tier, i)
		}
	}
	return g.tier
}

// buildIndex groups the feasible nodes by the primary spread's value.
func (g *groupPlacer) buildIndex() {
	sp := g.primary
	sp.indexed = true
	g.buildList()
	slot := map[string]int{}
	for _, pos := range g.list {
		v, ok := sp.target.resolve(g.c.nodes[pos])
		if !ok {
			sp.missing = append(sp.missing, pos)
			continue
		}
		i, seen := slot[v]
		if !seen {
			i = len(sp.values)
			slot[v] = i
			sp.values = append(sp.values, v)
			sp.lists = append(sp.lists, nil)
		}
		sp.lists[i] = append(sp.lists[i], pos)
	}
	g.list = nil
}
