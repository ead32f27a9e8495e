package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// monitorWait is how long one blocking query of the monitor may wait.
const monitorWait = 30 * time.Second

// evalMonitor follows one evaluation and the allocations of its job with
// blocking queries, printing the evaluation's status changes and each
// placement as it happens, until the evaluation is terminal.
//
//	watchEval ───▶ evals  ─┐
//	                       ├─▶ follow: print changes ─▶ terminal? ─▶ result
//	watchAllocs ─▶ allocs ─┘
type evalMonitor struct {
	client *api.Client
	out    io.Writer
	jobID  string

	evalID string
	shown  map[string]string // allocation id → client status printed
}

// follow returns the terminal evaluation and the allocations it placed.
func (m *evalMonitor) follow(ctx context.Context, evalID string) (*caravan.Evaluation, []*caravan.Allocation, error) {
	m.evalID, m.shown = evalID, map[string]string{}
	ctx, cancel := context.WithCancel(ctx)
	evals := make(chan *caravan.Evaluation)
	allocs := make(chan []*caravan.Allocation)
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		watch(ctx, errs, evals, func(ctx context.Context, q *api.QueryOptions) (*caravan.Evaluation, *api.QueryMeta, error) {
			return m.client.Evaluation(ctx, evalID, q)
		})
	}()
	go func() {
		defer wg.Done()
		watch(ctx, errs, allocs, func(ctx context.Context, q *api.QueryOptions) ([]*caravan.Allocation, *api.QueryMeta, error) {
			return m.client.JobAllocations(ctx, m.jobID, q)
		})
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	lastStatus := ""
	for {
		select {
		case ev := <-evals:
			if ev.Status != lastStatus {
				fmt.Fprintf(m.out, "==> Evaluation %s %s\n", shortID(ev.ID), describeEval(ev))
				lastStatus = ev.Status
			}
			if !ev.Terminal() {
				continue
			}
			// One last read, so that every placement of the evaluation
			// is printed even when the allocation watch lags behind.
			list, _, err := m.client.JobAllocations(ctx, m.jobID, nil)
			if err != nil {
				return nil, nil, fmt.Errorf("read the job's allocations: %w", err)
			}
			return ev, m.placements(list), nil
		case list := <-allocs:
			m.placements(list)
		case err := <-errs:
			if errors.Is(err, caravan.ErrNotFound) {
				return nil, nil, fmt.Errorf("follow evaluation %s: %w: %w", evalID, errEvalGone, err)
			}
			return nil, nil, fmt.Errorf("follow evaluation %s: %w", evalID, err)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}

// placements prints new placements of the evaluation and status changes of
// those already shown, and returns the evaluation's allocations.
func (m *evalMonitor) placements(list []*caravan.Allocation) []*caravan.Allocation {
	var mine []*caravan.Allocation
	for _, a := range list {
		if a.EvalID != m.evalID {
			continue
		}
		mine = append(mine, a)
		prev, seen := m.shown[a.ID]
		switch {
		case !seen:
			fmt.Fprintf(m.out, "    Placed %s on node %s (allocation %s, %s)\n", a.Name, nodeLabel(a), shortID(a.ID), a.ClientStatus)
		case prev != a.ClientStatus:
			fmt.Fprintf(m.out, "    Allocation %s (%s) is %s\n", shortID(a.ID), a.Name, a.ClientStatus)
		}
		m.shown[a.ID] = a.ClientStatus
	}
	return mine
}

// describeEval renders an evaluation's status with its description.
func describeEval(ev *caravan.Evaluation) string {
	s := ev.Status
	if ev.StatusDescription != "" {
		s += ": " + ev.StatusDescription
	}
	if ev.Status == caravan.EvalStatusComplete && len(ev.FailedTGAllocs) > 0 {
		n := 0
		for _, m := range ev.FailedTGAllocs {
			if m != nil {
				n += m.CoalescedFailures + 1
			}
		}
		s += fmt.Sprintf(", %s not placed", plural(n, "allocation"))
	}
	return s
}

// watch runs a blocking query in a loop, sending every answer to out,
// until ctx ends or a query fails (the error goes to errs).
func watch[T any](ctx context.Context, errs chan<- error, out chan<- T, read func(context.Context, *api.QueryOptions) (T, *api.QueryMeta, error)) {
	var index uint64
	for ctx.Err() == nil {
		v, meta, err := read(ctx, &api.QueryOptions{Index: index, Wait: monitorWait})
		if err != nil {
			if ctx.Err() == nil {
				errs <- err
			}
			return
		}
		select {
		case out <- v:
		case <-ctx.Done():
			return
		}
		if meta == nil || meta.LastIndex <= index {
			// No index to block on: do not spin.
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
		if meta != nil && meta.LastIndex > index {
			index = meta.LastIndex
		}
	}
}
