// Package api is the Go client of caravan's HTTP API. The CLI, the agent and
// the tests use it; it speaks the domain types of the root package.
//
// A Client knows one or more server addresses and moves to the next one when
// a server cannot be reached, so an agent keeps working while servers come
// and go.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caravan-sched/caravan"
)

// Headers the API uses.
const (
	HeaderIndex      = "X-Caravan-Index"
	HeaderNextToken  = "X-Caravan-Next-Token"
	HeaderToken      = "X-Caravan-Token"
	HeaderNodeSecret = "X-Caravan-Node-Secret"
	HeaderRequestID  = "X-Request-Id"
)

// Config configures a Client.
type Config struct {
	// Addresses are "host:port" or URLs of servers (or of an agent, for
	// agent routes). The first is tried first.
	Addresses []string
	// Token is an ACL token sent with every request.
	Token string
	// NodeSecret authenticates an agent on node routes.
	NodeSecret string
	// HTTPClient overrides the default client (no overall timeout, since
	// blocking queries and log follows last long).
	HTTPClient *http.Client
}

// Client talks to caravan servers.
type Client struct {
	cfg  Config
	http *http.Client

	mu      sync.Mutex
	current int
}

// New returns a client for the addresses in cfg.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addresses) == 0 {
		return nil, fmt.Errorf("api client: %w: no server address", caravan.ErrInvalid)
	}
	for i, a := range cfg.Addresses {
		if !strings.Contains(a, "://") {
			cfg.Addresses[i] = "http://" + a
		}
		if _, err := url.Parse(cfg.Addresses[i]); err != nil {
			return nil, fmt.Errorf("api client: %w: bad address %q: %v", caravan.ErrInvalid, a, err)
		}
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   100,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: 0,
		}}
	}
	return &Client{cfg: cfg, http: hc}, nil
}

// SetNodeSecret sets the secret sent on node routes.
func (c *Client) SetNodeSecret(secret string) {
	c.mu.Lock()
	c.cfg.NodeSecret = secret
	c.mu.Unlock()
}

// SetAddresses replaces the server addresses (an agent learns them from
// the servers).
func (c *Client) SetAddresses(addrs []string) {
	if len(addrs) == 0 {
		return
	}
	norm := make([]string, len(addrs))
	for i, a := range addrs {
		if !strings.Contains(a, "://") {
			a = "http://" + a
		}
		norm[i] = a
	}
	c.mu.Lock()
	cur := c.cfg.Addresses[c.current]
	c.cfg.Addresses, c.current = norm, 0
	for i, a := range norm {
		if a == cur {
			c.current = i
		}
	}
	c.mu.Unlock()
}

// Address returns the address requests go to now.
func (c *Client) Address() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.Addresses[c.current]
}

// Error is an error answer from the API. It matches the root package's
// sentinel errors with errors.Is by status code.
type Error struct {
	StatusCode int
	Message    string
	Fields     []caravan.FieldError
	RequestID  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.StatusCode)
}

// Is maps the status code to a sentinel error.
func (e *Error) Is(target error) bool {
	switch e.StatusCode {
	case http.StatusNotFound:
		return target == caravan.ErrNotFound
	case http.StatusBadRequest:
		return target == caravan.ErrInvalid
	case http.StatusConflict:
		return target == caravan.ErrConflict
	case http.StatusForbidden, http.StatusUnauthorized:
		return target == caravan.ErrForbidden
	case http.StatusRequestEntityTooLarge:
		return target == caravan.ErrTooLarge
	case http.StatusServiceUnavailable:
		return target == caravan.ErrNoLeader || target == caravan.ErrUnavailable
	}
	return false
}

// QueryOptions shape reads.
type QueryOptions struct {
	// Index and Wait make a blocking query: return when the data's index
	// passes Index, or after Wait.
	Index uint64
	Wait  time.Duration
	// Prefix filters ids; PerPage and NextToken page lists.
	Prefix    string
	PerPage   int
	NextToken string
	// Params are further query parameters (filters such as job_id).
	Params map[string]string
}

// QueryMeta is what a read returns beside its body.
type QueryMeta struct {
	LastIndex uint64
	NextToken string
}

func (q *QueryOptions) values() url.Values {
	v := url.Values{}
	if q == nil {
		return v
	}
	if q.Index > 0 {
		v.Set("index", strconv.FormatUint(q.Index, 10))
	}
	if q.Wait > 0 {
		v.Set("wait", q.Wait.String())
	}
	if q.Prefix != "" {
		v.Set("prefix", q.Prefix)
	}
	if q.PerPage > 0 {
		v.Set("per_page", strconv.Itoa(q.PerPage))
	}
	if q.NextToken != "" {
		v.Set("next_token", q.NextToken)
	}
	for k, val := range q.Params {
		v.Set(k, val)
	}
	return v
}

// get reads path into out.
func (c *Client) get(ctx context.Context, path string, q *QueryOptions, out any) (*QueryMeta, error) {
	resp, err := c.do(ctx, http.MethodGet, path, q.values(), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return queryMeta(resp), nil
}

// write sends body with method to path and decodes the answer into out
// (when out is not nil).
func (c *Client) write(ctx context.Context, method, path string, params url.Values, body, out any) error {
	var buf []byte
	if body != nil {
		var err error
		if buf, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	resp, err := c.do(ctx, method, path, params, buf)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

func queryMeta(resp *http.Response) *QueryMeta {
	m := &QueryMeta{NextToken: resp.Header.Get(HeaderNextToken)}
	m.LastIndex, _ = strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64)
	return m
}

// do sends one request, moving to the next server address when one cannot
// be reached. Non-2xx answers become *Error.
func (c *Client) do(ctx context.Context, method, path string, params url.Values, body []byte) (*http.Response, error) {
	c.mu.Lock()
	n := len(c.cfg.Addresses)
	start := c.current
	token, secret := c.cfg.Token, c.cfg.NodeSecret
	addrs := c.cfg.Addresses
	c.mu.Unlock()

	var lastErr error
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		u := addrs[idx] + path
		if len(params) > 0 {
			u += "?" + params.Encode()
		}
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u, rd)
		if err != nil {
			return nil, fmt.Errorf("build request: %w", err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if token != "" {
			req.Header.Set(HeaderToken, token)
		}
		if secret != "" {
			req.Header.Set(HeaderNodeSecret, secret)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			lastErr = err
			continue // try the next server
		}
		if resp.StatusCode >= 300 {
			defer resp.Body.Close()
			apiErr := decodeError(resp)
			if resp.StatusCode == http.StatusServiceUnavailable && i < n-1 {
				lastErr = apiErr
				continue
			}
			return nil, apiErr
		}
		if idx != start {
			c.mu.Lock()
			c.current = idx
			c.mu.Unlock()
		}
		return resp, nil
	}
	return nil, fmt.Errorf("%s %s: %w: %v", method, path, caravan.ErrUnavailable, lastErr)
}

func decodeError(resp *http.Response) *Error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &Error{StatusCode: resp.StatusCode, RequestID: resp.Header.Get(HeaderRequestID)}
	var body caravan.ErrorResponse
	if json.Unmarshal(b, &body) == nil && body.Error != "" {
		e.Message, e.Fields = body.Error, body.Fields
		if body.RequestID != "" {
			e.RequestID = body.RequestID
		}
	} else {
		e.Message = strings.TrimSpace(string(b))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

// Raw sends a request and returns the open response for streaming (logs,
// events). The caller closes the body.
func (c *Client) Raw(ctx context.Context, method, path string, params url.Values) (*http.Response, error) {
	return c.do(ctx, method, path, params, nil)
}

func escape(s string) string { return url.PathEscape(s) }

var errEmptyID = errors.New("empty id")

func checkID(kind, id string) error {
	if id == "" {
		return fmt.Errorf("%s: %w: %w", kind, caravan.ErrInvalid, errEmptyID)
	}
	return nil
}
