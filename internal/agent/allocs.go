package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/allocrunner"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

// minWatchGap throttles a server whose index does not move.
const minWatchGap = 100 * time.Millisecond

// allocEntry is one allocation the agent runs.
type allocEntry struct {
	runner *allocrunner.Runner
	// modifyIndex and desired are what the agent last acted on.
	modifyIndex uint64
	desired     string
	// finished: Run returned. destroy: the servers forgot the allocation;
	// it is destroyed once Run returned. Both under Agent.mu.
	finished bool
	destroy  bool
}

func stopKill(reason string) taskrunner.Kill {
	return taskrunner.Kill{State: caravan.TaskStateCancelled, Reason: reason}
}

// entries returns the allocations the agent runs.
func (a *Agent) entries() []*allocEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*allocEntry, 0, len(a.runners))
	for _, e := range a.runners {
		out = append(out, e)
	}
	return out
}

// watchLoop keeps a blocking query open for the node's allocations and
// reconciles the runners with every answer that changed.
func (a *Agent) watchLoop(ctx context.Context) error {
	select {
	case <-a.firstRegistration:
	case <-ctx.Done():
		return nil
	}
	bo := backoff{min: 500 * time.Millisecond, max: 15 * time.Second}
	var index uint64
	for ctx.Err() == nil {
		select {
		case <-a.registration:
			index = 0 // registered again: read everything afresh
		default:
		}
		started := time.Now()
		allocs, meta, err := a.watchQuery(ctx, index)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, caravan.ErrNotFound) {
				a.requestRegister()
			}
			a.callFailed("watch allocations", err)
			if !sleep(ctx, bo.next()) {
				return nil
			}
			continue
		}
		bo.reset()
		if a.conn.contact(time.Now()) {
			a.log.Info("servers reachable again")
		}
		if index != 0 && meta.LastIndex <= index {
			// Nothing changed (the wait ran out), or a server whose index
			// does not move: do not spin.
			if time.Since(started) < minWatchGap && !sleep(ctx, minWatchGap) {
				return nil
			}
			if meta.LastIndex == index {
				continue
			}
		}
		index = meta.LastIndex
		a.reconcile(allocs)
	}
	return nil
}

// reconcile makes the runners match the servers' allocations: new ones
// start, changed ones are updated (a desired stop stops them), and those
// the servers no longer list are stopped and destroyed.
func (a *Agent) reconcile(allocs []*caravan.Allocation) {
	seen := make(map[string]bool, len(allocs))
	for _, al := range allocs {
		if al == nil || !caravan.ValidUUID(al.ID) {
			a.log.Warn("ignoring an allocation without a valid id from the servers")
			continue
		}
		if al.NodeID != "" && al.NodeID != a.identity.NodeID {
			continue
		}
		seen[al.ID] = true
		a.mu.Lock()
		e := a.runners[al.ID]
		a.mu.Unlock()
		switch {
		case e == nil && (al.ServerTerminal() || al.ClientTerminal()):
			// Nothing to run (it ended before, or it was stopped before it
			// reached this agent).
		case e == nil:
			a.startAlloc(al)
		case al.AllocModifyIndex != e.modifyIndex || al.DesiredStatus != e.desired:
			e.modifyIndex, e.desired = al.AllocModifyIndex, al.DesiredStatus
			if al.Job == nil {
				al = al.ShallowCopy()
				al.Job = e.runner.ServerAlloc().Job
			}
			if err := a.db.PutAlloc(a.runCtx, al); err != nil {
				a.log.Error("store allocation", "alloc_id", al.ID, "error", err)
			}
			e.runner.Update(al)
		}
	}
	for _, e := range a.entries() {
		if !seen[e.runner.ID()] {
			a.removeAlloc(e)
		}
	}
}

// startAlloc stores a new allocation and starts its runner.
func (a *Agent) startAlloc(al *caravan.Allocation) {
	log := a.log.With("alloc_id", al.ID)
	if al.Job == nil {
		a.refuse(al.ID, "the allocation arrived without its job")
		return
	}
	if err := a.db.PutAlloc(a.runCtx, al); err != nil {
		// Run it anyway; a restarted agent will not know it.
		log.Error("store allocation", "error", err)
	}
	e, err := a.newEntry(al, nil)
	if err != nil {
		a.refuse(al.ID, err.Error())
		return
	}
	log.Info("starting allocation", "job_id", al.JobID, "group", al.TaskGroup)
	a.launch(e)
}

// refuse reports an allocation the agent cannot run as failed.
func (a *Agent) refuse(id, why string) {
	a.log.Error("cannot run allocation", "alloc_id", id, "reason", why)
	a.updates.Add(&caravan.AllocClientUpdate{
		ID: id, ClientStatus: caravan.AllocClientFailed, ClientDescription: why,
		TerminalReason: caravan.TaskStateFailed,
	})
}

func (a *Agent) newEntry(al *caravan.Allocation, restore map[string]*taskrunner.Record) (*allocEntry, error) {
	host, _, _ := net.SplitHostPort(a.httpAddr)
	node := a.currentNode()
	r, err := allocrunner.New(allocrunner.Config{
		Alloc:   al,
		Drivers: a.drivers,
		Dir:     filepath.Join(a.allocRoot, al.ID),
		Node: taskrunner.NodeInfo{
			ID: a.identity.NodeID, Name: node.Name, Datacenter: node.Datacenter,
			Address: host, MHzPerCore: node.MHzPerCore(),
		},
		TaskUser:       a.cfg.TaskUser,
		AllowRoot:      a.cfg.AllowRoot,
		LogMaxFileSize: a.cfg.LogMaxFileSize,
		LogMaxFiles:    a.cfg.LogMaxFiles,
		Persister:      a.db,
		OnUpdate:       a.updates.Add,
		Restore:        restore,
		StatsInterval:  a.cfg.StatsInterval,
		Logger:         a.log,
	})
	if err != nil {
		return nil, err
	}
	return &allocEntry{runner: r, modifyIndex: al.AllocModifyIndex, desired: al.DesiredStatus}, nil
}

// launch registers the entry and runs it on a goroutine the agent owns.
func (a *Agent) launch(e *allocEntry) {
	a.mu.Lock()
	a.runners[e.runner.ID()] = e
	a.mu.Unlock()
	a.tracked.Go(func() {
		err := e.runner.Run(a.runCtx)
		a.mu.Lock()
		e.finished = true
		destroy := e.destroy
		a.mu.Unlock()
		if err == nil && destroy {
			a.destroyAlloc(e)
		}
	})
}

// removeAlloc stops an allocation the servers no longer list, and destroys
// it once its tasks are dead.
func (a *Agent) removeAlloc(e *allocEntry) {
	a.mu.Lock()
	if e.destroy {
		a.mu.Unlock()
		return
	}
	e.destroy = true
	finished := e.finished
	a.mu.Unlock()
	a.log.Info("the servers no longer list the allocation; stopping and removing it", "alloc_id", e.runner.ID())
	e.runner.Stop(stopKill("the servers no longer list the allocation"))
	if finished {
		a.tracked.Go(func() { a.destroyAlloc(e) })
	}
}

// destroyAlloc frees what the allocation holds and forgets it.
func (a *Agent) destroyAlloc(e *allocEntry) {
	id := e.runner.ID()
	ctx := context.WithoutCancel(a.runCtx)
	if err := e.runner.Destroy(ctx); err != nil {
		a.log.Warn("destroy allocation", "alloc_id", id, "error", err)
	}
	if err := a.db.DeleteAlloc(ctx, id); err != nil {
		a.log.Error("forget allocation", "alloc_id", id, "error", err)
	}
	a.updates.Forget(id)
	a.mu.Lock()
	delete(a.runners, id)
	a.mu.Unlock()
}

// restore starts a runner for every allocation in the state file. Task
// runners re-attach to their tasks; allocations the servers no longer want
// are stopped at the first answer of the watch.
func (a *Agent) restore() {
	stored, bad, err := a.db.Allocs()
	if err != nil {
		a.log.Error("read agent state; starting without it", "error", err)
		return
	}
	for _, err := range bad {
		a.log.Error("skipping a damaged allocation record", "error", err)
	}
	for _, s := range stored {
		al := s.Alloc
		if !caravan.ValidUUID(al.ID) || al.Job == nil {
			a.log.Error("skipping a stored allocation without id or job", "alloc_id", al.ID)
			continue
		}
		e, err := a.newEntry(al, s.Tasks)
		if err != nil {
			a.log.Error("restore allocation", "alloc_id", al.ID, "error", err)
			continue
		}
		if al.ServerTerminal() {
			e.runner.Update(al)
		}
		a.launch(e)
	}
	if len(stored) > 0 {
		a.log.Info("restored allocations", "count", len(stored))
	}
}
