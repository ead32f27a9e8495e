package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

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

// NodeAllocChanges answers GET /v1/node/{id}/allocations?since=N: what
// the servers changed on a node's allocations after index N. It is how an
// agent follows its allocations without reading all of them at every
// change.
type NodeAllocChanges struct {
	// Since is the index the answer is relative to; 0 means that Allocs
	// lists every allocation of the node.
	Since uint64 `json:"since"`
	// Index is the newest alloc_modify_index among the node's
	// allocations; the agent passes it as since (and index) next time. It
	// goes down when the newest allocations are garbage collected.
	Index uint64 `json:"index"`
	// StateIndex is the Raft index of the state the answer was read from.
	// Below since, the server is behind the one that answered before (a
	// follower catching up): its view of the node is older than the
	// agent's.
	StateIndex uint64 `json:"state_index"`
	// Count is how many allocations the servers list for the node. An
	// agent that knows more ids than that learns that some were removed
	// (garbage collected), and asks for IDs.
	Count int `json:"count"`
	// Allocs are the allocations whose alloc_modify_index is above since
	// (every one when since is 0), without their jobs.
	Allocs []*caravan.Allocation `json:"allocs"`
	// Jobs are the job versions the allocations run, each version once.
	Jobs []*caravan.Job `json:"jobs"`
	// IDs, asked for with ids=true, lists every allocation of the node
	// (null when not asked for).
	IDs []AllocIndex `json:"ids"`
}

// AllocIndex names one allocation and the index of its last server-side
// change.
type AllocIndex struct {
	ID               string `json:"id"`
	AllocModifyIndex uint64 `json:"alloc_modify_index"`
}

// NodeAllocationChanges returns what the servers changed on the node's
// allocations after index since, with the jobs they run; with q.Index it
// blocks until there is a change. withIDs asks for the ids of every
// allocation of the node too. Agents call it. A server that predates the
// since parameter answers with every allocation, which comes back as a
// full answer.
func (c *Client) NodeAllocationChanges(ctx context.Context, nodeID string, since uint64, withIDs bool, q *QueryOptions) (*NodeAllocChanges, *QueryMeta, error) {
	if err := checkID("node", nodeID); err != nil {
		return nil, nil, err
	}
	params := q.values()
	params.Set("since", strconv.FormatUint(since, 10))
	if withIDs {
		params.Set("ids", "true")
	}
	path := "/v1/node/" + escape(nodeID) + "/allocations"
	resp, err := c.do(ctx, http.MethodGet, path, params, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	meta := queryMeta(resp)
	out, err := decodeAllocChanges(bufio.NewReader(resp.Body), meta.LastIndex)
	if err != nil {
		return nil, nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return out, meta, nil
}

// decodeAllocChanges reads an answer to ?since: the object, or the whole
// list (with index in its header) that an older server sends.
func decodeAllocChanges(r *bufio.Reader, index uint64) (*NodeAllocChanges, error) {
	first, err := firstByte(r)
	if err != nil {
		return nil, err
	}
	out := &NodeAllocChanges{}
	if first != '[' {
		if err := json.NewDecoder(r).Decode(out); err != nil {
			return nil, err
		}
		return out, nil
	}
	if err := json.NewDecoder(r).Decode(&out.Allocs); err != nil {
		return nil, err
	}
	out.Index, out.Count = index, len(out.Allocs)
	return out, nil
}

// firstByte returns the first byte after white space, leaving it unread.
func firstByte(r *bufio.Reader) (byte, error) {
	for {
		b, err := r.Peek(1)
		if err != nil {
			return 0, err
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = r.ReadByte()
		default:
			return b[0], nil
		}
	}
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
