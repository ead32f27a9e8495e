package systemtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// serverConfig is a server's configuration file: short Raft timeouts for
// loopback, and the heartbeat TTL and grace after which a silent node is
// down.
func serverConfig(ttl, grace string) string {
	return fmt.Sprintf(`log_level = "debug"
server {
  fast_raft         = true
  min_heartbeat_ttl = %q
  heartbeat_grace   = %q
  retry_interval    = "250ms"
}
`, ttl, grace)
}

// daemon is a long-running caravan process (server, agent, dev) with its
// command line, which can be killed and started again on its data dir.
type daemon struct {
	sb   *sandbox
	name string
	// addr is the HTTP address (host:port) it serves.
	addr    string
	dataDir string
	args    []string
	proc    *proc
}

// start starts the process with its command line.
func (d *daemon) start() { d.proc = d.sb.start(d.name, d.args...) }

// newServer makes (without starting) `caravan server` named name on free
// ports with its own data dir, joining the servers at join when given.
func (s *sandbox) newServer(name, conf string, join ...string) *daemon {
	s.t.Helper()
	httpPort, raftPort := freePort(s.t), freePort(s.t)
	d := &daemon{sb: s, name: name, addr: "127.0.0.1:" + strconv.Itoa(httpPort), dataDir: s.dir(name)}
	d.args = []string{"server", "--config", s.file(name+".hcl", conf), "--name", name, "--data-dir", d.dataDir,
		"--http-port", strconv.Itoa(httpPort), "--raft-port", strconv.Itoa(raftPort)}
	if len(join) > 0 {
		d.args = append(d.args, "--join", strings.Join(join, ","))
	}
	return d
}

// newAgent makes (without starting) `caravan agent` for the servers, with
// its own data dir, node name, API port and cgroup parent, without Docker.
func (s *sandbox) newAgent(name string, servers ...string) (*daemon, string) {
	s.t.Helper()
	port := freePort(s.t)
	parent := s.cgroupParent(name)
	conf := fmt.Sprintf("log_level = \"debug\"\nagent {\n  cgroup_parent  = %q\n  disable_docker = true\n}\n", parent)
	d := &daemon{sb: s, name: name, addr: "127.0.0.1:" + strconv.Itoa(port), dataDir: s.dir(name)}
	d.args = []string{"agent", "--config", s.file(name+".hcl", conf), "--data-dir", d.dataDir,
		"--servers", strings.Join(servers, ","), "--http-port", strconv.Itoa(port), "--node-name", name}
	return d, parent
}

// startup is how long a process took to serve after it was started.
type startup struct {
	// answer is the first HTTP answer of /v1/health (even a 503), healthy
	// the first 200 (a leader is known).
	answer, healthy time.Duration
}

func (s startup) String() string {
	return fmt.Sprintf("first answer after %v, healthy after %v", s.answer.Round(time.Millisecond), s.healthy.Round(time.Millisecond))
}

// waitHealthy waits until the daemon's /v1/health answers 200, failing
// the test when it ends first or takes longer than startWait.
func (d *daemon) waitHealthy(t testing.TB) startup {
	t.Helper()
	return waitHealthy(t, d)[0]
}

// waitHealthy waits until every daemon's /v1/health answers 200, probing
// them all in turn so that each one's times are its own, and fails the
// test when one ends first or takes longer than startWait.
func waitHealthy(t testing.TB, ds ...*daemon) []startup {
	t.Helper()
	out := make([]startup, len(ds))
	done := make([]bool, len(ds))
	for left := len(ds); left > 0; {
		for i, d := range ds {
			if done[i] {
				continue
			}
			if !d.proc.running() {
				t.Fatalf("caravan %s ended while starting:\n%s", d.name, d.proc.logTail(4096))
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := d.sb.client(d.addr).Health(ctx)
			cancel()
			var apiErr *api.Error
			if out[i].answer == 0 && (err == nil || asAPIError(err, &apiErr)) {
				out[i].answer = time.Since(d.proc.started)
			}
			if err == nil {
				out[i].healthy = time.Since(d.proc.started)
				done[i] = true
				left--
				continue
			}
			if time.Since(d.proc.started) > startWait {
				t.Fatalf("caravan %s not healthy %v after its start: %v\n%s", d.name, startWait, err, d.proc.logTail(4096))
			}
		}
		if left > 0 {
			time.Sleep(25 * time.Millisecond)
		}
	}
	return out
}

func asAPIError(err error, target **api.Error) bool { return errors.As(err, target) }

// readyNode waits until the servers list a ready node of that name with a
// healthy exec driver and returns it.
func readyNode(t testing.TB, c *api.Client, name string, timeout time.Duration) *caravan.Node {
	t.Helper()
	var found *caravan.Node
	waitFor(t, timeout, "node "+name+" ready with a healthy exec driver", func() bool {
		ctx, cancel := reqCtx()
		defer cancel()
		nodes, _, err := c.Nodes(ctx, nil)
		if err != nil {
			return false
		}
		for _, n := range nodes {
			if n.Name == name && n.Status == caravan.NodeStatusReady && n.Drivers["exec"].Healthy {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// execJob is a job of one group of count copies of one exec task "t"
// running command.
func execJob(id, typ, command string, count int) *caravan.Job {
	return &caravan.Job{ID: id, Type: typ, TaskGroups: []*caravan.TaskGroup{{
		Name: "g", Count: &count,
		Tasks: []*caravan.Task{{Name: "t", Driver: caravan.DriverExec, Config: caravan.TaskConfig{Command: command},
			Resources: caravan.Resources{CPU: 100, Memory: 64}, KillTimeout: caravan.Duration(2 * time.Second)}},
	}}}
}

// jobAllocs returns a job's allocations (nil on error).
func jobAllocs(c *api.Client, jobID string) []*caravan.Allocation {
	ctx, cancel := reqCtx()
	defer cancel()
	allocs, _, err := c.JobAllocations(ctx, jobID, nil)
	if err != nil {
		return nil
	}
	return allocs
}

// alloc reads one allocation with its task states (nil on error).
func alloc(c *api.Client, id string) *caravan.Allocation {
	ctx, cancel := reqCtx()
	defer cancel()
	a, _, err := c.Allocation(ctx, id, nil)
	if err != nil {
		return nil
	}
	return a
}

// mustRegister registers a job or fails the test.
func mustRegister(t testing.TB, c *api.Client, job *caravan.Job) *caravan.JobRegisterResponse {
	t.Helper()
	ctx, cancel := reqCtx()
	defer cancel()
	resp, err := c.RegisterJob(ctx, job)
	if err != nil {
		t.Fatalf("register job %s: %v", job.ID, err)
	}
	return resp
}

// eventTypes lists a task's event types.
func eventTypes(ts *caravan.TaskState) []string {
	if ts == nil {
		return nil
	}
	var out []string
	for _, e := range ts.Events {
		out = append(out, e.Type)
	}
	return out
}

// eventLog renders a task's events with their messages, for failures.
func eventLog(ts *caravan.TaskState) string {
	if ts == nil {
		return "(no task state)"
	}
	var b strings.Builder
	for _, e := range ts.Events {
		fmt.Fprintf(&b, "\n  %s %s", e.Type, e.Message)
	}
	return b.String()
}

// countOf counts s in list.
func countOf(list []string, s string) int {
	n := 0
	for _, v := range list {
		if v == s {
			n++
		}
	}
	return n
}

// dialable reports whether something listens on addr.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stopJob stops a job or fails the test.
func stopJob(t testing.TB, c *api.Client, id string) {
	t.Helper()
	ctx, cancel := reqCtx()
	defer cancel()
	if _, err := c.StopJob(ctx, id, false); err != nil {
		t.Fatalf("stop job %s: %v", id, err)
	}
}
