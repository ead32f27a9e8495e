package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/caravan-sched/caravan"
)

// Jobs returns the jobs, in id order, as list stubs.
func (c *Client) Jobs(ctx context.Context, q *QueryOptions) ([]*caravan.JobStub, *QueryMeta, error) {
	var out []*caravan.JobStub
	meta, err := c.get(ctx, "/v1/jobs", q, &out)
	return out, meta, err
}

// RegisterJob submits a job (new, or a new version of an existing one).
func (c *Client) RegisterJob(ctx context.Context, job *caravan.Job) (*caravan.JobRegisterResponse, error) {
	var out caravan.JobRegisterResponse
	err := c.write(ctx, http.MethodPost, "/v1/jobs", nil, &caravan.JobRegisterRequest{Job: job}, &out)
	return &out, err
}

// Job returns the newest version of a job.
func (c *Client) Job(ctx context.Context, id string, q *QueryOptions) (*caravan.Job, *QueryMeta, error) {
	if err := checkID("job", id); err != nil {
		return nil, nil, err
	}
	var out caravan.Job
	meta, err := c.get(ctx, "/v1/job/"+escape(id), q, &out)
	return &out, meta, err
}

// JobVersions returns every kept version of a job, newest first.
func (c *Client) JobVersions(ctx context.Context, id string) ([]*caravan.Job, error) {
	if err := checkID("job", id); err != nil {
		return nil, err
	}
	var out []*caravan.Job
	_, err := c.get(ctx, "/v1/job/"+escape(id)+"/versions", nil, &out)
	return out, err
}

// JobSummary returns the allocation counts of a job.
func (c *Client) JobSummary(ctx context.Context, id string, q *QueryOptions) (*caravan.JobSummary, *QueryMeta, error) {
	if err := checkID("job", id); err != nil {
		return nil, nil, err
	}
	var out caravan.JobSummary
	meta, err := c.get(ctx, "/v1/job/"+escape(id)+"/summary", q, &out)
	return &out, meta, err
}

// JobAllocations returns the allocations of a job.
func (c *Client) JobAllocations(ctx context.Context, id string, q *QueryOptions) ([]*caravan.Allocation, *QueryMeta, error) {
	if err := checkID("job", id); err != nil {
		return nil, nil, err
	}
	var out []*caravan.Allocation
	meta, err := c.get(ctx, "/v1/job/"+escape(id)+"/allocations", q, &out)
	return out, meta, err
}

// JobEvaluations returns the evaluations of a job.
func (c *Client) JobEvaluations(ctx context.Context, id string, q *QueryOptions) ([]*caravan.Evaluation, *QueryMeta, error) {
	if err := checkID("job", id); err != nil {
		return nil, nil, err
	}
	var out []*caravan.Evaluation
	meta, err := c.get(ctx, "/v1/job/"+escape(id)+"/evaluations", q, &out)
	return out, meta, err
}

// StopJob stops a job; purge also removes it from state.
func (c *Client) StopJob(ctx context.Context, id string, purge bool) (*caravan.EvalResponse, error) {
	if err := checkID("job", id); err != nil {
		return nil, err
	}
	params := url.Values{}
	if purge {
		params.Set("purge", "true")
	}
	var out caravan.EvalResponse
	err := c.write(ctx, http.MethodDelete, "/v1/job/"+escape(id), params, nil, &out)
	return &out, err
}

// EvaluateJob forces a new evaluation of a job.
func (c *Client) EvaluateJob(ctx context.Context, id string) (*caravan.EvalResponse, error) {
	if err := checkID("job", id); err != nil {
		return nil, err
	}
	var out caravan.EvalResponse
	err := c.write(ctx, http.MethodPost, "/v1/job/"+escape(id)+"/evaluate", nil, struct{}{}, &out)
	return &out, err
}

// RestartJob replaces every allocation of a job with a new one, as a rolling
// update (a new job version with the same spec).
func (c *Client) RestartJob(ctx context.Context, id string) (*caravan.JobRegisterResponse, error) {
	if err := checkID("job", id); err != nil {
		return nil, err
	}
	var out caravan.JobRegisterResponse
	err := c.write(ctx, http.MethodPost, "/v1/job/"+escape(id)+"/restart", nil, struct{}{}, &out)
	return &out, err
}
