package server

import (
	"fmt"
	"iter"
	"strings"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
)

type stateplan = state.PlanUpdate

// uniquePrefix finds the one object whose id starts with prefix.
func uniquePrefix[T any](list func(state.ListOptions) (iter.Seq[T], error), prefix, kind string, id func(T) string) (T, error) {
	var zero T
	seq, err := list(state.ListOptions{Prefix: prefix})
	if err != nil {
		return zero, err
	}
	var found T
	n := 0
	for v := range seq {
		if n == 1 {
			return zero, fmt.Errorf("%s id prefix %q matches more than one (%s, %s…): %w", kind, prefix, id(found), id(v), caravan.ErrInvalid)
		}
		found, n = v, n+1
	}
	if n == 0 {
		return zero, fmt.Errorf("%s %q: %w", kind, prefix, caravan.ErrNotFound)
	}
	return found, nil
}

// nodeList adapts the cached node slice to the list form uniquePrefix takes.
func nodeList(snap *state.Snapshot) func(state.ListOptions) (iter.Seq[*caravan.Node], error) {
	return func(opts state.ListOptions) (iter.Seq[*caravan.Node], error) {
		nodes, err := snap.Nodes()
		if err != nil {
			return nil, err
		}
		return func(yield func(*caravan.Node) bool) {
			for _, n := range nodes {
				if strings.HasPrefix(n.ID, opts.Prefix) && !yield(n) {
					return
				}
			}
		}, nil
	}
}
