package caravan

import "slices"

// AllocatedResources is what one allocation holds on its node: the sum of
// its tasks' cpu and memory, the exact cores and the exact ports. The cores
// are handed to the group's tasks in task order, each taking as many as its
// resources.cores asks for.
type AllocatedResources struct {
	CPU    int             `json:"cpu"`
	Memory MemoryMB        `json:"memory"`
	Cores  []int           `json:"cores,omitempty"`
	Ports  []AllocatedPort `json:"ports,omitempty"`
}

// AllocatedPort is one port an allocation holds on its node.
type AllocatedPort struct {
	Label string `json:"label"`
	Value int    `json:"value"`
	To    int    `json:"to,omitempty"`
}

// Port returns the host port with the label, or 0.
func (r *AllocatedResources) Port(label string) int {
	for _, p := range r.Ports {
		if p.Label == label {
			return p.Value
		}
	}
	return 0
}

// TaskCores returns the cores of the allocation that belong to the named
// task of tg.
func (r *AllocatedResources) TaskCores(tg *TaskGroup, task string) []int {
	next := 0
	for _, t := range tg.Tasks {
		n := t.Resources.Cores
		if t.Name == task {
			if next+n > len(r.Cores) {
				return nil
			}
			return r.Cores[next : next+n]
		}
		next += n
	}
	return nil
}

// NodeUsage is what the allocations that are not terminal hold on one node.
// Values are immutable once published in the state store: Add and Remove
// return new values.
type NodeUsage struct {
	CPU    int      `json:"cpu"`
	Memory MemoryMB `json:"memory"`
	// Cores and Ports are sorted.
	Cores  []int `json:"cores,omitempty"`
	Ports  []int `json:"ports,omitempty"`
	Allocs int   `json:"allocs"`
}

// Add returns u with r added.
func (u NodeUsage) Add(r *AllocatedResources) NodeUsage {
	out := NodeUsage{CPU: u.CPU + r.CPU, Memory: u.Memory + r.Memory, Allocs: u.Allocs + 1}
	out.Cores = mergeSorted(u.Cores, r.Cores)
	ports := make([]int, 0, len(r.Ports))
	for _, p := range r.Ports {
		ports = append(ports, p.Value)
	}
	slices.Sort(ports)
	out.Ports = mergeSorted(u.Ports, ports)
	return out
}

// Remove returns u with r taken away.
func (u NodeUsage) Remove(r *AllocatedResources) NodeUsage {
	out := NodeUsage{CPU: u.CPU - r.CPU, Memory: u.Memory - r.Memory, Allocs: u.Allocs - 1}
	if out.Allocs < 0 {
		out.Allocs = 0
	}
	out.Cores = subtractSorted(u.Cores, r.Cores)
	ports := make([]int, 0, len(r.Ports))
	for _, p := range r.Ports {
		ports = append(ports, p.Value)
	}
	out.Ports = subtractSorted(u.Ports, ports)
	return out
}

func mergeSorted(a, b []int) []int {
	if len(b) == 0 {
		return a
	}
	bs := slices.Clone(b)
	slices.Sort(bs)
	out := make([]int, 0, len(a)+len(bs))
	i, j := 0, 0
	for i < len(a) || j < len(bs) {
		switch {
		case j == len(bs) || (i < len(a) && a[i] <= bs[j]):
			out = append(out, a[i])
			i++
		default:
			out = append(out, bs[j])
			j++
		}
	}
	return out
}

func subtractSorted(a, b []int) []int {
	if len(b) == 0 {
		return a
	}
	out := make([]int, 0, len(a))
	for _, x := range a {
		if k := slices.Index(b, x); k >= 0 {
			// Remove one occurrence only.
			b = slices.Delete(slices.Clone(b), k, k+1)
			continue
		}
		out = append(out, x)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Resource dimensions named in placement failures.
const (
	DimensionCPU    = "cpu"
	DimensionMemory = "memory"
	DimensionCores  = "cores"
	DimensionPorts  = "ports"
)

// Capacity is what a node offers to allocations: its resources less what is
// reserved.
func (n *Node) Capacity() (cpu int, memory MemoryMB) {
	return n.Resources.CPU - n.Reserved.CPU, n.Resources.Memory - n.Reserved.Memory
}

// MHzPerCore is the share of the node's CPU that one core gives.
func (n *Node) MHzPerCore() int {
	if len(n.Resources.Cores) == 0 {
		return 0
	}
	return n.Resources.CPU / len(n.Resources.Cores)
}

// Fits reports whether r fits on n on top of u. When it does not, it names
// the first dimension that is exhausted. Exclusive cores count against CPU
// as well (each takes MHzPerCore).
func (n *Node) Fits(u NodeUsage, r *AllocatedResources) (bool, string) {
	cpu, mem := n.Capacity()
	if u.CPU+r.CPU > cpu {
		return false, DimensionCPU
	}
	if u.Memory+r.Memory > mem {
		return false, DimensionMemory
	}
	for _, c := range r.Cores {
		if !slices.Contains(n.Resources.Cores, c) || slices.Contains(n.Reserved.Cores, c) {
			return false, DimensionCores
		}
		if _, found := slices.BinarySearch(u.Cores, c); found {
			return false, DimensionCores
		}
	}
	for i, p := range r.Ports {
		if p.Value < 1 || p.Value > 65535 || slices.Contains(n.Reserved.Ports, p.Value) {
			return false, DimensionPorts
		}
		if _, found := slices.BinarySearch(u.Ports, p.Value); found {
			return false, DimensionPorts
		}
		for _, q := range r.Ports[:i] {
			if q.Value == p.Value {
				return false, DimensionPorts
			}
		}
	}
	return true, ""
}

// FreeCores returns the node's cores that are neither reserved nor used.
func (n *Node) FreeCores(u NodeUsage) []int {
	var free []int
	for _, c := range n.Resources.Cores {
		if slices.Contains(n.Reserved.Cores, c) {
			continue
		}
		if _, used := slices.BinarySearch(u.Cores, c); used {
			continue
		}
		free = append(free, c)
	}
	return free
}
