package api

import (
	"context"
	"net/http"

	"github.com/caravan-sched/caravan"
)

// Nodes lists the nodes. Params may filter by pool and status.
func (c *Client) Nodes(ctx context.Context, q *QueryOptions) ([]*caravan.Node, *QueryMeta, error) {
	var out []*caravan.Node
	meta, err := c.get(ctx, "/v1/nodes", q, &out)
	return out, meta, err
}

// Node returns one node. A unique prefix of the id is enough.
func (c *Client) Node(ctx context.Context, id string, q *QueryOptions) (*caravan.Node, *QueryMeta, error) {
	if err := checkID("node", id); err != nil {
		return nil, nil, err
	}
	var out caravan.Node
	meta, err := c.get(ctx, "/v1/node/"+escape(id), q, &out)
	return &out, meta, err
}

// RegisterNode registers (or re-registers) the agent's node.
func (c *Client) RegisterNode(ctx context.Context, node *caravan.Node) (*caravan.NodeRegisterResponse, error) {
	var out caravan.NodeRegisterResponse
	err := c.write(ctx, http.MethodPost, "/v1/node/register", nil, &caravan.NodeRegisterRequest{Node: node}, &out)
	return &out, err
}

// Heartbeat tells the servers the node is alive.
func (c *Client) Heartbeat(ctx context.Context, nodeID, status string) (*caravan.NodeRegisterResponse, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, err
	}
	var out caravan.NodeRegisterResponse
	err := c.write(ctx, http.MethodPost, "/v1/node/"+escape(nodeID)+"/heartbeat", nil, &caravan.HeartbeatRequest{Status: status}, &out)
	return &out, err
}

// NodeAllocations returns the allocations placed on a node, with their
// jobs; with q.Index it blocks until they change. Agents call it.
func (c *Client) NodeAllocations(ctx context.Context, nodeID string, q *QueryOptions) ([]*caravan.Allocation, *QueryMeta, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, nil, err
	}
	var out []*caravan.Allocation
	meta, err := c.get(ctx, "/v1/node/"+escape(nodeID)+"/allocations", q, &out)
	return out, meta, err
}

// UpdateAllocations reports allocation status changes, batched.
func (c *Client) UpdateAllocations(ctx context.Context, nodeID string, updates []*caravan.AllocClientUpdate) (*caravan.IndexResponse, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, err
	}
	var out caravan.IndexResponse
	err := c.write(ctx, http.MethodPost, "/v1/node/"+escape(nodeID)+"/allocations", nil, &caravan.AllocUpdateRequest{Allocs: updates}, &out)
	return &out, err
}

// DrainNode starts (drain not nil) or cancels (nil) a drain.
func (c *Client) DrainNode(ctx context.Context, nodeID string, drain *caravan.DrainStrategy, markEligible bool) (*caravan.IndexResponse, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, err
	}
	var out caravan.IndexResponse
	err := c.write(ctx, http.MethodPost, "/v1/node/"+escape(nodeID)+"/drain", nil, &caravan.NodeDrainRequest{Drain: drain, MarkEligible: markEligible}, &out)
	return &out, err
}

// SetNodeEligibility makes a node eligible or ineligible for new work.
func (c *Client) SetNodeEligibility(ctx context.Context, nodeID, eligibility string) (*caravan.IndexResponse, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, err
	}
	var out caravan.IndexResponse
	err := c.write(ctx, http.MethodPost, "/v1/node/"+escape(nodeID)+"/eligibility", nil, &caravan.NodeEligibilityRequest{Eligibility: eligibility}, &out)
	return &out, err
}

// DeregisterNode removes a node from state.
func (c *Client) DeregisterNode(ctx context.Context, nodeID string) (*caravan.IndexResponse, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, err
	}
	var out caravan.IndexResponse
	err := c.write(ctx, http.MethodDelete, "/v1/node/"+escape(nodeID), nil, nil, &out)
	return &out, err
}
