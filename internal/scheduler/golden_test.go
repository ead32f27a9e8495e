package scheduler

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the expected plans of testdata/*.txt")

// TestGolden runs the scenarios in testdata/*.txt. Each file holds
// sections that start with "-- name --":
//
//	options   now=RFC3339 seed=N algorithm=A limit=N
//	nodes     one node per line: id key=value... (see parseNode)
//	job@V     an older version of the job, as JSON
//	job       the job, as JSON (canonicalized; version from "version")
//	allocs    one allocation per line: id key=value... (see parseAlloc)
//	eval      key=value...: id, trigger, node
//	plan      the expected plan, as renderPlan writes it
//
// Lines starting with # are comments. With -update the plan section is
// rewritten from the actual result.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := parseScenario(string(raw))
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			res, err := Compute(sc.state, sc.eval, sc.opts)
			if err != nil {
				t.Fatalf("Compute: %v", err)
			}
			got := renderPlan(sc.state, res.Plan)
			if *update {
				out := sc.head + "-- plan --\n" + got
				if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if diff := cmp.Diff(sc.want, got); diff != "" {
				t.Errorf("plan mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

type scenario struct {
	state *fakeState
	eval  *caravan.Evaluation
	opts  Options
	head  string // the file up to the plan section
	want  string
}

func parseScenario(text string) (*scenario, error) {
	sc := &scenario{state: newFakeState(), opts: Options{NewID: seqIDs()}}
	head, want, _ := strings.Cut(text, "-- plan --\n")
	sc.head, sc.want = head, want
	sections := map[string]string{}
	var order []string
	name := ""
	for _, line := range strings.SplitAfter(head, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "-- ") && strings.HasSuffix(trimmed, " --") {
			name = strings.TrimSuffix(strings.TrimPrefix(trimmed, "-- "), " --")
			order = append(order, name)
			continue
		}
		if name == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		sections[name] += line
	}
	if err := sc.parseOptions(sections["options"]); err != nil {
		return nil, err
	}
	for _, line := range lines(sections["nodes"]) {
		n, err := parseNode(line)
		if err != nil {
			return nil, err
		}
		sc.state.addNodes(n)
	}
	versions := map[uint64]*caravan.Job{}
	var job *caravan.Job
	for _, sec := range order {
		if sec != "job" && !strings.HasPrefix(sec, "job@") {
			continue
		}
		j := &caravan.Job{}
		if err := json.Unmarshal([]byte(sections[sec]), j); err != nil {
			return nil, fmt.Errorf("section %s: %w", sec, err)
		}
		j.Canonicalize()
		if v, ok := strings.CutPrefix(sec, "job@"); ok {
			n, _ := strconv.ParseUint(v, 10, 64)
			j.Version = n
		} else {
			job = j
		}
		versions[j.Version] = j
	}
	if job == nil {
		return nil, fmt.Errorf("no job section")
	}
	if !strings.Contains(sections["options"], "nojob") {
		sc.state.addJob(job)
	}
	for _, line := range lines(sections["allocs"]) {
		a, err := parseAlloc(line, job, versions)
		if err != nil {
			return nil, err
		}
		sc.state.addAlloc(a)
	}
	sc.eval = testEval(job, caravan.TriggerJobRegister)
	kv := fields(sections["eval"])
	if v := kv["id"]; v != "" {
		sc.eval.ID = v
	}
	if v := kv["trigger"]; v != "" {
		sc.eval.TriggeredBy = v
	}
	sc.eval.NodeID = kv["node"]
	return sc, nil
}

func (sc *scenario) parseOptions(text string) error {
	kv := fields(text)
	sc.opts.Now = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if v := kv["now"]; v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return err
		}
		sc.opts.Now = t
	}
	sc.opts.Seed, _ = strconv.ParseInt(kv["seed"], 10, 64)
	sc.opts.DefaultAlgorithm = kv["algorithm"]
	sc.opts.CandidateLimit, _ = strconv.Atoi(kv["limit"])
	return nil
}

func lines(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// fields reads "key=value" words; the first word without "=" is "id".
// Values may not hold blanks.
func fields(text string) map[string]string {
	kv := map[string]string{}
	for _, w := range strings.Fields(text) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			kv["id"] = w
			continue
		}
		kv[k] = v
	}
	return kv
}

func ints(s string) []int {
	var out []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		n, _ := strconv.Atoi(part)
		out = append(out, n)
	}
	return out
}

func atoi(s string, def int) int {
	if s == "" {
		return def
	}
	n, _ := strconv.Atoi(s)
	return n
}
