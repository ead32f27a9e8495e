package state

import (
	"fmt"
	"io"
	"iter"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := New(testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newStoreWithBroker(t testing.TB) (*Store, *events.Broker) {
	t.Helper()
	b := events.NewBroker(1024)
	s, err := New(testLogger(), b)
	if err != nil {
		t.Fatal(err)
	}
	return s, b
}

// uuid returns a fixed UUID for n, so tests read ids in a known order.
func uuid(prefix byte, n int) string {
	return fmt.Sprintf("%c%07x-0000-4000-8000-%012x", prefix, n, n)
}

func nodeID(n int) string  { return uuid('a', n) }
func allocID(n int) string { return uuid('b', n) }
func evalID(n int) string  { return uuid('c', n) }

func testJob(id, typ string, count int) *caravan.Job {
	return &caravan.Job{
		ID: id, Name: id, Type: typ, Priority: 50, NodePool: "default",
		TaskGroups: []*caravan.TaskGroup{{
			Name:  "web",
			Count: &count,
			Tasks: []*caravan.Task{{
				Name: "server", Driver: "exec",
				Config:    caravan.TaskConfig{Command: "/bin/true"},
				Resources: caravan.Resources{CPU: 100, Memory: 64},
			}},
		}},
	}
}

func testNode(n int) *caravan.Node {
	return &caravan.Node{
		ID: nodeID(n), Name: fmt.Sprintf("node-%d", n), Datacenter: "dc1", NodePool: "default",
		Resources:             caravan.NodeResources{CPU: 4000, Memory: 8192, Cores: []int{0, 1, 2, 3}},
		Status:                caravan.NodeStatusReady,
		SchedulingEligibility: caravan.NodeEligible,
	}
}

func testEval(n int, jobID, status string) *caravan.Evaluation {
	return &caravan.Evaluation{ID: evalID(n), JobID: jobID, Type: caravan.JobTypeService, Priority: 50,
		TriggeredBy: caravan.TriggerJobRegister, Status: status}
}

func testAlloc(n int, jobID string, version uint64, node int) *caravan.Allocation {
	return &caravan.Allocation{
		ID: allocID(n), EvalID: evalID(1), Name: caravan.AllocName(jobID, "web", n),
		JobID: jobID, JobVersion: version, TaskGroup: "web", Index: n,
		NodeID: nodeID(node), NodeName: fmt.Sprintf("node-%d", node),
		Resources:     caravan.AllocatedResources{CPU: 100, Memory: 64, Ports: []caravan.AllocatedPort{{Label: "http", Value: 20000 + n}}},
		DesiredStatus: caravan.AllocDesiredRun, ClientStatus: caravan.AllocClientPending,
	}
}

// mustOK fails the test on err.
func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// must returns v, failing the test on err.
func must[T any](t testing.TB) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// collect gathers an iteration, failing the test on err.
func collect[T any](t testing.TB) func(seq iter.Seq[T], err error) []T {
	return func(seq iter.Seq[T], err error) []T {
		t.Helper()
		mustOK(t, err)
		var out []T
		for v := range seq {
			out = append(out, v)
		}
		return out
	}
}

// checkDerived recomputes node usage and job summaries from the allocations
// and compares them with what the store maintained, and checks every
// allocation's job pointer is its stored job version.
func checkDerived(t testing.TB, s *Store) {
	t.Helper()
	snap := s.Snapshot()
	allocs := collect[*caravan.Allocation](t)(snap.Allocs(ListOptions{}))
	usage := map[string]caravan.NodeUsage{}
	summaries := map[string]map[string]caravan.GroupSummary{}
	jobs := collect[*caravan.Job](t)(snap.Jobs(ListOptions{}))
	for _, j := range jobs {
		stored := must[*caravan.JobSummary](t)(snap.JobSummary(j.ID))
		summaries[j.ID] = map[string]caravan.GroupSummary{}
		for g := range stored.Groups {
			summaries[j.ID][g] = caravan.GroupSummary{}
		}
	}
	for _, a := range allocs {
		if !a.Terminal() {
			usage[a.NodeID] = usage[a.NodeID].Add(&a.Resources)
		}
		if g, ok := summaries[a.JobID]; ok {
			sum := &caravan.JobSummary{Groups: g}
			sum.Add(a, +1)
		}
		if a.Job == nil {
			t.Errorf("allocation %s has no job", a.ID)
		} else if v, err := snap.JobVersion(a.JobID, a.JobVersion); err == nil && v != a.Job {
			t.Errorf("allocation %s does not share its job version's pointer", a.ID)
		}
	}
	sets := map[setKey][]string{}
	for _, a := range allocs {
		sets[setKey{tableJobAllocs, a.JobID}] = append(sets[setKey{tableJobAllocs, a.JobID}], a.ID)
		sets[setKey{TableNodeUsage, a.NodeID}] = append(sets[setKey{TableNodeUsage, a.NodeID}], a.ID)
	}
	stored := map[setKey][]string{}
	for _, table := range []string{tableJobAllocs, TableNodeUsage} {
		for _, set := range collect[*allocSet](t)(scanRows[*allocSet](snap, table)) {
			stored[setKey{table, set.Key}] = set.IDs
		}
	}
	if diff := cmp.Diff(sets, stored, cmp.AllowUnexported(setKey{})); diff != "" {
		t.Errorf("allocation sets (-recomputed +stored):\n%s", diff)
	}
	for id, want := range usage {
		got := must[caravan.NodeUsage](t)(snap.NodeUsage(id))
		if diff := cmp.Diff(want, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("usage of node %s (-recomputed +stored):\n%s", id, diff)
		}
	}
	for _, row := range collect[*allocSet](t)(scanRows[*allocSet](snap, TableNodeUsage)) {
		if _, ok := usage[row.Key]; !ok && row.Usage.Allocs != 0 {
			t.Errorf("node %s has usage %+v but no allocations that are not terminal", row.Key, row.Usage)
		}
	}
	for id, want := range summaries {
		got := must[*caravan.JobSummary](t)(snap.JobSummary(id))
		if diff := cmp.Diff(want, got.Groups); diff != "" {
			t.Errorf("summary of job %s (-recomputed +stored):\n%s", id, diff)
		}
	}
	for _, j := range jobs {
		open := false
		for _, e := range must[[]*caravan.Evaluation](t)(snap.EvalsByJob(j.ID)) {
			open = open || e.Status == caravan.EvalStatusPending || e.Status == caravan.EvalStatusBlocked
		}
		sum := &caravan.JobSummary{Groups: summaries[j.ID]}
		if want := caravan.DeriveJobStatus(j, sum, open); j.Status != want {
			t.Errorf("job %s has status %q, want %q", j.ID, j.Status, want)
		}
	}
}

// scanRows iterates any table by id.
func scanRows[T any](snap *Snapshot, table string) (iter.Seq[T], error) {
	it, err := snap.txn.Get(table, indexID)
	if err != nil {
		return nil, err
	}
	return func(yield func(T) bool) {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if !yield(obj.(T)) {
				return
			}
		}
	}, nil
}

// dump returns every table's rows, for comparing two stores.
func dump(t testing.TB, s *Store) map[string][]any {
	t.Helper()
	snap := s.Snapshot()
	out := map[string][]any{}
	for _, table := range slices.Sorted(maps.Keys(schema().Tables)) {
		out[table] = collect[any](t)(scanRows[any](snap, table))
	}
	return out
}
