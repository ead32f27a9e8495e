package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/caravan-sched/caravan"
)

// Health returns the health of the server (or agent) the client talks to.
func (c *Client) Health(ctx context.Context) (*caravan.Health, error) {
	var out caravan.Health
	_, err := c.get(ctx, "/v1/health", nil, &out)
	return &out, err
}

// Leader returns the Raft address of the leader.
func (c *Client) Leader(ctx context.Context) (string, error) {
	var out string
	_, err := c.get(ctx, "/v1/status/leader", nil, &out)
	return out, err
}

// Peers returns the Raft addresses of the voting servers.
func (c *Client) Peers(ctx context.Context) ([]string, error) {
	var out []string
	_, err := c.get(ctx, "/v1/status/peers", nil, &out)
	return out, err
}

// Members returns the servers of the cluster with their roles.
func (c *Client) Members(ctx context.Context) ([]*caravan.ServerMember, error) {
	var out []*caravan.ServerMember
	_, err := c.get(ctx, "/v1/operator/raft/configuration", nil, &out)
	return out, err
}

// Join asks the cluster to add a server as a voter.
func (c *Client) Join(ctx context.Context, req *caravan.JoinRequest) (*caravan.IndexResponse, error) {
	var out caravan.IndexResponse
	err := c.write(ctx, http.MethodPost, "/v1/operator/raft/join", nil, req, &out)
	return &out, err
}

// EventStream follows /v1/event/stream from index, for the given topics
// ("Job", "Allocation", "Evaluation", "Node", or "Topic:key"), calling fn for
// each event until ctx ends, fn returns an error, or the stream ends.
func (c *Client) EventStream(ctx context.Context, index uint64, topics []string, fn func(*caravan.Event) error) error {
	params := url.Values{}
	if index > 0 {
		params.Set("index", strconv.FormatUint(index, 10))
	}
	for _, t := range topics {
		params.Add("topic", t)
	}
	resp, err := c.Raw(ctx, http.MethodGet, "/v1/event/stream", params)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || string(line) == "{}" {
			continue // keep-alive
		}
		var ev struct {
			caravan.Event
			Error string `json:"error"`
		}
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("decode event: %w", err)
		}
		if ev.Error != "" {
			// The server cut the stream (we fell behind): reconnect from
			// the last index seen.
			return fmt.Errorf("event stream ended by the server: %s: %w", ev.Error, caravan.ErrUnavailable)
		}
		if err := fn(&ev.Event); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return nil
}

// LogOptions select a task's log output.
type LogOptions struct {
	Task string
	// Type is "stdout" (default) or "stderr".
	Type string
	// Follow keeps the stream open for new output.
	Follow bool
	// Offset in bytes from the start, or from the end when Origin is "end".
	Offset int64
	Origin string
}

// Logs streams a task's output into w until it ends (or, when following,
// until the task is gone or ctx ends). Servers proxy the request to the
// agent that runs the allocation.
func (c *Client) Logs(ctx context.Context, allocID string, opt LogOptions, w io.Writer) error {
	if err := checkID("allocation", allocID); err != nil {
		return err
	}
	params := url.Values{}
	if opt.Task != "" {
		params.Set("task", opt.Task)
	}
	if opt.Type != "" {
		params.Set("type", opt.Type)
	}
	if opt.Follow {
		params.Set("follow", "true")
	}
	if opt.Offset > 0 {
		params.Set("offset", strconv.FormatInt(opt.Offset, 10))
	}
	if opt.Origin != "" {
		params.Set("origin", opt.Origin)
	}
	resp, err := c.Raw(ctx, http.MethodGet, "/v1/client/allocation/"+escape(allocID)+"/logs", params)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	if err != nil && ctx.Err() != nil {
		return nil
	}
	return err
}
