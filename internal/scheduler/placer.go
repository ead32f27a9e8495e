package scheduler

import (
	"math"
	"slices"
	"strconv"

	"github.com/caravan-sched/caravan"
)

// groupPlacer places the allocations of one task group. It keeps, for the
// evaluation, what makes the next placement cheap: the compiled rules, the
// feasible nodes that still have room, the spread counts.
//
// Within the placement phase nodes only fill up (every stop of the
// evaluation is made before the first placement), so a node that failed
// for this group once is dropped from its candidate lists for good.
type groupPlacer struct {
	c     *evalCtx
	tg    *caravan.TaskGroup
	out   *groupOutcome
	count int
	ask   ask
	feas  *feasibility
	algo  string
	limit int

	// antiAffinity penalises nodes by collisions: allocations of the same
	// job and group on them (kept ones and this plan's).
	antiAffinity bool
	collisions   nodeMap[int]

	primary   *spreadState // chooses the candidates' attribute value
	secondary []*spreadState

	// list holds the positions of feasible nodes with room, once built.
	list []int32
	// cursor is where first-fit resumes.
	cursor int
	// hint is binpack's last node, tried first (-1: none).
	hint int
	// skip marks nodes where a chosen placement could not be assigned.
	skip map[int]bool

	failed []int // scratch: list indexes that failed in a walk
	tier   []int // scratch: values of the lowest spread tier
}

// pick is the best candidate of a walk.
type pick struct {
	pos   int
	cpu   int
	score float64
	found int
}

func (b *pick) offer(pos, cpu int, score float64) {
	b.found++
	if b.pos < 0 || score > b.score {
		b.pos, b.cpu, b.score = pos, cpu, score
	}
}

// newGroupPlacer prepares the placement of tg. kept are the group's
// allocations that stay (for anti-affinity and spread counts).
func (c *evalCtx) newGroupPlacer(tg *caravan.TaskGroup, out *groupOutcome, kept []*caravan.Allocation) *groupPlacer {
	g := &groupPlacer{
		c:     c,
		tg:    tg,
		out:   out,
		count: max(tg.GroupCount(), 1),
		ask:   newAsk(tg),
		feas:  newFeasibility(&c.compiler, c.job, tg),
		algo:  c.algo,
		limit: c.limit,
		hint:  -1,
	}
	if g.algo == caravan.AlgorithmFirstFit {
		g.limit = 1
	}
	jobType := c.job.Type
	g.antiAffinity = (jobType == caravan.JobTypeService || jobType == "") &&
		(g.algo == caravan.AlgorithmBinpack || g.algo == caravan.AlgorithmSpread)
	if jobType != caravan.JobTypeSystem {
		g.initSpreads(kept)
	}
	if g.antiAffinity {
		for _, a := range kept {
			g.addCollision(a.NodeID)
		}
	}
	return g
}

func (g *groupPlacer) addCollision(nodeID string) {
	k, _ := g.collisions.get(nodeID)
	g.collisions.set(nodeID, k+1)
}

// placeAll places the group's allocations in order. After the first one
// that finds no node, the rest fail with it (CoalescedFailures).
func (g *groupPlacer) placeAll(places []*placement) error {
	if len(places) == 0 {
		return nil
	}
	if len(places)*g.limit*4 >= len(g.c.nodes) && g.algo != caravan.AlgorithmFirstFit {
		g.buildList()
		g.c.cacheUsage()
	}
	for _, p := range places {
		if g.out.metric != nil {
			g.out.metric.CoalescedFailures++
			g.out.failed++
			continue
		}
		if err := g.place(p); err != nil {
			return err
		}
	}
	return nil
}

// place finds a node for p, retrying when a chosen node cannot be assigned
// (a bounded number of times: every retry skips one more node).
func (g *groupPlacer) place(p *placement) error {
	for range len(g.c.nodes) + 1 {
		best, err := g.choose()
		if err != nil {
			return err
		}
		if best.pos < 0 {
			break
		}
		a, err := g.commit(best.pos, best.cpu, p)
		if err != nil {
			return err
		}
		if a != nil {
			p.alloc = a
			return nil
		}
		if g.skip == nil {
			g.skip = map[int]bool{}
		}
		g.skip[best.pos] = true
	}
	return g.fail()
}

// fail records a placement that found no node, with the metrics of a scan
// over every node.
func (g *groupPlacer) fail() error {
	m, err := g.failureMetric()
	if err != nil {
		return err
	}
	g.out.metric = m
	g.out.failed++
	return nil
}

// choose returns the best candidate node for the next placement, or
// pos -1.
func (g *groupPlacer) choose() (pick, error) {
	best := pick{pos: -1}
	var err error
	switch {
	case g.primary != nil:
		err = g.chooseSpread(&best)
	case g.algo == caravan.AlgorithmFirstFit:
		err = g.firstFit(&best)
	default:
		if err = g.offerHint(&best); err != nil {
			return best, err
		}
		switch {
		case g.list != nil:
			err = g.walkList(&g.list, &best, false, math.MaxInt)
		case g.algo == caravan.AlgorithmBinpack:
			err = g.packNodes(&best)
		default:
			err = g.walkNodes(&best, false, math.MaxInt)
		}
	}
	return best, err
}

// Budgets of binpack's walks for groups placed without a node list: the
// nodes in use it looks at, and the nodes it looks at from the first one
// when it must open a node.
const (
	minInUseBudget = 64
	openBudget     = 1024
)

// packNodes finds binpack's candidates among the nodes already in use,
// from a random one: scheduler workers evaluate many small jobs at once,
// and candidates sampled from every node would open a new node for nearly
// every job. Only when no node in use has room does it open one: the first
// that fits in node order, which every worker opening a node at the same
// time agrees on. When even that finds nothing, it walks every node from a
// random offset.
func (g *groupPlacer) packNodes(best *pick) error {
	if err := g.walkInUse(best); err != nil || best.found > 0 {
		return err
	}
	if err := g.walkNodesFrom(best, 0, false, openBudget); err != nil || best.found > 0 {
		return err
	}
	return g.walkNodes(best, false, math.MaxInt)
}

// walkInUse offers the nodes in use that fit, from a random node on, until
// limit candidates are found or the budget of nodes is spent.
func (g *groupPlacer) walkInUse(best *pick) error {
	c := g.c
	if len(c.nodes) == 0 {
		return nil
	}
	budget := max(minInUseBudget, 8*g.limit)
	from := c.nodes[c.rng.IntN(len(c.nodes))].ID
	looked := 0
	for id, u := range c.state.NodesInUse(from) {
		if looked >= budget || best.found >= g.limit {
			break
		}
		looked++
		if planned, ok := c.loads.get(id); ok {
			u = planned
		} else if u.Allocs == 0 {
			continue // only terminal allocations: not in use
		}
		pos := c.nodePos(id)
		if pos < 0 {
			continue
		}
		if cpu, score, ok := g.considerUsage(pos, &u, true); ok {
			best.offer(pos, cpu, score)
		}
	}
	return nil
}

// offerHint makes binpack try the node it placed on last: filling one node
// before opening another keeps whole nodes free.
func (g *groupPlacer) offerHint(best *pick) error {
	if g.hint < 0 || g.algo != caravan.AlgorithmBinpack {
		return nil
	}
	cpu, score, ok, err := g.consider(g.hint, false)
	if ok {
		best.offer(g.hint, cpu, score)
		best.found = 0 // an extra candidate: the walk still finds limit
	}
	return err
}

// firstFit takes the first node in id order that is feasible and has room.
// Nodes before the cursor failed for this group already.
func (g *groupPlacer) firstFit(best *pick) error {
	for pos := g.cursor; pos < len(g.c.nodes); pos++ {
		cpu, score, ok, err := g.consider(pos, true)
		if err != nil {
			return err
		}
		if ok {
			g.cursor = pos
			best.offer(pos, cpu, score)
			return nil
		}
	}
	g.cursor = len(g.c.nodes)
	return nil
}

// consider checks node pos (feasibility too when asked) and scores it.
func (g *groupPlacer) consider(pos int, checkFeasible bool) (int, float64, bool, error) {
	if g.skip != nil && g.skip[pos] {
		return 0, 0, false, nil
	}
	n := g.c.nodes[pos]
	if checkFeasible {
		if !n.Ready() {
			return 0, 0, false, nil
		}
		if ok, _ := g.feas.check(n); !ok {
			return 0, 0, false, nil
		}
	}
	u, err := g.c.usageAt(pos)
	if err != nil {
		return 0, 0, false, err
	}
	cpu, score, ok := g.considerUsage(pos, &u, false)
	return cpu, score, ok, nil
}

// considerUsage is consider for a node whose usage is known.
func (g *groupPlacer) considerUsage(pos int, u *caravan.NodeUsage, checkFeasible bool) (int, float64, bool) {
	if g.skip != nil && g.skip[pos] {
		return 0, 0, false
	}
	n := g.c.nodes[pos]
	if checkFeasible {
		if !n.Ready() {
			return 0, 0, false
		}
		if ok, _ := g.feas.check(n); !ok {
			return 0, 0, false
		}
	}
	cpu, dim := g.ask.fit(n, u)
	if dim != "" {
		return 0, 0, false
	}
	return cpu, g.score(n, u, cpu), true
}

// walkNodes walks every node from a random offset, feasibility included,
// until limit candidates are found or budget nodes were looked at. With
// zeroTier only nodes whose primary spread value has no allocation count.
func (g *groupPlacer) walkNodes(best *pick, zeroTier bool, budget int) error {
	if len(g.c.nodes) == 0 {
		return nil
	}
	return g.walkNodesFrom(best, g.c.rng.IntN(len(g.c.nodes)), zeroTier, budget)
}

// walkNodesFrom is walkNodes from node start.
func (g *groupPlacer) walkNodesFrom(best *pick, start int, zeroTier bool, budget int) error {
	n := len(g.c.nodes)
	for k := 0; k < n && k < budget && best.found < g.limit; k++ {
		pos := start + k
		if pos >= n {
			pos -= n
		}
		if zeroTier && !g.primary.zero(g.c.nodes[pos]) {
			continue
		}
		cpu, score, ok, err := g.consider(pos, true)
		if err != nil {
			return err
		}
		if ok {
			best.offer(pos, cpu, score)
		}
	}
	return nil
}

// walkList walks a list of feasible node positions like walkNodes, and
// drops the nodes that have no room left from it. First-fit walks from
// the start and keeps the list's order.
func (g *groupPlacer) walkList(list *[]int32, best *pick, zeroTier bool, budget int) error {
	l := *list
	n := len(l)
	if n == 0 {
		return nil
	}
	ordered := g.algo == caravan.AlgorithmFirstFit
	start := 0
	if !ordered {
		start = g.c.rng.IntN(n)
	}
	g.failed = g.failed[:0]
	for k := 0; k < n && k < budget && best.found < g.limit; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		pos := int(l[i])
		if zeroTier && !g.primary.zero(g.c.nodes[pos]) {
			continue
		}
		cpu, score, ok, err := g.consider(pos, false)
		if err != nil {
			return err
		}
		if !ok {
			g.failed = append(g.failed, i)
			continue
		}
		best.offer(pos, cpu, score)
	}
	*list = prune(l, g.failed, ordered)
	return nil
}

// prune removes the entries at the given indexes from l.
func prune(l []int32, idx []int, ordered bool) []int32 {
	if len(idx) == 0 {
		return l
	}
	if ordered {
		for _, i := range idx {
			l[i] = -1
		}
		return slices.DeleteFunc(l, func(p int32) bool { return p < 0 })
	}
	slices.Sort(idx)
	for j := len(idx) - 1; j >= 0; j-- {
		last := len(l) - 1
		l[idx[j]] = l[last]
		l = l[:last]
	}
	return l
}

// buildList collects the feasible nodes once, for groups with many
// placements.
func (g *groupPlacer) buildList() {
	if g.list != nil {
		return
	}
	g.list = make([]int32, 0, len(g.c.nodes))
	for pos, n := range g.c.nodes {
		if !n.Ready() {
			continue
		}
		if ok, _ := g.feas.check(n); ok {
			g.list = append(g.list, int32(pos))
		}
	}
}

// score ranks a node that fits: higher is better.
func (g *groupPlacer) score(n *caravan.Node, u *caravan.NodeUsage, cpu int) float64 {
	capCPU, capMem := n.Capacity()
	switch g.algo {
	case caravan.AlgorithmMostFreeMemory:
		return float64(capMem - u.Memory - g.ask.mem)
	case caravan.AlgorithmFirstFit:
		return 0
	}
	full := (fraction(int64(u.CPU+cpu), int64(capCPU)) + fraction(int64(u.Memory+g.ask.mem), int64(capMem))) / 2
	s := full
	if g.algo == caravan.AlgorithmSpread {
		s = 1 - full
	}
	if !g.collisions.empty() {
		if k, _ := g.collisions.get(n.ID); k > 0 {
			s -= float64(k+1) / float64(g.count)
		}
	}
	for _, sp := range g.secondary {
		s -= sp.penalty(n)
	}
	return s
}

// fraction is used/capacity in [0, 1]; a node without capacity counts as
// full.
func fraction(used, capacity int64) float64 {
	if capacity <= 0 {
		return 1
	}
	return min(max(float64(used)/float64(capacity), 0), 1)
}

// commit assigns the resources on node pos and makes the allocation. It
// returns nil when they cannot be assigned after all.
func (g *groupPlacer) commit(pos, cpu int, p *placement) (*caravan.Allocation, error) {
	c := g.c
	n := c.nodes[pos]
	u, err := c.usageAt(pos)
	if err != nil {
		return nil, err
	}
	res, ok := g.ask.assign(n, &u, cpu, c.rng)
	if ok {
		ok, _ = n.Fits(u, &res)
	}
	if !ok {
		return nil, nil
	}
	c.setUsageAt(pos, u.Add(&res))
	a := g.newAlloc(n, res, p)
	if g.antiAffinity {
		g.addCollision(n.ID)
	}
	g.countSpreads(n)
	g.hint = pos
	return a, nil
}

func (g *groupPlacer) newAlloc(n *caravan.Node, res caravan.AllocatedResources, p *placement) *caravan.Allocation {
	c := g.c
	a := &caravan.Allocation{
		ID:            c.newID(),
		EvalID:        c.eval.ID,
		Name:          allocName(c.job.ID, g.tg.Name, p.index),
		JobID:         c.job.ID,
		JobVersion:    c.job.Version,
		TaskGroup:     g.tg.Name,
		Index:         p.index,
		NodeID:        n.ID,
		NodeName:      n.Name,
		Job:           c.job,
		Resources:     res,
		DesiredStatus: caravan.AllocDesiredRun,
		ClientStatus:  caravan.AllocClientPending,
		CreateTime:    c.opts.Now,
		ModifyTime:    c.opts.Now,
	}
	if p.prev != nil {
		a.PreviousAllocation = p.prev.ID
		a.RescheduleTracker = newTracker(p)
	}
	return a
}

// allocName is caravan.AllocName without fmt.
func allocName(jobID, group string, index int) string {
	return jobID + "." + group + "[" + strconv.Itoa(index) + "]"
}

// failureMetric scans every node to explain why nothing fits.
func (g *groupPlacer) failureMetric() (*caravan.AllocMetric, error) {
	m := &caravan.AllocMetric{}
	for _, n := range g.c.nodes {
		m.NodesEvaluated++
		if !n.Ready() {
			m.FilterNode(reasonNotReady)
			continue
		}
		if g.feas.inPool(n) {
			m.NodesInPool++
		}
		if ok, reason := g.feas.check(n); !ok {
			m.FilterNode(reason)
			continue
		}
		u, err := g.c.usage(n.ID)
		if err != nil {
			return nil, err
		}
		if _, dim := g.ask.fit(n, &u); dim != "" {
			m.ExhaustNode(dim)
		}
	}
	return m, nil
}
