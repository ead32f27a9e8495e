package scheduler

// nodeMap maps node ids to values. Most evaluations touch a handful of
// nodes, so the first few entries live in a slice searched linearly and a
// map is made only when it grows past that: a one-allocation evaluation
// allocates no map at all.
type nodeMap[V any] struct {
	small []nodeEntry[V]
	big   map[string]V
}

type nodeEntry[V any] struct {
	id string
	v  V
}

// nodeMapSmall is how many entries stay in the slice.
const nodeMapSmall = 8

func (m *nodeMap[V]) get(id string) (V, bool) {
	if m.big != nil {
		v, ok := m.big[id]
		return v, ok
	}
	for i := range m.small {
		if m.small[i].id == id {
			return m.small[i].v, true
		}
	}
	var zero V
	return zero, false
}

func (m *nodeMap[V]) set(id string, v V) {
	if m.big != nil {
		m.big[id] = v
		return
	}
	for i := range m.small {
		if m.small[i].id == id {
			m.small[i].v = v
			return
		}
	}
	if len(m.small) < nodeMapSmall {
		m.small = append(m.small, nodeEntry[V]{id, v})
		return
	}
	m.big = make(map[string]V, 2*nodeMapSmall)
	for _, e := range m.small {
		m.big[e.id] = e.v
	}
	m.big[id] = v
	m.small = nil
}

// empty reports whether the map holds nothing.
func (m *nodeMap[V]) empty() bool { return m.big == nil && len(m.small) == 0 }
