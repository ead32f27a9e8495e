package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

var t0 = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func newFSM(t testing.TB) (*FSM, *state.Store) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := state.New(logger, nil)
	if err != nil {
		t.Fatal(err)
	}
	return New(s, logger), s
}

func entry(t testing.TB, mt MessageType, payload any) []byte {
	t.Helper()
	b, err := Encode(mt, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// apply applies data at index and returns the response or error.
func apply(f *FSM, index uint64, data []byte) (*Response, error) {
	switch v := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(type) {
	case *Response:
		return v, nil
	case error:
		return nil, v
	default:
		return nil, fmt.Errorf("Apply returned %T", v)
	}
}

func uuid(prefix byte, n int) string { return fmt.Sprintf("%c%07x-0000-4000-8000-%012x", prefix, n, n) }

func testJob(id string, count int) *caravan.Job {
	return &caravan.Job{ID: id, Type: caravan.JobTypeService, Priority: 50, NodePool: "default",
		TaskGroups: []*caravan.TaskGroup{{Name: "web", Count: &count, Tasks: []*caravan.Task{{
			Name: "server", Driver: "exec", Config: caravan.TaskConfig{Command: "/bin/true"},
			Resources: caravan.Resources{CPU: 100, Memory: 64}}}}}}
}

func testNode(n int) *caravan.Node {
	return &caravan.Node{ID: uuid('a', n), Name: fmt.Sprintf("node-%d", n), Datacenter: "dc1", NodePool: "default",
		Resources: caravan.NodeResources{CPU: 1 << 20, Memory: 1 << 30}, Status: caravan.NodeStatusReady,
		SchedulingEligibility: caravan.NodeEligible}
}

func testEval(n int, jobID, status string) *caravan.Evaluation {
	return &caravan.Evaluation{ID: uuid('c', n), JobID: jobID, Type: caravan.JobTypeService, Priority: 50,
		TriggeredBy: caravan.TriggerJobRegister, Status: status}
}

func testAlloc(n int, jobID string, node int) *caravan.Allocation {
	return &caravan.Allocation{ID: uuid('b', n), EvalID: uuid('c', 1), Name: caravan.AllocName(jobID, "web", n),
		JobID: jobID, TaskGroup: "web", Index: n, NodeID: uuid('a', node), NodeName: fmt.Sprintf("node-%d", node),
		Resources:     caravan.AllocatedResources{CPU: 100, Memory: 64},
		DesiredStatus: caravan.AllocDesiredRun, ClientStatus: caravan.AllocClientPending}
}

func TestApplyEveryCommand(t *testing.T) {
	f, s := newFSM(t)
	tests := []struct {
		name    string
		mt      MessageType
		payload any
		want    *Response
		wantErr error
	}{
		{"register node", NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(1)}, &Response{}, nil},
		{"register job", JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("", 2), Eval: testEval(1, "", caravan.EvalStatusPending)},
			&Response{JobID: "1001"}, nil},
		{"register again with force", JobRegister, JobRegisterRequest{Time: t0, Job: testJob("1001", 2), ForceNewVersion: true},
			&Response{JobID: "1001", JobVersion: 1}, nil},
		{"plan", PlanApply, &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{{EvalID: uuid('c', 1), JobID: "1001",
			Allocs: []*caravan.Allocation{withVersion(testAlloc(1, "1001", 1), 1), withVersion(testAlloc(2, "1001", 1), 1)},
			Evals:  []*caravan.Evaluation{testEval(1, "1001", caravan.EvalStatusComplete)}}}}, &Response{}, nil},
		{"client update", AllocClientUpdate, &AllocClientUpdateRequest{Time: t0, NodeID: uuid('a', 1),
			Updates: []*caravan.AllocClientUpdate{{ID: uuid('b', 1), ClientStatus: caravan.AllocClientRunning}}}, &Response{}, nil},
		{"eval upsert", EvalUpsert, &EvalUpsertRequest{Time: t0, Evals: []*caravan.Evaluation{testEval(2, "1001", caravan.EvalStatusBlocked)}}, &Response{}, nil},
		{"drain", NodeDrain, &NodeDrainRequest{Time: t0, NodeID: uuid('a', 1), Drain: &caravan.DrainStrategy{}}, &Response{}, nil},
		{"eligibility", NodeEligibility, &NodeEligibilityRequest{Time: t0, NodeID: uuid('a', 1), Eligibility: caravan.NodeIneligible}, &Response{}, nil},
		{"node down", NodeStatus, &NodeStatusRequest{Time: t0, NodeID: uuid('a', 1), Status: caravan.NodeStatusDown}, &Response{}, nil},
		{"server member", ServerMember, &ServerMemberRequest{Time: t0, Member: state.ServerMember{ID: "s1", HTTPAddr: "h:1"}}, &Response{}, nil},
		{"server removed", ServerMember, &ServerMemberRequest{Time: t0, Member: state.ServerMember{ID: "s1"}, Remove: true}, &Response{}, nil},
		{"stop job", JobStop, &JobStopRequest{Time: t0, JobID: "1001"}, &Response{JobID: "1001"}, nil},
		{"stop unknown job", JobStop, &JobStopRequest{Time: t0, JobID: "nope"}, nil, caravan.ErrNotFound},
		{"reap", Reap, &ReapRequest{Time: t0, Reap: state.Reap{AllocIDs: []string{uuid('b', 1)}, EvalIDs: []string{uuid('c', 2)}}}, &Response{}, nil},
		{"deregister node", NodeDeregister, &NodeDeregisterRequest{Time: t0, NodeIDs: []string{uuid('a', 1)}}, &Response{}, nil},
		{"deregister unknown node", NodeDeregister, &NodeDeregisterRequest{Time: t0, NodeIDs: []string{uuid('a', 1)}}, nil, caravan.ErrNotFound},
	}
	for i, tt := range tests {
		index := uint64(i + 1)
		resp, err := apply(f, index, entry(t, tt.mt, tt.payload))
		if !errors.Is(err, tt.wantErr) {
			t.Fatalf("%s: error = %v, want %v", tt.name, err, tt.wantErr)
		}
		if tt.want != nil {
			tt.want.Index = index
		}
		if diff := cmp.Diff(tt.want, resp); diff != "" {
			t.Errorf("%s: response (-want +got):\n%s", tt.name, diff)
		}
	}
	snap := s.Snapshot()
	a := must(snap.AllocByID(uuid('b', 2)))
	if a.ClientStatus != caravan.AllocClientLost || a.Job == nil || a.Job.Version != 1 {
		t.Errorf("allocation 2: status %q, job %v", a.ClientStatus, a.Job)
	}
	if j := must(snap.JobByID("1001")); !j.Stop {
		t.Errorf("job not stopped")
	}
	if _, err := snap.AllocByID(uuid('b', 1)); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("reaped allocation: %v", err)
	}
}

func withVersion(a *caravan.Allocation, v uint64) *caravan.Allocation {
	a.JobVersion = v
	return a
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestApplyBadEntries(t *testing.T) {
	good := entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("web", 1)})
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"type zero", []byte{0, '{', '}'}},
		{"unknown type", append([]byte{200}, good[1:]...)},
		{"type only", good[:1]},
		{"truncated", good[:len(good)/2]},
		{"not json", []byte{byte(JobRegister), 0xff, 0xfe}},
		{"wrong shape", append([]byte{byte(PlanApply)}, `{"plans":{"a":1}}`...)},
		{"null job", append([]byte{byte(JobRegister)}, `{"job":null}`...)},
		{"null plan entries", append([]byte{byte(PlanApply)}, `{"plans":[{"allocs":[null]}]}`...)},
		{"bad duration", append([]byte{byte(NodeDrain)}, `{"node_id":"x","drain":{"deadline":"soon"}}`...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, s := newFSM(t)
			_, err := apply(f, 1, tt.data)
			if !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("error = %v, want ErrInvalid", err)
			}
			if got := s.LatestIndex(); got != 0 {
				t.Errorf("a bad entry wrote at index %d", got)
			}
		})
	}
}

func TestApplyIgnoresOtherLogTypes(t *testing.T) {
	f, _ := newFSM(t)
	if got := f.Apply(&raft.Log{Index: 1, Type: raft.LogNoop}); got != nil {
		t.Errorf("Apply of a no-op = %v", got)
	}
}

func TestEncode(t *testing.T) {
	t.Run("wrong payload", func(t *testing.T) {
		if _, err := Encode(JobRegister, &JobStopRequest{}); !errors.Is(err, caravan.ErrInvalid) {
			t.Errorf("error = %v", err)
		}
		if _, err := Encode(JobRegister, (*JobRegisterRequest)(nil)); !errors.Is(err, caravan.ErrInvalid) {
			t.Errorf("nil pointer: error = %v", err)
		}
		if _, err := Encode(MessageType(99), &JobStopRequest{}); !errors.Is(err, caravan.ErrInvalid) {
			t.Errorf("unknown type: error = %v", err)
		}
	})
	t.Run("plans leave out the job", func(t *testing.T) {
		a := testAlloc(1, "web", 1)
		a.Job = testJob("web", 1)
		req := &PlanApplyRequest{Plans: []state.PlanUpdate{{Allocs: []*caravan.Allocation{a}, Stops: []*caravan.Allocation{a}}}}
		b := entry(t, PlanApply, req)
		if bytes.Contains(b, []byte(`"task_groups"`)) {
			t.Errorf("entry carries the job: %s", b)
		}
		if a.Job == nil || req.Plans[0].Allocs[0] != a {
			t.Errorf("Encode modified the request")
		}
	})
	t.Run("names", func(t *testing.T) {
		if got := PlanApply.String(); got != "PlanApply" {
			t.Errorf("String = %q", got)
		}
		if got := MessageType(77).String(); got != "MessageType(77)" {
			t.Errorf("String = %q", got)
		}
	})
}

// sink is an in-memory raft.SnapshotSink.
type sink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { s.cancelled = true; return nil }
func (s *sink) Close() error  { s.closed = true; return nil }

type failingSink struct{ sink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestSnapshotRestore(t *testing.T) {
	f, _ := newFSM(t)
	mustApply(t, f, 1, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(1)})
	mustApply(t, f, 2, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("web", 1)})
	mustApply(t, f, 3, PlanApply, &PlanApplyRequest{Time: t0, Plans: []state.PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(1, "web", 1)}}}})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Snapshot are not in it.
	mustApply(t, f, 4, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob("later", 1)})
	var out sink
	if err := snap.Persist(&out); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if !out.closed || out.cancelled {
		t.Errorf("sink closed %v cancelled %v", out.closed, out.cancelled)
	}

	g, r := newFSM(t)
	if err := g.Restore(io.NopCloser(bytes.NewReader(out.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := r.LatestIndex(); got != 3 {
		t.Errorf("restored index = %d, want 3", got)
	}
	if _, err := r.Snapshot().JobByID("later"); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("a write after the snapshot was restored: %v", err)
	}
	if a := must(r.Snapshot().AllocByID(uuid('b', 1))); a.Job == nil {
		t.Errorf("restored allocation has no job")
	}
	if u := must(r.Snapshot().NodeUsage(uuid('a', 1))); u.Allocs != 1 {
		t.Errorf("restored usage = %+v", u)
	}
	var bad failingSink
	snap, _ = f.Snapshot()
	if err := snap.Persist(&bad); err == nil || !bad.cancelled {
		t.Errorf("failed persist: error %v, cancelled %v", err, bad.cancelled)
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte("junk")))); err == nil {
		t.Errorf("restore of junk succeeded")
	}
}

func mustApply(t testing.TB, f *FSM, index uint64, mt MessageType, payload any) *Response {
	t.Helper()
	resp, err := apply(f, index, entry(t, mt, payload))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestApplyIsDeterministic applies the same entries on two servers: their
// states must persist to the same bytes.
func TestApplyIsDeterministic(t *testing.T) {
	var entries [][]byte
	entries = append(entries, entry(t, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(1)}))
	entries = append(entries, seedEntries(t)...)
	var plans []state.PlanUpdate
	for j := 0; j < 3; j++ {
		job := fmt.Sprintf("job-%d", j)
		entries = append(entries, entry(t, JobRegister, &JobRegisterRequest{Time: t0, Job: testJob(job, 5), Eval: testEval(100+j, "", caravan.EvalStatusPending)}))
		p := state.PlanUpdate{EvalID: uuid('c', 100+j), JobID: job, Evals: []*caravan.Evaluation{testEval(100+j, job, caravan.EvalStatusComplete)}}
		for i := 0; i < 5; i++ {
			p.Allocs = append(p.Allocs, testAlloc(100+10*j+i, job, 1+i%2))
		}
		plans = append(plans, p)
	}
	entries = append(entries, entry(t, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(2)}))
	entries = append(entries, entry(t, PlanApply, &PlanApplyRequest{Time: t0, Plans: plans}))
	entries = append(entries, entry(t, NodeStatus, &NodeStatusRequest{Time: t0.Add(time.Minute), NodeID: uuid('a', 2), Status: caravan.NodeStatusDown}))

	var persisted [2][]byte
	for k := range persisted {
		f, s := newFSM(t)
		for i, e := range entries {
			f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e})
		}
		var buf bytes.Buffer
		if err := s.Snapshot().Persist(&buf); err != nil {
			t.Fatal(err)
		}
		persisted[k] = buf.Bytes()
	}
	if !bytes.Equal(persisted[0], persisted[1]) {
		t.Errorf("two servers applying the same entries differ")
	}
	if !bytes.Contains(persisted[0], []byte(`"client_status":"lost"`)) {
		t.Errorf("the scenario lost no allocation; it tests less than it should")
	}
}

func TestJobRegisterBatch(t *testing.T) {
	f, s := newFSM(t)
	mustApply(t, f, 1, NodeRegister, &NodeRegisterRequest{Time: t0, Node: testNode(1)})
	changed := testJob("web", 3)
	resp := mustApply(t, f, 2, JobRegisterBatch, &JobRegisterBatchRequest{Jobs: []JobRegisterRequest{
		{Time: t0, Job: testJob("", 1), Eval: testEval(1, "", caravan.EvalStatusPending)},
		{Time: t0, Job: testJob("web", 2), Eval: testEval(2, "web", caravan.EvalStatusPending)},
		{Time: t0, Job: testJob("web", 2)},
		{Time: t0, Job: changed},
		{Time: t0, Job: testJob("", 1)},
	}})
	want := []state.RegisteredJob{{JobID: "1001"}, {JobID: "web"}, {JobID: "web"}, {JobID: "web", Version: 1}, {JobID: "1002"}}
	if diff := cmp.Diff(&Response{Index: 2, Jobs: want}, resp); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	snap := s.Snapshot()
	if e := must(snap.EvalByID(uuid('c', 1))); e.JobID != "1001" || e.CreateIndex != 2 {
		t.Errorf("evaluation of the numbered job: %+v", e)
	}
	if j := must(snap.JobByID("1001")); j.Status != caravan.JobStatusPending {
		t.Errorf("job 1001 status %q", j.Status)
	}
	if v := must(snap.JobVersions("web")); len(v) != 2 {
		t.Errorf("web has %d versions", len(v))
	}

	_, err := apply(f, 3, append([]byte{byte(JobRegisterBatch)}, `{"jobs":[{"job":{"id":"x","task_groups":[]}},{"job":null}]}`...))
	if !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("batch with a null job: %v", err)
	}
	if _, err := s.Snapshot().JobByID("x"); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("a failed batch wrote job x: %v", err)
	}
}
