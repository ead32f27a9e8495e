package agent

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/allocrunner"
	"github.com/caravan-sched/caravan/internal/taskrunner"
)

// minWatchGap throttles a server whose index does not move.
const minWatchGap = 100 * time.Millisecond

// An allocation on the agent:
//
//	the servers place it ─▶ stored, runner started ─▶ tasks run ...
//	   ─▶ every task dead (Run returns) ─▶ retired: tasks freed in their
//	      drivers, the runner dropped, only how it ended kept (in memory and
//	      in the state file), its directory (logs) kept
//	   ─▶ the servers no longer list it ─▶ destroyed: directory removed,
//	      forgotten
//
// An allocation the servers stop listing while it runs is stopped first,
// then destroyed. A retired allocation costs the agent its final state
// (about a kilobyte), not a runner and its job, for as long as the servers
// keep it.

// allocEntry is one allocation the agent runs or ran.
type allocEntry struct {
	id  string
	dir string
	// modifyIndex and desired are what the agent last acted on (the watch
	// loop's only).
	modifyIndex uint64
	desired     string

	// Under Agent.mu. runner is nil once the allocation is retired; final
	// holds how it ended then. finished: Run returned. retiring: the
	// runner is being retired. destroy: the servers forgot the
	// allocation; it is destroyed once Run returned and it is not being
	// retired.
	runner   *allocrunner.Runner
	final    *caravan.Allocation
	finished bool
	retiring bool
	destroy  bool
}

func stopKill(reason string) taskrunner.Kill {
	return taskrunner.Kill{State: caravan.TaskStateCancelled, Reason: reason}
}

// entries returns the allocations the agent runs or ran.
func (a *Agent) entries() []*allocEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]*allocEntry, 0, len(a.runners))
	for _, e := range a.runners {
		out = append(out, e)
	}
	return out
}

// runnerOf returns the entry's runner, or nil once it is retired.
func (a *Agent) runnerOf(e *allocEntry) *allocrunner.Runner {
	a.mu.Lock()
	defer a.mu.Unlock()
	return e.runner
}

// allocOf returns the allocation as the agent knows it: with its job and
// live task states while it runs, how it ended (without its job) once it
// is retired.
func (a *Agent) allocOf(e *allocEntry) *caravan.Allocation {
	a.mu.Lock()
	r, final := e.runner, e.final
	a.mu.Unlock()
	if r != nil {
		return r.Alloc()
	}
	return final
}

// watchNext says how the next watch query asks.
type watchNext int

const (
	// watchChanges asks for what changes after the answer's index.
	watchChanges watchNext = iota
	// watchIDs asks at once for the ids of every allocation as well: the
	// servers removed some.
	watchIDs
	// watchAll reads everything again: the agent's view and the servers'
	// disagree.
	watchAll
)

// watchLoop keeps a blocking query open for the changes of the node's
// allocations and applies every answer. After a registration it reads
// every allocation; then only what the servers changed since the last
// answer, and every id when the count says some were removed.
func (a *Agent) watchLoop(ctx context.Context) error {
	select {
	case <-a.firstRegistration:
	case <-ctx.Done():
		return nil
	}
	bo := backoff{min: 500 * time.Millisecond, max: 15 * time.Second}
	var since uint64
	withIDs := false
	for ctx.Err() == nil {
		select {
		case <-a.registration:
			since, withIDs = 0, false // registered again: read everything afresh
		default:
		}
		block := since > 0 && !withIDs
		started := time.Now()
		ch, err := a.watchQuery(ctx, since, block, withIDs)
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
		if since > 0 && ch.StateIndex > 0 && ch.StateIndex < since {
			// A server behind the one that answered before: it may not
			// know allocations the agent runs. Wait for it to catch up.
			if !sleep(ctx, minWatchGap) {
				return nil
			}
			continue
		}
		if block && ch.Index == since && time.Since(started) < minWatchGap {
			// A server that does not block: do not spin.
			if !sleep(ctx, minWatchGap) {
				return nil
			}
		}
		// The index goes down when the newest allocations are collected;
		// what the agent saw stays seen.
		next := max(since, ch.Index)
		if ch.Since == 0 {
			next = ch.Index
		}
		switch a.applyChanges(ch) {
		case watchChanges:
			since, withIDs = next, false
		case watchIDs:
			since, withIDs = next, true
		case watchAll:
			since, withIDs = 0, false
		}
	}
	return nil
}

// jobKey names a job version.
type jobKey struct {
	id      string
	version uint64
}

// applyChanges makes the runners match one answer of the watch: new
// allocations start, changed ones are updated (a desired stop stops them),
// and those the servers no longer list are stopped and destroyed. It
// reports how to ask next.
func (a *Agent) applyChanges(ch *api.NodeAllocChanges) watchNext {
	full := ch.Since == 0
	if full {
		clear(a.known)
	}
	jobs := make(map[jobKey]*caravan.Job, len(ch.Jobs))
	for _, j := range ch.Jobs {
		if j != nil {
			jobs[jobKey{j.ID, j.Version}] = j
		}
	}
	var starts, stored []*caravan.Allocation
	type update struct {
		e  *allocEntry
		al *caravan.Allocation
	}
	var updates []update
	for _, al := range ch.Allocs {
		if al == nil || al.ID == "" {
			a.log.Warn("ignoring an allocation without an id from the servers")
			continue
		}
		a.known[al.ID] = al.AllocModifyIndex
		if !caravan.ValidUUID(al.ID) {
			a.log.Warn("ignoring an allocation without a valid id from the servers", "alloc_id", al.ID)
			continue
		}
		if al.NodeID != "" && al.NodeID != a.identity.NodeID {
			continue
		}
		if al.Job == nil {
			al.Job = jobs[jobKey{al.JobID, al.JobVersion}]
		}
		a.mu.Lock()
		e := a.runners[al.ID]
		a.mu.Unlock()
		switch {
		case e == nil && (al.ServerTerminal() || al.ClientTerminal()):
			// Nothing to run (it ended before, or it was stopped before it
			// reached this agent).
		case e == nil && al.Job == nil:
			a.refuse(al.ID, "the allocation arrived without its job")
		case e == nil:
			starts = append(starts, al)
			stored = append(stored, al)
		case al.AllocModifyIndex != e.modifyIndex || al.DesiredStatus != e.desired:
			e.modifyIndex, e.desired = al.AllocModifyIndex, al.DesiredStatus
			r := a.runnerOf(e)
			if r == nil {
				continue // retired: nothing runs any more
			}
			if al.Job == nil {
				al.Job = r.ServerAlloc().Job
			}
			updates = append(updates, update{e, al})
			stored = append(stored, al)
		}
	}
	// One commit for the whole answer, while the new allocations start:
	// their tasks' records wait for it (nothing of an allocation is stored
	// before the allocation). When it fails the allocations run anyway; a
	// restarted agent will not know them.
	ready := make(chan struct{})
	for _, al := range starts {
		a.startAlloc(al, ready)
	}
	if err := a.db.PutAllocs(a.runCtx, stored); err != nil {
		a.log.Error("store allocations", "error", err)
	}
	close(ready)
	for _, u := range updates {
		if r := a.runnerOf(u.e); r != nil {
			r.Update(u.al)
		}
	}
	return a.removeUnlisted(ch, full)
}

// removeUnlisted stops and destroys the allocations the answer shows the
// servers no longer list, and keeps the agent's set of listed ids. A diff
// without ids tells removals only by the count; then the next query asks
// for the ids.
func (a *Agent) removeUnlisted(ch *api.NodeAllocChanges, full bool) watchNext {
	switch {
	case full:
	case ch.IDs != nil:
		listed := make(map[string]uint64, len(ch.IDs))
		for _, id := range ch.IDs {
			listed[id.ID] = id.AllocModifyIndex
		}
		for id := range listed {
			if _, ok := a.known[id]; !ok {
				a.log.Warn("the servers list an allocation the agent never saw; reading every allocation again", "alloc_id", id)
				return watchAll
			}
		}
		a.known = listed
	case len(a.known) > ch.Count:
		return watchIDs
	case len(a.known) < ch.Count:
		a.log.Warn("the servers list more allocations than the agent saw; reading every allocation again",
			"servers", ch.Count, "agent", len(a.known))
		return watchAll
	default:
		return watchChanges
	}
	for _, e := range a.entries() {
		if _, ok := a.known[e.id]; !ok {
			a.removeAlloc(e)
		}
	}
	return watchChanges
}

// startAlloc starts the runner of a new allocation, whose tasks' records
// wait until stored is closed.
func (a *Agent) startAlloc(al *caravan.Allocation, stored <-chan struct{}) {
	e, err := a.newEntry(al, nil, afterStored{stored: stored, p: a.db})
	if err != nil {
		a.refuse(al.ID, err.Error())
		return
	}
	a.log.Info("starting allocation", "alloc_id", al.ID, "job_id", al.JobID, "group", al.TaskGroup)
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

// afterStored holds a task's records back until its allocation is stored.
type afterStored struct {
	stored <-chan struct{}
	p      taskrunner.Persister
}

func (w afterStored) PutTask(ctx context.Context, allocID, task string, rec *taskrunner.Record) error {
	<-w.stored
	return w.p.PutTask(ctx, allocID, task, rec)
}

func (a *Agent) newEntry(al *caravan.Allocation, restore map[string]*taskrunner.Record, persister taskrunner.Persister) (*allocEntry, error) {
	host, _, _ := net.SplitHostPort(a.httpAddr)
	node := a.currentNode()
	dir := filepath.Join(a.allocRoot, al.ID)
	r, err := allocrunner.New(allocrunner.Config{
		Alloc:   al,
		Drivers: a.drivers,
		Dir:     dir,
		Node: taskrunner.NodeInfo{
			ID: a.identity.NodeID, Name: node.Name, Datacenter: node.Datacenter,
			Address: host, MHzPerCore: node.MHzPerCore(),
		},
		TaskUser:       a.cfg.TaskUser,
		AllowRoot:      a.cfg.AllowRoot,
		LogMaxFileSize: a.cfg.LogMaxFileSize,
		LogMaxFiles:    a.cfg.LogMaxFiles,
		Persister:      persister,
		OnUpdate:       a.updates.Add,
		Restore:        restore,
		StatsInterval:  a.cfg.StatsInterval,
		Logger:         a.log,
	})
	if err != nil {
		return nil, err
	}
	return &allocEntry{id: al.ID, dir: dir, runner: r, modifyIndex: al.AllocModifyIndex, desired: al.DesiredStatus}, nil
}

// launch registers the entry and runs it on a goroutine the agent owns;
// once its tasks are dead it is retired, or destroyed when the servers
// forgot it meanwhile.
func (a *Agent) launch(e *allocEntry) {
	a.mu.Lock()
	a.runners[e.id] = e
	a.mu.Unlock()
	a.tracked.Go(func() {
		err := e.runner.Run(a.runCtx)
		a.mu.Lock()
		e.finished = true
		destroy := err == nil && e.destroy
		e.retiring = err == nil && !e.destroy
		retire := e.retiring
		a.mu.Unlock()
		switch {
		case destroy:
			a.destroyAlloc(e)
		case retire:
			a.retire(e)
		}
		// Otherwise Run was detached: the next agent re-attaches.
	})
}

// retire frees the runner of an allocation whose tasks are all dead and
// keeps only how it ended, in memory and in the state file. The servers
// still get its last update: the batcher holds it.
func (a *Agent) retire(e *allocEntry) {
	ctx := context.WithoutCancel(a.runCtx)
	r := e.runner
	var final *caravan.Allocation
	if err := r.FreeTasks(ctx); err != nil {
		// Kept whole: destroying it tries again.
		a.log.Warn("free the tasks of a finished allocation", "alloc_id", e.id, "error", err)
	} else {
		final = r.Alloc().Stub()
		if err := a.db.RetireAlloc(ctx, final); err != nil {
			a.log.Error("store a finished allocation", "alloc_id", e.id, "error", err)
			final = nil
		}
	}
	a.mu.Lock()
	if final != nil {
		e.runner, e.final = nil, final
	}
	e.retiring = false
	destroy := e.destroy
	a.mu.Unlock()
	if destroy {
		a.destroyAlloc(e)
	}
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
	r := e.runner
	now := e.finished && !e.retiring
	a.mu.Unlock()
	if r != nil {
		a.log.Info("the servers no longer list the allocation; stopping and removing it", "alloc_id", e.id)
		r.Stop(stopKill("the servers no longer list the allocation"))
	}
	if now {
		a.tracked.Go(func() { a.destroyAlloc(e) })
	}
}

// destroyAlloc frees what the allocation holds and forgets it.
func (a *Agent) destroyAlloc(e *allocEntry) {
	ctx := context.WithoutCancel(a.runCtx)
	if r := a.runnerOf(e); r != nil {
		if err := r.Destroy(ctx); err != nil {
			a.log.Warn("destroy allocation", "alloc_id", e.id, "error", err)
		}
	} else if err := os.RemoveAll(e.dir); err != nil {
		a.log.Warn("destroy allocation", "alloc_id", e.id, "error", err)
	}
	if err := a.db.DeleteAlloc(ctx, e.id); err != nil {
		a.log.Error("forget allocation", "alloc_id", e.id, "error", err)
	}
	a.updates.Forget(e.id)
	a.mu.Lock()
	delete(a.runners, e.id)
	a.mu.Unlock()
}

// restore starts a runner for every allocation in the state file, and
// keeps the finished ones as they ended. Task runners re-attach to their
// tasks; allocations the servers no longer want are stopped, and those
// they forgot destroyed, at the first answer of the watch.
func (a *Agent) restore() {
	stored, bad, err := a.db.Allocs()
	if err != nil {
		a.log.Error("read agent state; starting without it", "error", err)
		return
	}
	finished, badFinished, err := a.db.Finished()
	if err != nil {
		a.log.Error("read finished allocations; starting without them", "error", err)
	}
	for _, err := range append(bad, badFinished...) {
		a.log.Error("skipping a damaged allocation record", "error", err)
	}
	for _, s := range stored {
		al := s.Alloc
		if !caravan.ValidUUID(al.ID) || al.Job == nil {
			a.log.Error("skipping a stored allocation without id or job", "alloc_id", al.ID)
			continue
		}
		e, err := a.newEntry(al, s.Tasks, a.db)
		if err != nil {
			a.log.Error("restore allocation", "alloc_id", al.ID, "error", err)
			continue
		}
		if al.ServerTerminal() {
			e.runner.Update(al)
		}
		a.launch(e)
	}
	a.mu.Lock()
	for _, f := range finished {
		if !caravan.ValidUUID(f.ID) || a.runners[f.ID] != nil {
			continue
		}
		a.runners[f.ID] = &allocEntry{
			id: f.ID, dir: filepath.Join(a.allocRoot, f.ID), final: f, finished: true,
			modifyIndex: f.AllocModifyIndex, desired: f.DesiredStatus,
		}
	}
	a.mu.Unlock()
	if len(stored)+len(finished) > 0 {
		a.log.Info("restored allocations", "running", len(stored), "finished", len(finished))
	}
}
