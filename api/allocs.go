package api

import (
	"context"
	"net/http"

	"github.com/caravan-sched/caravan"
)

// Allocations lists allocations (without their job). Params may filter by
// job_id, node_id and client_status.
func (c *Client) Allocations(ctx context.Context, q *QueryOptions) ([]*caravan.Allocation, *QueryMeta, error) {
	var out []*caravan.Allocation
	meta, err := c.get(ctx, "/v1/allocations", q, &out)
	return out, meta, err
}

// Allocation returns one allocation with its job. A unique prefix of the id
// is enough.
func (c *Client) Allocation(ctx context.Context, id string, q *QueryOptions) (*caravan.Allocation, *QueryMeta, error) {
	if err := checkID("allocation", id); err != nil {
		return nil, nil, err
	}
	var out caravan.Allocation
	meta, err := c.get(ctx, "/v1/allocation/"+escape(id), q, &out)
	return &out, meta, err
}

// StopAllocation stops one allocation; the scheduler replaces it when its
// job still wants it.
func (c *Client) StopAllocation(ctx context.Context, id string) (*caravan.EvalResponse, error) {
	if err := checkID("allocation", id); err != nil {
		return nil, err
	}
	var out caravan.EvalResponse
	err := c.write(ctx, http.MethodPost, "/v1/allocation/"+escape(id)+"/stop", nil, struct{}{}, &out)
	return &out, err
}

// Evaluations lists evaluations. Params may filter by job_id and status.
func (c *Client) Evaluations(ctx context.Context, q *QueryOptions) ([]*caravan.Evaluation, *QueryMeta, error) {
	var out []*caravan.Evaluation
	meta, err := c.get(ctx, "/v1/evaluations", q, &out)
	return out, meta, err
}

// Evaluation returns one evaluation. A unique prefix of the id is enough.
func (c *Client) Evaluation(ctx context.Context, id string, q *QueryOptions) (*caravan.Evaluation, *QueryMeta, error) {
	if err := checkID("evaluation", id); err != nil {
		return nil, nil, err
	}
	var out caravan.Evaluation
	meta, err := c.get(ctx, "/v1/evaluation/"+escape(id), q, &out)
	return &out, meta, err
}

// EvaluationAllocations returns the allocations an evaluation placed.
func (c *Client) EvaluationAllocations(ctx context.Context, id string) ([]*caravan.Allocation, error) {
	if err := checkID("evaluation", id); err != nil {
		return nil, err
	}
	var out []*caravan.Allocation
	_, err := c.get(ctx, "/v1/evaluation/"+escape(id)+"/allocations", nil, &out)
	return out, err
}
