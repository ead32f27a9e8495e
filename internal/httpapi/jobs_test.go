package httpapi

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

func TestJobLifecycle(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	registerNode(t, ts, 0)

	resp, err := c.RegisterJob(ctx, sleepJob("", 2))
	if err != nil {
		t.Fatal(err)
	}
	if resp.JobID != "1001" || resp.EvalID == "" || resp.Index == 0 {
		t.Fatalf("register = %+v", resp)
	}
	id := resp.JobID
	allocs := waitAllocs(t, ts, id, 2)

	job, meta, err := c.Job(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if job.ID != id || job.Version != 0 || meta.LastIndex == 0 {
		t.Errorf("job = %+v, index %d", job, meta.LastIndex)
	}

	stubs, meta, err := c.Jobs(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(stubs) != 1 || stubs[0].ID != id || stubs[0].Summary["g"].Pending+stubs[0].Summary["g"].Running != 2 {
		t.Errorf("jobs = %s", mustJSON(t, stubs))
	}
	if meta.LastIndex == 0 {
		t.Error("no X-Caravan-Index on the job list")
	}

	jallocs, _, err := c.JobAllocations(ctx, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(jallocs) != 2 || jallocs[0].Job != nil {
		t.Errorf("job allocations: %d, first has job: %v", len(jallocs), jallocs[0].Job != nil)
	}
	evals, _, err := c.JobEvaluations(ctx, id, nil)
	if err != nil || len(evals) != 1 || evals[0].ID != resp.EvalID {
		t.Errorf("job evaluations = %s, %v", mustJSON(t, evals), err)
	}
	sum, _, err := c.JobSummary(ctx, id, nil)
	if err != nil || sum.JobID != id {
		t.Errorf("summary = %+v, %v", sum, err)
	}

	// A new spec makes version 1; versions come newest first.
	if _, err := c.RegisterJob(ctx, sleepJob(id, 3)); err != nil {
		t.Fatal(err)
	}
	versions, err := c.JobVersions(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, v := range versions {
		got = append(got, v.Version)
	}
	if diff := cmp.Diff([]uint64{1, 0}, got); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}

	ev, err := c.EvaluateJob(ctx, id)
	if err != nil || ev.EvalID == "" {
		t.Errorf("evaluate = %+v, %v", ev, err)
	}
	rs, err := c.RestartJob(ctx, id)
	if err != nil || rs.JobVersion != 2 {
		t.Errorf("restart = %+v, %v", rs, err)
	}

	// Allocation and evaluation reads, by id and by prefix.
	al, _, err := c.Allocation(ctx, allocs[0].ID[:8], nil)
	if err != nil || al.ID != allocs[0].ID || al.Job == nil {
		t.Errorf("allocation by prefix = %+v, %v", al, err)
	}
	e, _, err := c.Evaluation(ctx, resp.EvalID, nil)
	if err != nil || e.JobID != id {
		t.Errorf("evaluation = %+v, %v", e, err)
	}
	placed, err := c.EvaluationAllocations(ctx, resp.EvalID)
	if err != nil || len(placed) != 2 {
		t.Errorf("evaluation allocations = %d, %v", len(placed), err)
	}
	all, _, err := c.Allocations(ctx, &api.QueryOptions{Params: map[string]string{"job_id": id}})
	if err != nil || len(all) < 2 {
		t.Errorf("allocations of the job = %d, %v", len(all), err)
	}
	if _, err := c.StopAllocation(ctx, allocs[0].ID); err != nil {
		t.Errorf("stop allocation: %v", err)
	}

	// Stop, then restarting the stopped job conflicts, then purge.
	if _, err := c.StopJob(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	job, _, err = c.Job(ctx, id, nil)
	if err != nil || !job.Stop {
		t.Errorf("after stop: stop=%v, %v", job.Stop, err)
	}
	if _, err := c.RestartJob(ctx, id); !errors.Is(err, caravan.ErrConflict) {
		t.Errorf("restart of a stopped job: %v, want 409", err)
	}
	if _, err := c.StopJob(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Job(ctx, id, nil); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("after purge: %v, want 404", err)
	}
}

func TestJobRegisterOnPath(t *testing.T) {
	ts := startLeader(t)
	for _, method := range []string{http.MethodPost, http.MethodPut} {
		body := mustJSON(t, caravan.JobRegisterRequest{Job: sleepJob("", 1)})
		a := call(t, method, ts.url+"/v1/job/web-"+method, body)
		if a.status != http.StatusOK {
			t.Fatalf("%s: %d %s", method, a.status, a.body)
		}
		var resp caravan.JobRegisterResponse
		a.into(t, &resp)
		if resp.JobID != "web-"+method {
			t.Errorf("%s: job id %q, want the path's", method, resp.JobID)
		}
	}
	a := call(t, http.MethodPost, ts.url+"/v1/job/web", mustJSON(t, caravan.JobRegisterRequest{Job: sleepJob("other", 1)}))
	if e := a.errBody(t); a.status != http.StatusBadRequest || len(e.Fields) != 1 || e.Fields[0].Path != "job.id" {
		t.Errorf("id mismatch: %d %s", a.status, a.body)
	}
}

func TestJobListFiltersAndPaging(t *testing.T) {
	ts := startLeader(t)
	ctx := context.Background()
	c := ts.client(t, "")
	for _, id := range []string{"a1", "a2", "a3", "b1", "b2"} {
		job := sleepJob(id, 1)
		if id == "b2" {
			job.Type = caravan.JobTypeBatch
		}
		if _, err := c.RegisterJob(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(stubs []*caravan.JobStub) []string {
		out := []string{}
		for _, s := range stubs {
			out = append(out, s.ID)
		}
		return out
	}
	tests := []struct {
		name     string
		q        api.QueryOptions
		want     []string
		wantNext string
	}{
		{"all", api.QueryOptions{}, []string{"a1", "a2", "a3", "b1", "b2"}, ""},
		{"prefix", api.QueryOptions{Prefix: "b"}, []string{"b1", "b2"}, ""},
		{"type", api.QueryOptions{Params: map[string]string{"type": "batch"}}, []string{"b2"}, ""},
		{"status", api.QueryOptions{Params: map[string]string{"status": "complete"}}, []string{}, ""},
		{"first page", api.QueryOptions{PerPage: 2}, []string{"a1", "a2"}, "a3"},
		{"second page", api.QueryOptions{PerPage: 2, NextToken: "a3"}, []string{"a3", "b1"}, "b2"},
		{"last page", api.QueryOptions{PerPage: 2, NextToken: "b2"}, []string{"b2"}, ""},
		{"prefix page", api.QueryOptions{Prefix: "a", PerPage: 2}, []string{"a1", "a2"}, "a3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stubs, meta, err := c.Jobs(ctx, &tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, ids(stubs)); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
			if meta.NextToken != tt.wantNext {
				t.Errorf("next token %q, want %q", meta.NextToken, tt.wantNext)
			}
		})
	}
	// Paging evaluations the same way walks the whole list (the scheduler
	// may add evaluations meanwhile, never remove them).
	all, _, err := c.Evaluations(ctx, nil)
	if err != nil || len(all) < 5 {
		t.Fatalf("evaluations: %d, %v", len(all), err)
	}
	var paged []string
	next := ""
	for range 20 {
		page, meta, err := c.Evaluations(ctx, &api.QueryOptions{PerPage: 3, NextToken: next})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 3 {
			t.Fatalf("page of %d", len(page))
		}
		for _, e := range page {
			paged = append(paged, e.ID)
		}
		if next = meta.NextToken; next == "" {
			break
		}
	}
	if !slices.IsSorted(paged) || len(slices.Compact(slices.Clone(paged))) != len(paged) {
		t.Errorf("paged ids out of order or repeated: %v", paged)
	}
	for _, e := range all {
		if !slices.Contains(paged, e.ID) {
			t.Errorf("evaluation %s missing from the pages", e.ID)
		}
	}
	byJob, _, err := c.Evaluations(ctx, &api.QueryOptions{Params: map[string]string{"job_id": "a2", "status": "blocked"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range byJob {
		if e.JobID != "a2" || e.Status != caravan.EvalStatusBlocked {
			t.Errorf("filtered evaluation %s: job %s status %s", e.ID, e.JobID, e.Status)
		}
	}
}
