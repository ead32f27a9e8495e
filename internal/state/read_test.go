package state

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-memdb"
)

func TestJobsPaging(t *testing.T) {
	s := newStore(t)
	for i, id := range []string{"api", "app-1", "app-2", "app-3", "batch", "web"} {
		mustOK(t, errOf(s.RegisterJob(uint64(i+1), at(i), testJob(id, caravan.JobTypeService, 1), nil, false)))
	}
	tests := []struct {
		name string
		opts ListOptions
		want []string
	}{
		{"all", ListOptions{}, []string{"api", "app-1", "app-2", "app-3", "batch", "web"}},
		{"prefix", ListOptions{Prefix: "app"}, []string{"app-1", "app-2", "app-3"}},
		{"start", ListOptions{Start: "app-3"}, []string{"app-3", "batch", "web"}},
		{"prefix and start", ListOptions{Prefix: "app", Start: "app-2"}, []string{"app-2", "app-3"}},
		{"start before prefix", ListOptions{Prefix: "b", Start: "a"}, []string{"batch"}},
		{"start after prefix range", ListOptions{Prefix: "app", Start: "b"}, nil},
		{"no match", ListOptions{Prefix: "zzz"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for j := range must[iter.Seq[*caravan.Job]](t)(s.Snapshot().Jobs(tt.opts)) {
				got = append(got, j.ID)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
	// Stopping early works.
	n := 0
	for range must[iter.Seq[*caravan.Job]](t)(s.Snapshot().Jobs(ListOptions{})) {
		n++
		if n == 2 {
			break
		}
	}
}

func TestLookupsReturnNotFound(t *testing.T) {
	snap := newStore(t).Snapshot()
	tests := []struct {
		name string
		err  error
	}{
		{"job", errOf(snap.JobByID("x"))},
		{"scheduler job", errOf(snap.Job("x"))},
		{"job version", errOf(snap.JobVersion("x", 0))},
		{"job versions", errOf(snap.JobVersions("x"))},
		{"summary", errOf(snap.JobSummary("x"))},
		{"eval", errOf(snap.EvalByID("x"))},
		{"alloc", errOf(snap.AllocByID("x"))},
		{"node", errOf(snap.NodeByID("x"))},
		{"scheduler node", errOf(snap.Node("x"))},
		{"usage", errOf(snap.NodeUsage("x"))},
		{"allocations of an unknown eval", errOf(snap.AllocsByEval("x"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, caravan.ErrNotFound) {
				t.Errorf("error = %v, want ErrNotFound", tt.err)
			}
		})
	}
	for _, list := range []error{errOf(snap.EvalsByJob("x")), errOf(snap.AllocsByJob("x")), errOf(snap.AllocsByNode("x")), errOf(snap.Servers())} {
		if list != nil {
			t.Errorf("an empty list is not an error: %v", list)
		}
	}
}

func TestNodesAreCachedUntilTheTableChanges(t *testing.T) {
	s := newStore(t)
	for i := 3; i >= 1; i-- {
		mustOK(t, s.RegisterNode(uint64(4-i), at(0), testNode(i), nil))
	}
	first := must[[]*caravan.Node](t)(s.Snapshot().Nodes())
	if len(first) != 3 || first[0].ID != nodeID(1) || first[2].ID != nodeID(3) {
		t.Fatalf("nodes not sorted by id: %v", first)
	}
	// Writes to other tables keep the cached list.
	mustOK(t, errOf(s.RegisterJob(10, at(1), testJob("web", caravan.JobTypeService, 1), nil, false)))
	second := must[[]*caravan.Node](t)(s.Snapshot().Nodes())
	if &first[0] != &second[0] {
		t.Errorf("the node list was built again without a node change")
	}
	mustOK(t, s.UpdateNodeEligibility(11, at(2), nodeID(2), caravan.NodeIneligible, nil))
	third := must[[]*caravan.Node](t)(s.Snapshot().Nodes())
	if &first[0] == &third[0] || third[1].SchedulingEligibility != caravan.NodeIneligible {
		t.Errorf("the node list was not built again after a node change")
	}
	// An old snapshot still sees its own nodes.
	old := s.Snapshot()
	mustOK(t, s.DeregisterNodes(12, []string{nodeID(3)}))
	if got := must[[]*caravan.Node](t)(old.Nodes()); len(got) != 3 {
		t.Errorf("old snapshot sees %d nodes, want 3", len(got))
	}
	if got := must[[]*caravan.Node](t)(s.Snapshot().Nodes()); len(got) != 2 {
		t.Errorf("new snapshot sees %d nodes, want 2", len(got))
	}
}

func TestServers(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.UpsertServer(1, ServerMember{ID: "s2", RaftAddr: "10.0.0.2:8300", HTTPAddr: "10.0.0.2:8500"}))
	mustOK(t, s.UpsertServer(2, ServerMember{ID: "s1", RaftAddr: "10.0.0.1:8300", HTTPAddr: "10.0.0.1:8500"}))
	mustOK(t, s.UpsertServer(3, ServerMember{ID: "s2", RaftAddr: "10.0.0.2:8300", HTTPAddr: "10.0.0.2:9500"}))
	mustOK(t, s.RemoveServer(4, "s9"))
	got := must[[]*ServerMember](t)(s.Snapshot().Servers())
	want := []*ServerMember{{ID: "s1", RaftAddr: "10.0.0.1:8300", HTTPAddr: "10.0.0.1:8500"}, {ID: "s2", RaftAddr: "10.0.0.2:8300", HTTPAddr: "10.0.0.2:9500"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("servers (-want +got):\n%s", diff)
	}
	mustOK(t, s.RemoveServer(5, "s1"))
	if got := must[[]*ServerMember](t)(s.Snapshot().Servers()); len(got) != 1 {
		t.Errorf("servers after remove = %d", len(got))
	}
	if err := s.UpsertServer(6, ServerMember{}); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("server without id: %v", err)
	}
	if got := s.Snapshot().TableIndex(TableServers); got != 5 {
		t.Errorf("servers index = %d, want 5 (removing an unknown server writes nothing)", got)
	}
}

func TestReap(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	changed := testJob("web", caravan.JobTypeService, 2)
	changed.Priority = 90
	mustOK(t, errOf(s.RegisterJob(5, at(2), changed, nil, false)))
	mustOK(t, errOf(s.RegisterJob(6, at(2), testJob("old", caravan.JobTypeBatch, 1), nil, false)))
	mustOK(t, s.Reap(7, Reap{
		EvalIDs:     []string{evalID(1), evalID(99)},
		AllocIDs:    []string{allocID(1), allocID(99)},
		JobIDs:      []string{"old", "unknown"},
		JobVersions: []JobVersionRef{{"web", 0}, {"web", 1}, {"web", 5}},
	}))
	snap := s.Snapshot()
	if _, err := snap.EvalByID(evalID(1)); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("reaped eval: %v", err)
	}
	if _, err := snap.AllocByID(allocID(1)); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("reaped alloc: %v", err)
	}
	if _, err := snap.JobByID("old"); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("reaped job: %v", err)
	}
	// Version 0 is still run by allocation 2, version 1 is current.
	if got := must[[]*caravan.Job](t)(snap.JobVersions("web")); len(got) != 2 {
		t.Errorf("versions kept = %d, want 2", len(got))
	}
	if u := must[caravan.NodeUsage](t)(snap.NodeUsage(nodeID(1))); u.Allocs != 1 {
		t.Errorf("usage after reaping = %+v", u)
	}
	checkDerived(t, s)
	mustOK(t, s.Reap(8, Reap{AllocIDs: []string{allocID(2)}, JobVersions: []JobVersionRef{{"web", 0}}}))
	if got := must[[]*caravan.Job](t)(s.Snapshot().JobVersions("web")); len(got) != 1 {
		t.Errorf("versions kept = %d, want 1", len(got))
	}
	checkDerived(t, s)
}

func TestBlockingQuery(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.RegisterNode(5, at(0), testNode(1), nil))
	allocsOfNode := func(ws memdb.WatchSet, snap *Snapshot) (uint64, error) {
		if _, err := snap.AllocsByNode(nodeID(1)); err != nil {
			return 0, err
		}
		return max(snap.TableIndex(TableAllocs), 1), nil
	}

	t.Run("zero index does not block", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if idx := must[uint64](t)(s.BlockingQuery(ctx, 0, allocsOfNode)); idx != 1 {
			t.Errorf("index = %d", idx)
		}
	})
	t.Run("times out with the current index", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		if idx := must[uint64](t)(s.BlockingQuery(ctx, 1, allocsOfNode)); idx != 1 {
			t.Errorf("index = %d", idx)
		}
	})
	t.Run("wakes on a write", func(t *testing.T) {
		mustOK(t, errOf(s.RegisterJob(6, at(0), testJob("web", caravan.JobTypeService, 1), nil, false)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done := make(chan uint64, 1)
		go func() {
			idx, _ := s.BlockingQuery(ctx, 1, allocsOfNode)
			done <- idx
		}()
		time.Sleep(10 * time.Millisecond)
		// A write elsewhere does not end the query...
		mustOK(t, s.UpsertServer(7, ServerMember{ID: "s1"}))
		mustOK(t, s.ApplyPlans(8, at(1), []PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(1, "web", 0, 1)}}}))
		select {
		case idx := <-done:
			if idx != 8 {
				t.Errorf("index = %d, want 8", idx)
			}
		case <-ctx.Done():
			t.Fatal("blocking query did not wake")
		}
	})
	t.Run("errors return at once", func(t *testing.T) {
		boom := fmt.Errorf("boom: %w", caravan.ErrInvalid)
		_, err := s.BlockingQuery(context.Background(), 100, func(memdb.WatchSet, *Snapshot) (uint64, error) { return 0, boom })
		if !errors.Is(err, boom) {
			t.Errorf("error = %v", err)
		}
	})
}

func TestEventsFollowCommits(t *testing.T) {
	s, broker := newStoreWithBroker(t)
	sub, err := broker.Subscribe(events.SubscribeRequest{})
	mustOK(t, err)
	defer sub.Close()
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, errOf(s.RegisterJob(2, at(0), testJob("web", caravan.JobTypeService, 1), testEval(1, "", caravan.EvalStatusPending), false)))
	_, err = s.RegisterJob(3, at(0), nil, nil, false) // fails: no events
	if err == nil {
		t.Fatal("nil job registered")
	}
	mustOK(t, s.ApplyPlans(4, at(1), []PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(1, "web", 0, 1)},
		Evals: []*caravan.Evaluation{testEval(1, "web", caravan.EvalStatusComplete)}}}))
	mustOK(t, s.UpdateAllocsFromClient(5, at(2), nodeID(1), []*caravan.AllocClientUpdate{update(1, "running", nil)}, nil))
	mustOK(t, s.StopJob(6, at(3), "web", false, nil))
	mustOK(t, s.UpdateNodeStatus(7, at(4), nodeID(1), caravan.NodeStatusDown, "", nil))
	mustOK(t, s.Reap(8, Reap{AllocIDs: []string{allocID(1)}, EvalIDs: []string{evalID(1)}, JobIDs: []string{"web"}}))
	mustOK(t, s.DeregisterNodes(9, []string{nodeID(1)}))

	type seen struct {
		Index uint64
		Type  string
	}
	var got []seen
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for len(got) < 14 {
		evs, err := sub.Next(ctx)
		mustOK(t, err)
		for _, e := range evs {
			got = append(got, seen{e.Index, e.Type})
			if a, ok := e.Payload.(*caravan.Allocation); ok && a.Job != nil {
				t.Errorf("allocation event carries the job")
			}
			if n, ok := e.Payload.(*caravan.Node); ok && n.SecretID != "" {
				t.Errorf("node event carries the secret")
			}
		}
	}
	want := []seen{
		{1, events.NodeRegistered},
		{2, events.JobRegistered}, {2, events.EvaluationUpdated},
		{4, events.AllocationCreated}, {4, events.EvaluationUpdated}, {4, events.JobUpdated},
		{5, events.AllocationUpdated},
		{6, events.JobStopped},
		{7, events.NodeUpdated}, {7, events.AllocationUpdated},
		{8, events.EvaluationDeleted}, {8, events.AllocationDeleted}, {8, events.JobDeregistered},
		{9, events.NodeDeregistered},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}
