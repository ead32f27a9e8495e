package state

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/events"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-memdb"
)

// richState builds a state with something in every table: lost and
// running allocations, stopped and purged jobs (whose allocations remain),
// several versions, a drained node, open evaluations, servers.
func richState(t *testing.T) *Store {
	s := lostFixture(t)
	mustOK(t, s.RegisterNode(10, at(5), testNode(2), nil))
	mustOK(t, s.UpdateNodeDrain(11, at(5), nodeID(2), &caravan.DrainStrategy{Deadline: caravan.Duration(time.Hour)}, caravan.NodeIneligible, nil))
	changed := testJob("web", caravan.JobTypeService, 3)
	changed.Meta = map[string]string{"rev": "2"}
	mustOK(t, errOf(s.RegisterJob(12, at(6), changed, testEval(20, "", caravan.EvalStatusPending), false)))
	mustOK(t, errOf(s.RegisterJob(13, at(6), testJob("", caravan.JobTypeBatch, 1), testEval(21, "", caravan.EvalStatusBlocked), false)))
	mustOK(t, errOf(s.RegisterJob(14, at(7), testJob("gone", caravan.JobTypeBatch, 1), nil, false)))
	a := testAlloc(30, "gone", 0, 2)
	a.Resources.Cores = []int{2}
	a.TaskStates = map[string]*caravan.TaskState{"server": {State: caravan.TaskStateRunning, Events: []*caravan.TaskEvent{{Type: caravan.TaskEventStarted, Time: at(8)}}}}
	mustOK(t, s.ApplyPlans(15, at(8), []PlanUpdate{{Allocs: []*caravan.Allocation{a, testAlloc(31, "web", 1, 2)}}}))
	mustOK(t, s.StopJob(16, at(9), "gone", true, nil))
	mustOK(t, errOf(s.RegisterJob(17, at(9), testJob("stopped", caravan.JobTypeService, 1), nil, false)))
	mustOK(t, s.StopJob(18, at(9), "stopped", false, nil))
	mustOK(t, s.UpsertServer(19, ServerMember{ID: "s1", RaftAddr: "127.0.0.1:8300", HTTPAddr: "127.0.0.1:8500"}))
	checkDerived(t, s)
	return s
}

func persist(t testing.TB, s *Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	mustOK(t, s.Snapshot().Persist(&buf))
	return buf.Bytes()
}

func TestPersistRestoreRoundTrip(t *testing.T) {
	s := richState(t)
	data := persist(t, s)
	r := newStore(t)
	mustOK(t, r.Restore(bytes.NewReader(data)))
	if diff := cmp.Diff(dump(t, s), dump(t, r), cmpopts.EquateEmpty(), cmp.AllowUnexported(indexRow{}, sequenceRow{})); diff != "" {
		t.Errorf("restored state differs (-original +restored):\n%s", diff)
	}
	checkDerived(t, r)
	snap := r.Snapshot()
	j := must[*caravan.Job](t)(snap.JobByID("web"))
	v := must[*caravan.Job](t)(snap.JobVersion("web", j.Version))
	if &j.TaskGroups[0] != &v.TaskGroups[0] {
		t.Errorf("restored job does not share its spec with its version")
	}
	// The purged job's allocation keeps its job.
	if a := must[*caravan.Allocation](t)(snap.AllocByID(allocID(30))); a.Job == nil || a.Job.ID != "gone" {
		t.Errorf("allocation of a purged job lost its job: %+v", a.Job)
	}
	// The sequence goes on where it was.
	out := must[RegisteredJob](t)(r.RegisterJob(100, at(20), testJob("", caravan.JobTypeBatch, 1), nil, false))
	if out.JobID != "1002" {
		t.Errorf("next id after restore = %q, want 1002", out.JobID)
	}
	// A second round trip gives the same bytes.
	if again := persist(t, newStoreFrom(t, data)); !bytes.Equal(again, data) {
		t.Errorf("persisting a restored state gives other bytes")
	}
}

func newStoreFrom(t testing.TB, data []byte) *Store {
	s := newStore(t)
	mustOK(t, s.Restore(bytes.NewReader(data)))
	return s
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	good := persist(t, richState(t))
	lines := strings.SplitAfter(string(good), "\n")
	replaceLine := func(prefix, with string) string {
		var b strings.Builder
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				l = with + "\n"
			}
			b.WriteString(l)
		}
		return b.String()
	}
	tests := []struct {
		name string
		data string
	}{
		{"empty", ""},
		{"garbage", "\x00\x01garbage"},
		{"other format", `{"format":"other","version":1}`},
		{"newer version", `{"format":"caravan-state","version":99}`},
		{"unknown section", `{"format":"caravan-state","version":1}` + "\n" + `{"table":"bogus","count":1}` + "\n{}\n"},
		{"negative count", `{"format":"caravan-state","version":1}` + "\n" + `{"table":"nodes","count":-1}`},
		{"truncated", string(good[:len(good)/2])},
		{"no end", strings.Join(lines[:len(lines)-2], "")},
		{"job without its version", replaceLine(`{"table":"job_versions"`, `{"table":"job_versions","count":0}`)},
		{"row of the wrong shape", replaceLine(`{"table":"index"`, `{"table":"index","count":1}`+"\n"+`[1,2,3]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := richState(t)
			before := dump(t, s)
			if err := s.Restore(strings.NewReader(tt.data)); err == nil {
				t.Fatal("restore succeeded")
			}
			if diff := cmp.Diff(before, dump(t, s), cmp.AllowUnexported(indexRow{}, sequenceRow{})); diff != "" {
				t.Errorf("a failed restore changed the state:\n%s", diff)
			}
		})
	}
}

func TestRestoreWakesBlockingQueriesAndResetsEvents(t *testing.T) {
	s, broker := newStoreWithBroker(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	sub, err := broker.Subscribe(events.SubscribeRequest{})
	mustOK(t, err)
	data := persist(t, richState(t))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan uint64, 1)
	go func() {
		idx, _ := s.BlockingQuery(ctx, 1, func(ws memdb.WatchSet, snap *Snapshot) (uint64, error) {
			_, err := snap.NodeByID(nodeID(1))
			return snap.TableIndex(TableNodes), err
		})
		done <- idx
	}()
	time.Sleep(10 * time.Millisecond)
	mustOK(t, s.Restore(bytes.NewReader(data)))
	select {
	case idx := <-done:
		if idx != 11 {
			t.Errorf("index after restore = %d, want 11", idx)
		}
	case <-ctx.Done():
		t.Fatal("blocking query did not wake on restore")
	}
	if _, err := sub.Next(ctx); !errors.Is(err, caravan.ErrConflict) {
		t.Errorf("subscriber after restore: %v, want ErrConflict", err)
	}
}
