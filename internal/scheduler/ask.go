package scheduler

import (
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/caravan-sched/caravan"
)

// ask is what one allocation of a task group needs on a node, summed over
// its tasks.
type ask struct {
	cpu     int // MHz, without the cores
	cores   int
	mem     caravan.MemoryMB
	static  []caravan.Port // fixed host ports
	dynamic []caravan.Port // ports the scheduler picks
	// impossible names a dimension no node can satisfy (a static port
	// asked twice, out of range).
	impossible string
}

// newAsk sums the group's tasks. Negative amounts count as zero.
func newAsk(tg *caravan.TaskGroup) ask {
	var a ask
	for _, t := range tg.Tasks {
		if t == nil {
			continue
		}
		r := t.Resources
		a.cpu += max(r.CPU, 0)
		a.cores += max(r.Cores, 0)
		a.mem += max(r.Memory, 0)
		for _, p := range r.Ports {
			switch {
			case p.Value == 0:
				a.dynamic = append(a.dynamic, p)
			case p.Value < 0 || p.Value > 65535:
				a.impossible = caravan.DimensionPorts
			default:
				for _, q := range a.static {
					if q.Value == p.Value {
						a.impossible = caravan.DimensionPorts
					}
				}
				a.static = append(a.static, p)
			}
		}
	}
	return a
}

// fit checks the ask against node n with usage u. It returns the cpu the
// allocation takes on n (cores count at n's MHz per core) and the first
// exhausted dimension, or "" when it fits.
func (a *ask) fit(n *caravan.Node, u *caravan.NodeUsage) (int, string) {
	if a.impossible != "" {
		return 0, a.impossible
	}
	capCPU, capMem := n.Capacity()
	cpu := a.cpu + a.cores*n.MHzPerCore()
	if u.CPU+cpu > capCPU {
		return cpu, caravan.DimensionCPU
	}
	if u.Memory+a.mem > capMem {
		return cpu, caravan.DimensionMemory
	}
	if a.cores > 0 && freeCoreCount(n, u, a.cores) < a.cores {
		return cpu, caravan.DimensionCores
	}
	for _, p := range a.static {
		if portTaken(n, u, p.Value) {
			return cpu, caravan.DimensionPorts
		}
	}
	if len(a.dynamic) > 0 && a.freeDynamic(n, u) < len(a.dynamic) {
		return cpu, caravan.DimensionPorts
	}
	return cpu, ""
}

// freeCoreCount counts n's free cores, stopping at enough.
func freeCoreCount(n *caravan.Node, u *caravan.NodeUsage, enough int) int {
	free := 0
	for _, c := range n.Resources.Cores {
		if slices.Contains(n.Reserved.Cores, c) {
			continue
		}
		if _, used := slices.BinarySearch(u.Cores, c); used {
			continue
		}
		if free++; free >= enough {
			break
		}
	}
	return free
}

func portTaken(n *caravan.Node, u *caravan.NodeUsage, p int) bool {
	if slices.Contains(n.Reserved.Ports, p) {
		return true
	}
	_, used := slices.BinarySearch(u.Ports, p)
	return used
}

// dynamicRange returns n's range for dynamic ports, with the defaults.
func dynamicRange(n *caravan.Node) (int, int) {
	lo, hi := n.Resources.MinDynamicPort, n.Resources.MaxDynamicPort
	if lo == 0 {
		lo = caravan.DefaultMinDynamicPort
	}
	if hi == 0 {
		hi = caravan.DefaultMaxDynamicPort
	}
	return max(lo, 1), min(hi, 65535)
}

// freeDynamic counts (a lower bound of) the ports free in n's dynamic
// range once the ask's static ports are taken.
func (a *ask) freeDynamic(n *caravan.Node, u *caravan.NodeUsage) int {
	lo, hi := dynamicRange(n)
	if lo > hi {
		return 0
	}
	i := sort.SearchInts(u.Ports, lo)
	j := sort.SearchInts(u.Ports, hi+1)
	free := hi - lo + 1 - (j - i)
	for _, p := range n.Reserved.Ports {
		if p >= lo && p <= hi {
			free--
		}
	}
	for _, p := range a.static {
		if p.Value >= lo && p.Value <= hi {
			free--
		}
	}
	return free
}

// assign builds the allocation's resources on n: cpu, memory, the lowest
// free cores, the static ports and dynamic ports picked at random (from
// rng) in n's range. ok is false when a dynamic port could not be found.
func (a *ask) assign(n *caravan.Node, u *caravan.NodeUsage, cpu int, rng *rand.Rand) (caravan.AllocatedResources, bool) {
	res := caravan.AllocatedResources{CPU: cpu, Memory: a.mem}
	if a.cores > 0 {
		free := n.FreeCores(*u)
		if len(free) < a.cores {
			return res, false
		}
		res.Cores = free[:a.cores:a.cores]
	}
	if len(a.static)+len(a.dynamic) == 0 {
		return res, true
	}
	res.Ports = make([]caravan.AllocatedPort, 0, len(a.static)+len(a.dynamic))
	for _, p := range a.static {
		res.Ports = append(res.Ports, caravan.AllocatedPort{Label: p.Label, Value: p.Value, To: portTo(p.To, p.Value)})
	}
	for _, p := range a.dynamic {
		v := pickPort(n, u, res.Ports, rng)
		if v == 0 {
			return res, false
		}
		res.Ports = append(res.Ports, caravan.AllocatedPort{Label: p.Label, Value: v, To: portTo(p.To, v)})
	}
	return res, true
}

func portTo(to, host int) int {
	if to > 0 {
		return to
	}
	return host
}

// pickPort picks a free port of n's dynamic range: a few random tries,
// then a scan from a random start. It returns 0 when none is free.
func pickPort(n *caravan.Node, u *caravan.NodeUsage, taken []caravan.AllocatedPort, rng *rand.Rand) int {
	lo, hi := dynamicRange(n)
	if lo > hi {
		return 0
	}
	span := hi - lo + 1
	free := func(p int) bool {
		if portTaken(n, u, p) {
			return false
		}
		for _, t := range taken {
			if t.Value == p {
				return false
			}
		}
		return true
	}
	for range 16 {
		if p := lo + rng.IntN(span); free(p) {
			return p
		}
	}
	start := rng.IntN(span)
	for k := range span {
		if p := lo + (start+k)%span; free(p) {
			return p
		}
	}
	return 0
}
