package systemtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/driver/docker"
	"github.com/caravan-sched/caravan/internal/testenv"
	"github.com/caravan-sched/caravan/internal/testimage"
)

// The myNomad-style examples of docs/api.md, as users send them; the
// container examples name a local test image (no registry can be reached)
// and its port.
const (
	helloJob = `{
  "id": "hello",
  "task_groups": [{
    "name": "greeter",
    "count": 2,
    "tasks": [{
      "name": "say",
      "resources": {"cpu": 100, "memory": 64},
      "config": {"command": "echo hello && sleep 3600"}
    }]
  }]
}`
	onceJob = `{"id": "once", "type": "batch",
  "task_groups": [{"name": "main", "tasks": [{"name": "run", "config": {"command": "echo hi"},
  "resources": {"cpu": 100, "memory": "256M"}}]}]}`
	webJob = `{
  "id": "%s",
  "task_groups": [{
    "name": "frontend",
    "count": 1,
    "tasks": [{
      "name": "httpd",
      "resources": {"cpu": 200, "memory": "128M"},
      "config": {"image": "%s", "port": 8080}
    }]
  }]
}`
)

// indexPage is what the test image's web server serves.
const indexPage = "hello from a caravan test container\n"

// nomadJob is the answer of GET /jobs/{id}: the job, its summary and its
// allocations.
type nomadJob struct {
	caravan.Job
	Summary     map[string]caravan.GroupSummary `json:"summary"`
	Allocations []*caravan.Allocation           `json:"allocations"`
}

// devProc is `caravan dev` with what its cleanup needs.
type devProc struct {
	*daemon
	// cgroup is the parent of the dev agent's task cgroups.
	cgroup string
	allocs map[string]bool // every allocation seen, for the cleanup
}

// TestDevModeMyNomadExamples runs `caravan dev` and sends it the
// myNomad-style examples of the API reference with raw JSON: a process
// job that keeps running (and a batch one that completes), listed by GET
// /jobs and read by GET /jobs/{id}; a container job whose published port
// answers; a container job whose image does not exist, which fails with a
// driver error naming the image. Then dev is killed with SIGKILL and
// started again: the process tasks and the container are re-attached, not
// restarted. Last, DELETE /jobs/{id}: the processes and the container are
// gone.
func TestDevModeMyNomadExamples(t *testing.T) {
	testenv.RequireCgroups(t)
	testenv.RequireDocker(t)
	sb := newSandbox(t)
	ctx := context.Background()
	dc := testimage.Client(t)
	image := buildHTTPImage(ctx, t)

	d := startDev(t, sb, dc)
	c := sb.client(d.addr)
	base := "http://" + d.addr

	// A process job that keeps running, and one that completes.
	var resp struct {
		JobID    string   `json:"job_id"`
		EvalID   string   `json:"eval_id"`
		Status   string   `json:"status"`
		Warnings []string `json:"warnings"`
	}
	submitted := time.Now()
	if code := sendJSON(t, sb, http.MethodPost, base+"/jobs", helloJob, &resp); code != http.StatusOK || resp.JobID != "hello" || resp.EvalID == "" {
		t.Fatalf("POST /jobs hello: %d %+v", code, resp)
	}
	if code := sendJSON(t, sb, http.MethodPost, base+"/jobs", onceJob, &resp); code != http.StatusOK || resp.JobID != "once" {
		t.Fatalf("POST /jobs once: %d %+v", code, resp)
	}
	var hello nomadJob
	took := waitFor(t, 30*time.Second, "GET /jobs/hello: running with 2 running allocations", func() bool {
		hello = nomadJob{}
		code := sendJSON(t, sb, http.MethodGet, base+"/jobs/hello", "", &hello)
		return code == http.StatusOK && hello.Status == caravan.JobStatusRunning && hello.Summary["greeter"].Running == 2 &&
			len(running(hello.Allocations)) == 2
	})
	t.Logf("hello: 2 allocations running %v after the submit", took.Round(time.Millisecond))
	var helloProcs []procID
	for _, a := range hello.Allocations {
		d.allocs[a.ID] = true
		ps := processes(taskPids(d.cgroup, a.ID, "say"))
		if !slices.ContainsFunc(ps, func(p procID) bool { return p.Comm == "sleep" }) {
			t.Errorf("allocation %s of hello runs no sleep: %+v", a.ID, ps)
		}
		helloProcs = append(helloProcs, ps...)
		var out strings.Builder
		lctx, cancel := reqCtx()
		if err := c.Logs(lctx, a.ID, api.LogOptions{Task: "say"}, &out); err != nil || out.String() != "hello\n" {
			t.Errorf("logs of %s: %q, %v", a.ID, out.String(), err)
		}
		cancel()
	}
	var once nomadJob
	waitFor(t, 30*time.Second, "GET /jobs/once: complete", func() bool {
		once = nomadJob{}
		return sendJSON(t, sb, http.MethodGet, base+"/jobs/once", "", &once) == http.StatusOK && once.Status == caravan.JobStatusComplete
	})
	t.Logf("once: complete %v after its submit", (time.Since(submitted)).Round(time.Millisecond))
	if len(once.Allocations) != 1 || once.Allocations[0].ClientStatus != caravan.AllocClientComplete || once.Summary["main"].Complete != 1 {
		t.Errorf("GET /jobs/once: summary %+v, allocations %+v", once.Summary, once.Allocations)
	}

	// A container job on a local image: its published port answers.
	submitted = time.Now()
	if code := sendJSON(t, sb, http.MethodPost, base+"/jobs", fmt.Sprintf(webJob, "web", image), &resp); code != http.StatusOK || resp.JobID != "web" {
		t.Fatalf("POST /jobs web: %d %+v", code, resp)
	}
	if !slices.ContainsFunc(resp.Warnings, func(w string) bool { return strings.Contains(w, "8080") }) {
		t.Errorf("POST /jobs web: no warning about the port: %q", resp.Warnings)
	}
	var web nomadJob
	waitFor(t, 60*time.Second, "GET /jobs/web: running", func() bool {
		web = nomadJob{}
		return sendJSON(t, sb, http.MethodGet, base+"/jobs/web", "", &web) == http.StatusOK && len(running(web.Allocations)) == 1
	})
	webAlloc := running(web.Allocations)[0]
	d.allocs[webAlloc.ID] = true
	hostPort := webAlloc.Resources.Port("port")
	if hostPort == 0 {
		t.Fatalf("the web allocation holds no port labelled port: %+v", webAlloc.Resources)
	}
	webURL := "http://127.0.0.1:" + strconv.Itoa(hostPort) + "/"
	var page string
	waitFor(t, 30*time.Second, "the container's web server on host port "+strconv.Itoa(hostPort), func() bool {
		page = get(sb, webURL)
		return page == indexPage
	})
	t.Logf("web: container answers on host port %d %v after the submit", hostPort, time.Since(submitted).Round(time.Millisecond))

	// A container job whose image exists nowhere fails with a driver
	// error that names the image.
	missing := "caravan-test-missing-" + randomHex(t) + ":latest"
	if code := sendJSON(t, sb, http.MethodPost, base+"/jobs", fmt.Sprintf(webJob, "web-missing", missing), &resp); code != http.StatusOK {
		t.Fatalf("POST /jobs web-missing: %d %+v", code, resp)
	}
	var failure *caravan.TaskEvent
	took = waitFor(t, 60*time.Second, "a driver failure naming the missing image", func() bool {
		var j nomadJob
		if sendJSON(t, sb, http.MethodGet, base+"/jobs/web-missing", "", &j) != http.StatusOK || len(j.Allocations) == 0 {
			return false
		}
		for _, a := range j.Allocations {
			d.allocs[a.ID] = true
			full := alloc(c, a.ID)
			if full == nil || full.TaskStates["httpd"] == nil {
				continue
			}
			for _, e := range full.TaskStates["httpd"].Events {
				if e.Type == caravan.TaskEventDriverFailure {
					failure = e
					return true
				}
			}
		}
		return false
	})
	t.Logf("web-missing: driver failure %v after the submit: %q", took.Round(time.Millisecond), failure.Message)
	if !strings.Contains(failure.Message, missing) {
		t.Errorf("the driver failure does not name the image %s: %q", missing, failure.Message)
	}

	// GET /jobs lists them all.
	var list []*caravan.JobStub
	if code := sendJSON(t, sb, http.MethodGet, base+"/jobs", "", &list); code != http.StatusOK {
		t.Fatalf("GET /jobs: %d", code)
	}
	var ids []string
	for _, j := range list {
		ids = append(ids, j.ID+"="+j.Status)
	}
	for _, want := range []string{"hello=running", "once=complete", "web=running"} {
		if !slices.Contains(ids, want) {
			t.Errorf("GET /jobs lacks %s: %v", want, ids)
		}
	}

	// SIGKILL dev (server and agent at once) and start it again on its
	// data dir: the process tasks and the container run on, re-attached,
	// and the finished batch job is not run again.
	webCtrs := containers(t, dc, webAlloc.ID, false)
	if len(webCtrs) != 1 {
		t.Fatalf("web runs %d containers, want 1", len(webCtrs))
	}
	nodeBefore := nodeNamed(c, "dev-node")
	d.proc.kill9(t)
	for _, p := range helloProcs {
		if !alive(p) {
			t.Errorf("hello process %+v died with dev", p)
		}
	}
	d.start()
	if n := d.waitReady(t); nodeBefore == nil || n.ID != nodeBefore.ID {
		t.Errorf("dev's node after the restart is %s, was %+v", n.ID, nodeBefore)
	}
	took = waitFor(t, 30*time.Second, "hello's and web's tasks reattached", func() bool {
		for _, a := range append(slices.Clone(hello.Allocations), webAlloc) {
			full := alloc(c, a.ID)
			if full == nil || full.ClientStatus != caravan.AllocClientRunning {
				return false
			}
			for _, ts := range full.TaskStates {
				if !slices.Contains(eventTypes(ts), caravan.TaskEventReattached) {
					return false
				}
			}
		}
		return true
	})
	t.Logf("after SIGKILL and restart of dev: tasks reattached %v after it was ready", took.Round(time.Millisecond))
	var helloNow []procID
	for _, a := range hello.Allocations {
		helloNow = append(helloNow, processes(taskPids(d.cgroup, a.ID, "say"))...)
	}
	if !slices.Equal(helloNow, helloProcs) {
		t.Errorf("hello's processes were %+v before the kill, %+v after the restart", helloProcs, helloNow)
	}
	if now := containers(t, dc, webAlloc.ID, false); len(now) != 1 || now[0].ID != webCtrs[0].ID {
		t.Errorf("web's container was %s before the kill, now %+v", webCtrs[0].ID, now)
	}
	if page := get(sb, webURL); page != indexPage {
		t.Errorf("web's page after the restart: %q", page)
	}
	for _, a := range append(append(slices.Clone(hello.Allocations), webAlloc), once.Allocations...) {
		if full := alloc(c, a.ID); full != nil {
			for name, ts := range full.TaskStates {
				if n := countOf(eventTypes(ts), caravan.TaskEventStarted); n != 1 {
					t.Errorf("task %s of %s started %d times: %v", name, a.Name, n, eventTypes(ts))
				}
			}
		}
	}
	if as := jobAllocs(c, "once"); len(as) != 1 || as[0].ClientStatus != caravan.AllocClientComplete {
		t.Errorf("once after the restart: %+v", as)
	}

	// DELETE /jobs/{id}: the processes and the container are gone.
	var stop struct {
		JobID  string `json:"job_id"`
		Status string `json:"status"`
	}
	deleted := time.Now()
	if code := sendJSON(t, sb, http.MethodDelete, base+"/jobs/hello", "", &stop); code != http.StatusOK || stop.Status != caravan.JobStatusStopped {
		t.Fatalf("DELETE /jobs/hello: %d %+v", code, stop)
	}
	if code := sendJSON(t, sb, http.MethodDelete, base+"/jobs/web", "", &stop); code != http.StatusOK || stop.Status != caravan.JobStatusStopped {
		t.Fatalf("DELETE /jobs/web: %d %+v", code, stop)
	}
	if code := sendJSON(t, sb, http.MethodPost, base+"/jobs/web-missing/delete", "", &stop); code != http.StatusOK || stop.Status != caravan.JobStatusStopped {
		t.Fatalf("POST /jobs/web-missing/delete: %d %+v", code, stop)
	}
	took = waitFor(t, 30*time.Second, "hello's processes gone", func() bool {
		if slices.ContainsFunc(helloProcs, alive) {
			return false
		}
		for _, a := range hello.Allocations {
			if len(taskPids(d.cgroup, a.ID, "say")) > 0 {
				return false
			}
		}
		return true
	})
	t.Logf("hello: processes gone %v after DELETE", took.Round(time.Millisecond))
	waitFor(t, 30*time.Second, "web's container gone and its port closed", func() bool {
		return len(containers(t, dc, webAlloc.ID, true)) == 0 && !dialable("127.0.0.1:"+strconv.Itoa(hostPort))
	})
	t.Logf("web: container stopped and port closed %v after DELETE", (time.Since(deleted)).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "GET /jobs/hello and /jobs/web: stopped", func() bool {
		var h, w nomadJob
		return sendJSON(t, sb, http.MethodGet, base+"/jobs/hello", "", &h) == http.StatusOK && h.Status == caravan.JobStatusStopped &&
			sendJSON(t, sb, http.MethodGet, base+"/jobs/web", "", &w) == http.StatusOK && w.Status == caravan.JobStatusStopped
	})

	if ok, took := d.proc.terminate(stopWait); !ok {
		t.Errorf("caravan dev did not stop within %v of SIGTERM", stopWait)
	} else {
		t.Logf("caravan dev stopped by SIGTERM in %v", took.Round(time.Millisecond))
	}
}

// startDev runs `caravan dev` on free ports with Docker on, and arranges
// its cleanup: a graceful stop (dev stops its tasks), then the removal of
// any container left of the allocations the test saw.
func startDev(t *testing.T, sb *sandbox, dc *client.Client) *devProc {
	t.Helper()
	httpPort, agentPort, raftPort := freePort(t), freePort(t), freePort(t)
	parent := sb.cgroupParent("dev")
	conf := sb.file("dev.hcl", fmt.Sprintf("log_level = \"debug\"\nagent {\n  cgroup_parent = %q\n}\n", parent))
	d := &devProc{
		daemon: &daemon{sb: sb, name: "dev", addr: "127.0.0.1:" + strconv.Itoa(httpPort), dataDir: sb.dir("dev")},
		cgroup: parent, allocs: map[string]bool{},
	}
	d.args = []string{"dev", "--config", conf, "--data-dir", d.dataDir, "--name", "dev", "--node-name", "dev-node",
		"--http-port", strconv.Itoa(httpPort), "--agent-port", strconv.Itoa(agentPort), "--raft-port", strconv.Itoa(raftPort)}
	d.start()
	t.Cleanup(func() {
		if d.proc.running() {
			var list []*caravan.Allocation
			if sendJSON(t, sb, http.MethodGet, "http://"+d.addr+"/v1/allocations", "", &list) == http.StatusOK {
				for _, a := range list {
					d.allocs[a.ID] = true
				}
			}
			if ok, _ := d.proc.terminate(stopWait); !ok {
				t.Errorf("caravan dev did not stop within %v of SIGTERM", stopWait)
			}
		}
		for id := range d.allocs {
			for _, ctr := range containers(t, dc, id, true) {
				t.Errorf("container %s of allocation %s left after the test; removing it", ctr.ID, id)
				_ = dc.ContainerRemove(context.Background(), ctr.ID, container.RemoveOptions{Force: true})
			}
		}
	})
	d.waitReady(t)
	return d
}

// waitReady waits until dev serves and its node is ready with healthy
// exec and docker drivers, and returns the node.
func (d *devProc) waitReady(t *testing.T) *caravan.Node {
	t.Helper()
	st := d.waitHealthy(t)
	c := d.sb.client(d.addr)
	n := readyNode(t, c, "dev-node", startWait)
	waitFor(t, 30*time.Second, "the docker driver healthy", func() bool {
		ctx, cancel := reqCtx()
		defer cancel()
		node, _, err := c.Node(ctx, n.ID, nil)
		return err == nil && node.Drivers["docker"].Healthy
	})
	t.Logf("caravan dev: %v, node ready with exec and docker %v after its start", st, time.Since(d.proc.started).Round(time.Millisecond))
	return n
}

// buildHTTPImage builds a busybox image whose command serves indexPage
// with busybox httpd on port 8080.
func buildHTTPImage(ctx context.Context, t *testing.T) string {
	t.Helper()
	files, err := testimage.BusyboxFiles(testenv.BusyboxPath(t))
	if err != nil {
		t.Fatal(err)
	}
	files[testimage.RootFS+"/www"] = testimage.File{Dir: true}
	files[testimage.RootFS+"/www/index.html"] = testimage.File{Data: []byte(indexPage)}
	dockerfile := "FROM scratch\nCOPY " + testimage.RootFS + "/ /\nEXPOSE 8080\nCMD [\"/bin/httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
	start := time.Now()
	tag := testimage.Build(ctx, t, "systest-httpd", files, dockerfile)
	t.Logf("built image %s in %v", tag, time.Since(start).Round(time.Millisecond))
	return tag
}

// containers lists the containers of an allocation (running ones only,
// unless all).
func containers(t *testing.T, dc *client.Client, allocID string, all bool) []container.Summary {
	t.Helper()
	ctx, cancel := reqCtx()
	defer cancel()
	list, err := dc.ContainerList(ctx, container.ListOptions{All: all, Filters: filters.NewArgs(filters.Arg("label", docker.LabelAllocID+"="+allocID))})
	if err != nil {
		t.Errorf("list containers: %v", err)
		return nil
	}
	return list
}

// sendJSON sends body (none when empty) with method to url and decodes
// the answer into out when it is 2xx. It returns the status code, 0 when
// the request failed.
func sendJSON(t *testing.T, sb *sandbox, method, url, body string, out any) int {
	t.Helper()
	ctx, cancel := reqCtx()
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := sb.http.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0
	}
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Errorf("%s %s: decode %s: %v", method, url, b, err)
		}
	} else if resp.StatusCode/100 != 2 {
		t.Logf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// get returns the body of GET url, or "" when it fails.
func get(sb *sandbox, url string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return ""
	}
	resp, err := sb.http.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return string(b)
}

func randomHex(t *testing.T) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
