package systemtest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/testcluster"
)

// acks records what the servers acknowledged: a write counts once its
// answer (2xx) has been read.
type acks struct {
	mu       sync.Mutex
	jobs     map[string]string // job id → its command
	nodes    map[string]string // node id → name
	attempts int
	failures int
	// killed is set just before the servers are killed; failures before
	// it are errors of a healthy cluster.
	killed        bool
	earlyFailures int
	firstEarly    error
	// killedAt is when the kill began; resumed, how long after it the
	// first write sent after it was acknowledged; ackedAfter counts those.
	killedAt   time.Time
	resumed    time.Duration
	ackedAfter int
	// noLeader counts writes refused with 503 while the servers were up:
	// an election (on a loaded machine with loopback timeouts) leaves a
	// moment without a leader. They were not acknowledged, so they do not
	// count against durability.
	noLeader int
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.jobs) + len(a.nodes)
}

// durableJob is a job that no node can take (its datacenter has none), so
// that the write load is registrations, not placements.
func durableJob(id string) *caravan.Job {
	j := execJob(id, caravan.JobTypeBatch, "echo "+id, 1)
	j.Datacenters = []string{"nowhere"}
	return j
}

// writeLoad registers, in turn, a job with an id, a job without one
// (numbered by the servers) and a node, from workers goroutines each going
// round the clients, until ctx ends. wait waits for the workers.
func writeLoad(ctx context.Context, clients []*api.Client, workers int, a *acks) (wait func()) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				c := clients[(w+i)%len(clients)]
				sent := time.Now()
				rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var err error
				if i%3 == 2 {
					n := testcluster.NewSimNode(fmt.Sprintf("dur-%d-%d", w, i), nil, nil)
					if _, err = c.RegisterNode(rctx, n); err == nil {
						a.mu.Lock()
						a.nodes[n.ID] = n.Name
						a.mu.Unlock()
					}
				} else {
					// Every other job comes without an id and gets the
					// next number: the sequence must survive too.
					j := durableJob(fmt.Sprintf("dur-%d-%d", w, i))
					if i%3 == 1 {
						j.ID = ""
					}
					var resp *caravan.JobRegisterResponse
					if resp, err = c.RegisterJob(rctx, j); err == nil {
						a.mu.Lock()
						a.jobs[resp.JobID] = j.TaskGroups[0].Tasks[0].Config.Command
						a.mu.Unlock()
					}
				}
				cancel()
				a.mu.Lock()
				a.attempts++
				if err == nil && a.killed && sent.After(a.killedAt) {
					a.ackedAfter++
					if a.resumed == 0 {
						a.resumed = time.Since(a.killedAt)
					}
				}
				if err != nil {
					a.failures++
					switch {
					case a.killed || ctx.Err() != nil:
					case errors.Is(err, caravan.ErrNoLeader):
						a.noLeader++
					default:
						a.earlyFailures++
						if a.firstEarly == nil {
							a.firstEarly = err
						}
					}
				}
				a.mu.Unlock()
				if err != nil {
					select { // the servers are down: do not spin
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		})
	}
	return wg.Wait
}

// loadThenKill writes through the clients until at least minAcks writes
// were acknowledged and minTime passed, calls kill while the workers are
// still writing, goes on writing for after, then stops the workers. It
// returns what was acknowledged.
func loadThenKill(t *testing.T, clients []*api.Client, minAcks int, minTime time.Duration, kill func(), after time.Duration) *acks {
	t.Helper()
	a := &acks{jobs: map[string]string{}, nodes: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	wait := writeLoad(ctx, clients, 4, a)
	defer func() { cancel(); wait() }()
	start := time.Now()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d acknowledged writes", minAcks), func() bool {
		return a.count() >= minAcks && time.Since(start) >= minTime
	})
	killAt := time.Since(start)
	a.mu.Lock()
	a.killed, a.killedAt = true, time.Now()
	a.mu.Unlock()
	kill()
	// More attempts meet what is left of the servers.
	time.Sleep(after)
	cancel()
	wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	t.Logf("write load: %d writes acknowledged (%d jobs, %d nodes), %d of them sent after the SIGKILL at %v; %d attempts, %d failed",
		len(a.jobs)+len(a.nodes), len(a.jobs), len(a.nodes), a.ackedAfter, killAt.Round(time.Millisecond), a.attempts, a.failures)
	if a.noLeader > 0 {
		t.Logf("%d writes were refused with 503 (no leader for a moment) while the servers were up", a.noLeader)
	}
	if a.earlyFailures > 0 {
		t.Errorf("%d writes failed while the servers were up; the first: %v", a.earlyFailures, a.firstEarly)
	}
	return a
}

// missing lists the acknowledged writes a server does not show.
func missing(c *api.Client, a *acks) ([]string, error) {
	ctx, cancel := reqCtx()
	defer cancel()
	jobs, _, err := c.Jobs(ctx, nil)
	if err != nil {
		return nil, err
	}
	nodes, _, err := c.Nodes(ctx, nil)
	if err != nil {
		return nil, err
	}
	haveJobs := map[string]bool{}
	for _, j := range jobs {
		haveJobs[j.ID] = true
	}
	haveNodes := map[string]bool{}
	for _, n := range nodes {
		haveNodes[n.ID] = true
	}
	var out []string
	for id := range a.jobs {
		if !haveJobs[id] {
			out = append(out, "job "+id)
		}
	}
	for id, name := range a.nodes {
		if !haveNodes[id] {
			out = append(out, "node "+name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitAllPresent waits until the server at c shows every acknowledged
// write and returns how long that took; it fails the test with what is
// missing after timeout.
func waitAllPresent(t *testing.T, name string, c *api.Client, a *acks, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		miss, err := missing(c, a)
		if err == nil && len(miss) == 0 {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			if err != nil {
				t.Fatalf("server %s: cannot list jobs and nodes after %v: %v", name, timeout, err)
			}
			shown := miss
			if len(shown) > 20 {
				shown = shown[:20]
			}
			t.Fatalf("server %s lost %d of %d acknowledged writes (after %v): %s", name, len(miss), len(a.jobs)+len(a.nodes), timeout, strings.Join(shown, ", "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkJobSpecs reads every acknowledged job in full and compares what a
// reader needs of it: a numbered job overwritten by a later one (a job id
// sequence that went back after the restart) shows another command.
// Then a job without an id must get a number not taken yet.
func checkJobSpecs(t *testing.T, name string, c *api.Client, a *acks) {
	t.Helper()
	ids := slices.Sorted(maps.Keys(a.jobs))
	for i := range ids {
		ctx, cancel := reqCtx()
		j, _, err := c.Job(ctx, ids[i], nil)
		cancel()
		if err != nil {
			t.Errorf("server %s: job %s: %v", name, ids[i], err)
			continue
		}
		if got := j.TaskGroups[0].Tasks[0].Config.Command; got != a.jobs[ids[i]] || j.Type != caravan.JobTypeBatch {
			t.Errorf("server %s: job %s came back as %s running %q, want batch running %q", name, ids[i], j.Type, got, a.jobs[ids[i]])
		}
	}
	resp := mustRegister(t, c, durableJob(""))
	if _, taken := a.jobs[resp.JobID]; taken {
		t.Errorf("server %s: a new job without an id got %s, a number taken before the restart", name, resp.JobID)
	}
	numbered := 0
	for _, id := range ids {
		if _, err := strconv.Atoi(id); err == nil {
			numbered++
		}
	}
	t.Logf("server %s: %d jobs read back (%d numbered by the servers); the next number is %s", name, len(ids), numbered, resp.JobID)
}

// checkNoHeartbeatSince checks that no acknowledged node shows a
// heartbeat after since: nothing heartbeats for them, and a server that
// restarts and leads again must not report the heartbeat timers it arms
// as heartbeats.
func checkNoHeartbeatSince(t *testing.T, name string, c *api.Client, a *acks, since time.Time) {
	t.Helper()
	ctx, cancel := reqCtx()
	defer cancel()
	nodes, _, err := c.Nodes(ctx, nil)
	if err != nil {
		t.Fatalf("server %s: list nodes: %v", name, err)
	}
	bad := 0
	for _, n := range nodes {
		if _, ours := a.nodes[n.ID]; ours && n.LastHeartbeat.After(since) {
			if bad == 0 {
				t.Errorf("server %s: node %s shows last_heartbeat %v, after the restart at %v, yet nothing heartbeats for it",
					name, n.Name, n.LastHeartbeat.Format(time.RFC3339Nano), since.Format(time.RFC3339Nano))
			}
			bad++
		}
	}
	if bad > 1 {
		t.Errorf("server %s: %d nodes in all show a heartbeat after the restart", name, bad)
	}
}

// TestServerKill9KeepsAcknowledgedWrites kills a single server with
// SIGKILL while four clients register jobs and nodes, starts it again on
// its data dir, and finds every acknowledged write.
func TestServerKill9KeepsAcknowledgedWrites(t *testing.T) {
	sb := newSandbox(t)
	srv := sb.newServer("solo", serverConfig("10s", "10s"))
	srv.start()
	t.Logf("first start: %v", srv.waitHealthy(t))
	c := sb.client(srv.addr)

	a := loadThenKill(t, []*api.Client{c}, 300, time.Second, func() { srv.proc.kill9(t) }, 100*time.Millisecond)

	srv.start()
	st := srv.waitHealthy(t)
	present := waitAllPresent(t, srv.name, c, a, 30*time.Second)
	t.Logf("restart after SIGKILL: %v; every acknowledged write readable %v after the start",
		st, (st.healthy + present).Round(time.Millisecond))
	checkJobSpecs(t, srv.name, c, a)
	checkNoHeartbeatSince(t, srv.name, c, a, srv.proc.started)

	// It takes writes again.
	mustRegister(t, c, durableJob("after-restart"))
	if ok, took := srv.proc.terminate(stopWait); !ok {
		t.Errorf("the server did not stop within %v of SIGTERM", stopWait)
	} else {
		t.Logf("stopped by SIGTERM in %v", took.Round(time.Millisecond))
	}
}

// TestClusterKill9AllServersKeepsAcknowledgedWrites runs three servers
// (the second and third started with --join), writes through all of them,
// kills all three with SIGKILL at once, starts them again, and checks that
// they elect a leader and that every server shows every acknowledged
// write.
func TestClusterKill9AllServersKeepsAcknowledgedWrites(t *testing.T) {
	sb := newSandbox(t)
	servers, clients := startCluster(t, sb)
	a := loadThenKill(t, clients, 300, time.Second, func() {
		for _, s := range servers {
			s.proc.mu.Lock()
			s.proc.stopped = true
			s.proc.mu.Unlock()
			_ = syscall.Kill(s.proc.Pid(), syscall.SIGKILL)
		}
		for _, s := range servers {
			s.proc.kill9(t) // waits for it to end
		}
	}, 100*time.Millisecond)

	restart := time.Now()
	for _, s := range servers {
		s.start()
	}
	for i, st := range waitHealthy(t, servers...) {
		t.Logf("%s restarted: %v", servers[i].name, st)
	}
	leaderAfter := time.Since(restart)
	var leader string
	waitFor(t, 30*time.Second, "one leader and 3 voters", func() bool {
		ctx, cancel := reqCtx()
		defer cancel()
		members, err := clients[0].Members(ctx)
		if err != nil {
			return false
		}
		leaders, voters := 0, 0
		for _, m := range members {
			if m.Leader {
				leaders++
				leader = m.ID
			}
			if m.Voter {
				voters++
			}
		}
		return leaders == 1 && voters == 3
	})
	t.Logf("all three healthy (a leader known) %v after the restart; leader %s", leaderAfter.Round(time.Millisecond), leader)
	for i, s := range servers {
		present := waitAllPresent(t, s.name, clients[i], a, 30*time.Second)
		t.Logf("%s shows every acknowledged write %v after it was healthy", s.name, present.Round(time.Millisecond))
		checkJobSpecs(t, s.name, clients[i], a)
	}
	// Writes work again, through a follower too.
	for i, s := range servers {
		mustRegister(t, clients[i], durableJob("after-restart-via-"+s.name))
	}
	for i, s := range servers {
		waitFor(t, 10*time.Second, s.name+" shows the writes after the restart", func() bool {
			ctx, cancel := reqCtx()
			defer cancel()
			jobs, _, err := clients[i].Jobs(ctx, &api.QueryOptions{Prefix: "after-restart-via-"})
			return err == nil && len(jobs) == 3
		})
	}
	for _, s := range servers {
		if ok, took := s.proc.terminate(stopWait); !ok {
			t.Errorf("%s did not stop within %v of SIGTERM", s.name, stopWait)
		} else {
			t.Logf("%s stopped by SIGTERM in %v", s.name, took.Round(time.Millisecond))
		}
	}
}

// startCluster starts three servers, the second and third with --join
// the first, and waits for 3 voters. It returns them with a client for
// each.
func startCluster(t *testing.T, sb *sandbox) ([]*daemon, []*api.Client) {
	t.Helper()
	conf := serverConfig("10s", "10s")
	s1 := sb.newServer("s1", conf)
	s1.start()
	t.Logf("s1 (bootstrap): %v", s1.waitHealthy(t))
	s2 := sb.newServer("s2", conf, s1.addr)
	s3 := sb.newServer("s3", conf, s1.addr)
	servers := []*daemon{s1, s2, s3}
	s2.start()
	s3.start()
	for i, st := range waitHealthy(t, s2, s3) {
		t.Logf("%s (--join %s): %v", servers[i+1].name, s1.addr, st)
	}
	took := waitFor(t, 30*time.Second, "3 voters", func() bool { return voters(sb.client(s1.addr)) == 3 })
	t.Logf("3 voters %v after the third server was healthy", took.Round(time.Millisecond))
	var clients []*api.Client
	for _, s := range servers {
		clients = append(clients, sb.client(s.addr))
	}
	return servers, clients
}

// leaderOf returns the server that leads, as c reports it.
func leaderOf(t *testing.T, c *api.Client, servers []*daemon) *daemon {
	t.Helper()
	var leader *daemon
	waitFor(t, 30*time.Second, "a leader", func() bool {
		ctx, cancel := reqCtx()
		defer cancel()
		members, err := c.Members(ctx)
		if err != nil {
			return false
		}
		for _, m := range members {
			for _, s := range servers {
				if m.Leader && m.ID == s.name {
					leader = s
				}
			}
		}
		return leader != nil
	})
	return leader
}

// TestClusterKill9LeaderKeepsAcknowledgedWrites kills the leader of three
// servers with SIGKILL while clients write through all three: the other
// two elect a leader and take writes again, and once the old leader is
// back every server shows every acknowledged write, from before and after
// the kill.
func TestClusterKill9LeaderKeepsAcknowledgedWrites(t *testing.T) {
	sb := newSandbox(t)
	servers, clients := startCluster(t, sb)
	leader := leaderOf(t, clients[0], servers)
	t.Logf("killing the leader, %s", leader.name)
	a := loadThenKill(t, clients, 300, time.Second, func() { leader.proc.kill9(t) }, 3*time.Second)
	if a.ackedAfter == 0 {
		t.Fatalf("no write sent after the leader died was acknowledged within 3s")
	}
	t.Logf("writes acknowledged again %v after the leader was killed", a.resumed.Round(time.Millisecond))
	var survivors []int
	for i, s := range servers {
		if s != leader {
			survivors = append(survivors, i)
		}
	}
	newLeader := leaderOf(t, clients[survivors[0]], servers)
	t.Logf("new leader: %s", newLeader.name)
	for _, i := range survivors {
		waitAllPresent(t, servers[i].name, clients[i], a, 30*time.Second)
	}

	leader.start()
	st := leader.waitHealthy(t)
	i := slices.Index(servers, leader)
	present := waitAllPresent(t, leader.name, clients[i], a, 30*time.Second)
	t.Logf("%s restarted: %v; it shows every acknowledged write %v after it was healthy", leader.name, st, present.Round(time.Millisecond))
	for i, s := range servers {
		checkJobSpecs(t, s.name, clients[i], a)
	}
	if n := voters(clients[i]); n != 3 {
		t.Errorf("%d voters after the old leader came back, want 3", n)
	}
}

// voters counts the voters a server knows (-1 on error).
func voters(c *api.Client) int {
	ctx, cancel := reqCtx()
	defer cancel()
	peers, err := c.Peers(ctx)
	if err != nil {
		return -1
	}
	return len(peers)
}
