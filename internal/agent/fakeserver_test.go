package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// fakeServer serves the node endpoints of the servers' API from memory:
// enough to test the agent's side of the protocol.
type fakeServer struct {
	srv *httptest.Server
	ttl time.Duration

	mu         sync.Mutex
	index      uint64
	changed    chan struct{} // closed and replaced at every change
	nodes      map[string]*caravan.Node
	allocs     map[string]*caravan.Allocation
	updates    map[string][]*caravan.AllocClientUpdate
	registers  int
	heartbeats int
	stops      []string
	down       bool
	// served counts answers to the watch, sent the allocations in them.
	served, sent int
	// lagging answers as a server far behind (nothing placed yet);
	// noSince as a server that predates ?since.
	lagging, noSince bool
}

func newFakeServer(t testing.TB, ttl time.Duration) *fakeServer {
	s := &fakeServer{ttl: ttl, index: 1, changed: make(chan struct{}), nodes: map[string]*caravan.Node{},
		allocs: map[string]*caravan.Allocation{}, updates: map[string][]*caravan.AllocClientUpdate{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/node/register", s.register)
	mux.HandleFunc("POST /v1/node/{id}/heartbeat", s.heartbeat)
	mux.HandleFunc("GET /v1/node/{id}/allocations", s.nodeAllocs)
	mux.HandleFunc("POST /v1/node/{id}/allocations", s.update)
	mux.HandleFunc("POST /v1/allocation/{id}/stop", s.stop)
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		down := s.down
		s.mu.Unlock()
		if down {
			panic(http.ErrAbortHandler) // the connection drops, as with a dead server
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *fakeServer) addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// bump marks a change; the caller holds mu.
func (s *fakeServer) bump() uint64 {
	s.index++
	close(s.changed)
	s.changed = make(chan struct{})
	return s.index
}

func (s *fakeServer) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
	if down {
		s.srv.CloseClientConnections()
	}
}

func fail(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(caravan.ErrorResponse{Error: msg})
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func (s *fakeServer) register(w http.ResponseWriter, r *http.Request) {
	var req caravan.NodeRegisterRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Node == nil {
		fail(w, 400, "bad body")
		return
	}
	n := req.Node
	n.Canonicalize()
	if err := n.Validate(); err != nil {
		fail(w, 400, err.Error())
		return
	}
	if r.Header.Get(api.HeaderNodeSecret) != n.SecretID {
		fail(w, 403, "secret does not match")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.nodes[n.ID]; old != nil && old.SecretID != n.SecretID {
		fail(w, 403, "node secret changed")
		return
	}
	s.nodes[n.ID] = n
	s.registers++
	reply(w, caravan.NodeRegisterResponse{NodeID: n.ID, HeartbeatTTL: caravan.Duration(s.ttl), Index: s.bump(), Servers: []string{s.addr()}})
}

func (s *fakeServer) heartbeat(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[r.PathValue("id")]
	if n == nil {
		fail(w, 404, "node not found")
		return
	}
	if r.Header.Get(api.HeaderNodeSecret) != n.SecretID {
		fail(w, 403, "secret does not match")
		return
	}
	s.heartbeats++
	reply(w, caravan.NodeRegisterResponse{NodeID: n.ID, HeartbeatTTL: caravan.Duration(s.ttl), Index: s.index, Servers: []string{s.addr()}})
}

// nodeAllocs serves the agent's watch as the servers do: the index is the
// newest alloc_modify_index of the node's allocations, so status reports
// and removals do not wake it. With ?since it answers with the changes.
func (s *fakeServer) nodeAllocs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	index, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, _ := time.ParseDuration(q.Get("wait"))
	since, diff := uint64(0), q.Has("since")
	s.mu.Lock()
	if s.noSince {
		diff = false
	}
	s.mu.Unlock()
	if diff {
		since, _ = strconv.ParseUint(q.Get("since"), 10, 64)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if s.nodes[id] == nil {
			s.mu.Unlock()
			fail(w, 404, "node not found")
			return
		}
		var mine []*caravan.Allocation
		var top uint64
		for _, a := range s.allocs {
			if a.NodeID == id && !s.lagging {
				mine = append(mine, a.Copy())
				top = max(top, a.AllocModifyIndex)
			}
		}
		if top > index || wait == 0 || s.lagging {
			stateIndex := s.index
			if s.lagging {
				stateIndex = 1
			}
			s.served++
			for _, a := range mine {
				if !diff || a.AllocModifyIndex > since {
					s.sent++
				}
			}
			s.mu.Unlock()
			w.Header().Set(api.HeaderIndex, strconv.FormatUint(max(top, 1), 10))
			if !diff {
				reply(w, mine)
				return
			}
			out := &api.NodeAllocChanges{Since: since, Index: max(top, 1), StateIndex: stateIndex, Count: len(mine), Allocs: []*caravan.Allocation{}, Jobs: []*caravan.Job{}}
			seen := map[*caravan.Job]bool{}
			for _, a := range mine {
				if q.Get("ids") == "true" {
					out.IDs = append(out.IDs, api.AllocIndex{ID: a.ID, AllocModifyIndex: a.AllocModifyIndex})
				}
				if a.AllocModifyIndex <= since {
					continue
				}
				if a.Job != nil && !seen[a.Job] {
					seen[a.Job] = true
					out.Jobs = append(out.Jobs, a.Job)
				}
				out.Allocs = append(out.Allocs, a.Stub())
			}
			if q.Get("ids") == "true" && out.IDs == nil {
				out.IDs = []api.AllocIndex{}
			}
			reply(w, out)
			return
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			wait = 0
		case <-r.Context().Done():
			return
		}
	}
}

func (s *fakeServer) update(w http.ResponseWriter, r *http.Request) {
	var req caravan.AllocUpdateRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(w, 400, "bad body")
		return
	}
	for _, u := range req.Allocs {
		if err := u.Validate(); err != nil {
			fail(w, 400, err.Error())
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range req.Allocs {
		s.updates[u.ID] = append(s.updates[u.ID], u)
		if a := s.allocs[u.ID]; a != nil {
			a.ClientStatus, a.ClientDescription, a.TerminalReason, a.TaskStates = u.ClientStatus, u.ClientDescription, u.TerminalReason, u.TaskStates
		}
	}
	reply(w, caravan.IndexResponse{Index: s.bump()})
}

func (s *fakeServer) stop(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.allocs[r.PathValue("id")]
	if a == nil {
		fail(w, 404, "allocation not found")
		return
	}
	s.stops = append(s.stops, a.ID)
	a.DesiredStatus = caravan.AllocDesiredStop
	a.AllocModifyIndex = s.bump()
	reply(w, caravan.EvalResponse{EvalID: caravan.NewID(), Index: a.AllocModifyIndex})
}

// addAlloc places an allocation on the node.
func (s *fakeServer) addAlloc(a *caravan.Allocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.AllocModifyIndex = s.bump()
	a.CreateIndex = a.AllocModifyIndex
	s.allocs[a.ID] = a
}

// setDesired changes an allocation's desired status.
func (s *fakeServer) setDesired(id, desired string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.allocs[id]
	a.DesiredStatus = desired
	a.AllocModifyIndex = s.bump()
}

// removeAlloc forgets an allocation, as garbage collection does.
func (s *fakeServer) removeAlloc(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.allocs, id)
	s.bump()
}

// alloc returns a copy of the allocation as the server knows it.
func (s *fakeServer) alloc(id string) *caravan.Allocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.allocs[id]; a != nil {
		return a.Copy()
	}
	return nil
}

// statuses returns the client statuses reported for an allocation, without
// repeats.
func (s *fakeServer) statuses(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, u := range s.updates[id] {
		if len(out) == 0 || out[len(out)-1] != u.ClientStatus {
			out = append(out, u.ClientStatus)
		}
	}
	return out
}

func (s *fakeServer) counts() (registers, heartbeats int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.registers, s.heartbeats
}

func (s *fakeServer) node(id string) *caravan.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nodes[id]
}

// forgetNodes drops every node, as a server that lost its state.
func (s *fakeServer) forgetNodes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes = map[string]*caravan.Node{}
}

// waitFor polls cond every 10ms for at most d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for i := 0; i < 100_000; i++ {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

// testJob returns a canonical job with one group of the tasks.
func testJob(jobType string, tasks ...*caravan.Task) *caravan.Job {
	job := &caravan.Job{ID: "job-" + caravan.NewID()[:8], Type: jobType, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Tasks: tasks,
		Restart: &caravan.RestartPolicy{Attempts: 0, Interval: caravan.Duration(time.Hour), Delay: caravan.Duration(time.Second), Mode: caravan.RestartModeFail},
	}}}
	job.Canonicalize()
	return job
}

// testAlloc places a copy of job's group on the node.
func testAlloc(nodeID string, job *caravan.Job) *caravan.Allocation {
	return &caravan.Allocation{
		ID: caravan.NewID(), EvalID: caravan.NewID(), Name: caravan.AllocName(job.ID, "g", 0),
		JobID: job.ID, Job: job, TaskGroup: "g", NodeID: nodeID,
		DesiredStatus: caravan.AllocDesiredRun, ClientStatus: caravan.AllocClientPending,
	}
}

func execTask(name, command string) *caravan.Task {
	return &caravan.Task{Name: name, Driver: caravan.DriverExec, Config: caravan.TaskConfig{Command: command},
		Resources: caravan.Resources{CPU: 100, Memory: 64}, KillTimeout: caravan.Duration(2 * time.Second)}
}
