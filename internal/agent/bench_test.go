package agent

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testenv"
)

// benchTasks is how many sleep tasks BenchmarkAgentMemory runs;
// CARAVAN_BENCH_TASKS overrides it.
const benchTasks = 500

func benchTaskCount() int {
	if n, err := strconv.Atoi(os.Getenv("CARAVAN_BENCH_TASKS")); err == nil && n > 0 {
		return n
	}
	return benchTasks
}

// treePSS is the proportional set size of a process tree, split by kind.
type treePSS struct {
	agent, supervisors, tasks  int64 // kB
	supervisorCount, taskCount int
}

// measureTree sums PSS from /proc/<pid>/smaps_rollup over root and every
// descendant. Supervisors are the `caravan supervise` processes; their
// descendants are the tasks.
func measureTree(root int) treePSS {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid := parentPid(pid); ppid > 0 {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out treePSS
	var walk func(pid int, underSupervisor bool)
	walk = func(pid int, underSupervisor bool) {
		pss := pssKB(pid)
		isSupervisor := !underSupervisor && pid != root && isSuperviseCmd(pid)
		switch {
		case pid == root:
			out.agent += pss
		case isSupervisor:
			out.supervisors += pss
			out.supervisorCount++
		case underSupervisor:
			out.tasks += pss
			out.taskCount++
		default:
			out.agent += pss // other helpers of the agent
		}
		for _, c := range children[pid] {
			walk(c, underSupervisor || isSupervisor)
		}
	}
	walk(root, false)
	return out
}

func parentPid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func isSuperviseCmd(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	args := strings.Split(string(b), "\x00")
	return len(args) > 1 && args[1] == "supervise"
}

func pssKB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

func settle() {
	runtime.GC()
	debug.FreeOSMemory()
	time.Sleep(500 * time.Millisecond)
}

// BenchmarkAgentMemory measures the memory of the agent's process tree
// idle and with benchTasks (500) running `sleep` tasks, each in its own
// allocation under the real exec driver. It reports MB per task: the
// growth of the whole tree (agent, supervisors and the sleep processes),
// and the part of it that is caravan's own (without the tasks themselves).
//
// The supervisor is the real `caravan supervise` (caravan-binary), and, for
// comparison, the same supervisor built alone (small-supervisor,
// testdata/supervise): a Go process pays at start for the init of every
// package linked into it.
//
//	go test -run '^$' -bench BenchmarkAgentMemory -benchtime=1x ./internal/agent/
func BenchmarkAgentMemory(b *testing.B) {
	testenv.RequireCgroups(b)
	b.Run("caravan-binary", func(b *testing.B) {
		bin := testenv.CaravanBinary(b)
		for b.Loop() {
			benchAgentMemory(b, []string{bin, "supervise"})
		}
	})
	b.Run("small-supervisor", func(b *testing.B) {
		bin := filepath.Join(b.TempDir(), "supervise")
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/supervise")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build the small supervisor: %v\n%s", err, out)
		}
		for b.Loop() {
			benchAgentMemory(b, []string{bin, "supervise"})
		}
	})
}

func benchAgentMemory(b *testing.B, supervise []string) {
	srv := newFakeServer(b, 5*time.Second)
	base, err := os.MkdirTemp("", "caravan-agent-bench-")
	if err != nil {
		b.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		b.Fatal(err)
	}
	cfg := Config{
		DataDir: base, Servers: []string{srv.addr()}, HTTPAddr: "127.0.0.1:0", NodeName: "bench",
		SupervisorCommand: supervise, CgroupParent: testCgroupParent,
		DisableDocker: true, StopTasksOnShutdown: true, UpdateInterval: 200 * time.Millisecond,
	}
	b.Cleanup(func() {
		destroyLeftovers(b, cfg)
		os.RemoveAll(base)
		removeTestCgroupParent()
	})
	a := startAgent(b, cfg)
	waitFor(b, 30*time.Second, "registration", func() bool { return srv.node(a.NodeID()) != nil })
	settle()
	idle := measureTree(os.Getpid())

	n := benchTaskCount()
	var ids []string
	for range n {
		task := execTask("sleep", "sleep")
		task.Config.Args = []string{"3600"}
		task.Resources.Memory = 32
		al := testAlloc(a.NodeID(), testJob(caravan.JobTypeService, task))
		srv.addAlloc(al)
		ids = append(ids, al.ID)
	}
	waitFor(b, 5*time.Minute, "every task running", func() bool {
		for _, id := range ids {
			if al := srv.alloc(id); al == nil || al.ClientStatus != caravan.AllocClientRunning {
				return false
			}
		}
		return true
	})
	// Supervisors return what their start left unused once their task
	// ran a second.
	time.Sleep(2 * time.Second)
	settle()
	busy := measureTree(os.Getpid())

	perTask := func(kb int64) float64 { return float64(kb) / 1024 / float64(n) }
	total := (busy.agent + busy.supervisors + busy.tasks) - (idle.agent + idle.supervisors + idle.tasks)
	b.ReportMetric(float64(idle.agent)/1024, "MB-idle-agent")
	b.ReportMetric(perTask(total), "MB/task-tree")
	b.ReportMetric(perTask(total-busy.tasks), "MB/task-caravan")
	b.ReportMetric(perTask(busy.agent-idle.agent), "MB/task-agent")
	b.ReportMetric(perTask(busy.supervisors), "MB/task-supervisor")
	b.ReportMetric(perTask(busy.tasks), "MB/task-sleep")
	b.Logf("idle: agent %d kB; with %d tasks: agent %d kB, %d supervisors %d kB, %d task processes %d kB",
		idle.agent, n, busy.agent, busy.supervisorCount, busy.supervisors, busy.taskCount, busy.tasks)
	a.stop(b)
}
