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

// evalMonitor follows an evaluation and the allocations of its job with
// blocking queries, printing the evaluation's status changes and each
// placement as it happens, until the evaluation is done. An evaluation
// superseded by a newer one is followed by that one.
//
//	watchEval ───▶ evals  ─┐
//	                       ├─▶ followOne: print changes ─▶ done? ─┬─ cancelled ─▶ follow the newer one
//	watchAllocs ─▶ allocs ─┘                                     └─ complete, failed, blocked ─▶ result
type evalMonitor struct {
	client *api.Client
	out    io.Writer
	jobID  string

	followed map[string]bool   // evaluations followed so far
	shown    map[string]string // allocation id → client status printed
}

// maxEvalHops bounds how many superseding evaluations are followed.
const maxEvalHops = 10

// follow returns the evaluation that ended the work (for a blocked one,
// the evaluation that explains its failures) and the allocations placed.
func (m *evalMonitor) follow(ctx context.Context, evalID string) (*caravan.Evaluation, []*caravan.Allocation, error) {
	m.followed, m.shown = map[string]bool{}, map[string]string{}
	var ev *caravan.Evaluation
	for hop := 0; ; hop++ {
		m.followed[evalID] = true
		var err error
		if ev, err = m.followOne(ctx, evalID); err != nil {
			return nil, nil, err
		}
		if ev.Status != caravan.EvalStatusCancelled || hop == maxEvalHops {
			break
		}
		next, err := m.successor(ctx, ev)
		if err != nil || next == nil {
			break
		}
		fmt.Fprintf(m.out, "==> Evaluation %s was superseded by evaluation %s\n", shortID(ev.ID), shortID(next.ID))
		evalID = next.ID
	}
	if ev.Status == caravan.EvalStatusBlocked && ev.PreviousEval != "" {
		// The evaluation that made the blocked one holds the reasons.
		if prev, _, err := m.client.Evaluation(ctx, ev.PreviousEval, nil); err == nil {
			ev = prev
		}
	}
	// One last read, so that every placement is printed even when the
	// allocation watch lags behind.
	list, _, err := m.client.JobAllocations(ctx, m.jobID, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read the job's allocations: %w", err)
	}
	return ev, m.placements(list), nil
}

// successor returns the newest evaluation of the job created after ev that
// is not cancelled, or nil.
func (m *evalMonitor) successor(ctx context.Context, ev *caravan.Evaluation) (*caravan.Evaluation, error) {
	evals, _, err := m.client.JobEvaluations(ctx, m.jobID, nil)
	if err != nil {
		return nil, err
	}
	for _, e := range newestFirst(evals) {
		if e.CreateIndex > ev.CreateIndex && e.Status != caravan.EvalStatusCancelled && !m.followed[e.ID] {
			return e, nil
		}
	}
	return nil, nil
}

// followOne follows one evaluation until it is terminal or blocked.
func (m *evalMonitor) followOne(ctx context.Context, evalID string) (*caravan.Evaluation, error) {
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
			if ev.Terminal() || ev.Status == caravan.EvalStatusBlocked {
				return ev, nil
			}
		case list := <-allocs:
			m.placements(list)
		case err := <-errs:
			if errors.Is(err, caravan.ErrNotFound) {
				return nil, fmt.Errorf("follow evaluation %s: %w: %w", evalID, errEvalGone, err)
			}
			return nil, fmt.Errorf("follow evaluation %s: %w", evalID, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// placements prints new placements of the followed evaluations and status
// changes of those already shown, and returns their allocations.
func (m *evalMonitor) placements(list []*caravan.Allocation) []*caravan.Allocation {
	var mine []*caravan.Allocation
	for _, a := range list {
		if !m.followed[a.EvalID] {
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

// settle goes on following the placed allocations until none is pending
// (for batch jobs: until all have finished), or until wait passes, and
// returns their newest state.
func (m *evalMonitor) settle(ctx context.Context, placed []*caravan.Allocation, batch bool, wait time.Duration) ([]*caravan.Allocation, bool) {
	settled := func(list []*caravan.Allocation) bool {
		for _, a := range list {
			if a.ClientStatus == caravan.AllocClientPending && !a.ServerTerminal() {
				return false
			}
			if batch && !a.ClientTerminal() && !a.ServerTerminal() {
				return false
			}
		}
		return true
	}
	if len(placed) == 0 || settled(placed) {
		return placed, true
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var index uint64
	for {
		list, meta, err := m.client.JobAllocations(ctx, m.jobID, &api.QueryOptions{Index: index, Wait: monitorWait})
		if err != nil {
			return placed, false
		}
		index = meta.LastIndex
		placed = m.placements(list)
		if settled(placed) {
			return placed, true
		}
	}
}
