package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/testcluster"
)

// TestScripts runs testdata/script/*.txt: each is a list of commands
// followed by the files they use, against a fresh server.
//
// A script line is a command with arguments (single quotes group words),
// optionally prefixed by "!" to expect the opposite. $WORK is the script's
// directory, $ADDR the server, and setjson defines more variables.
//
//	caravan ARGS...        run the command line in-process; it must exit 0
//	                       (with "!": it must fail)
//	status N               the last caravan command exited with code N
//	stdout RE, stderr RE   the last output matches the regexp (multi-line)
//	json                   the last stdout is valid JSON
//	setjson VAR PATH       VAR = the value at PATH (a.b.0.c) of the last stdout
//	nodes N [memory=MB] [runfor=DURATION] [attr.K=V]...
//	                       start N simulated nodes (sim-0, sim-1, ...)
//	waitjob ID STATUS      wait up to 20s for the job to reach STATUS
//	waitallocs ID STATUS N wait up to 20s for N allocations of the job in STATUS
//	stdin FILE             the next caravan command reads FILE as stdin
//	cut VAR N              keep the first N characters of VAR
//
// Files follow the commands, each after a line "-- name --".
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "script", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			runScript(t, file, string(src))
		})
	}
}

// script is the state of one running script.
type script struct {
	t      *testing.T
	file   string
	ctx    context.Context
	server *testServer
	vars   map[string]string
	last   result
	ran    bool
	stdin  string
}

func runScript(t *testing.T, file, src string) {
	commands, files := splitScript(src)
	work := t.TempDir()
	for name, content := range files {
		path := filepath.Join(work, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, path, content)
	}
	s := &script{t: t, file: file, ctx: testContext(t), server: startServer(t), vars: map[string]string{"WORK": work}}
	s.vars["ADDR"] = s.server.addr
	for i, line := range commands {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := s.exec(line); err != nil {
			t.Fatalf("%s:%d: %s\n%v", file, i+1, line, err)
		}
	}
}

// splitScript separates the commands from the files of a script.
func splitScript(src string) ([]string, map[string]string) {
	files := map[string]string{}
	lines := strings.SplitAfter(src, "\n")
	var commands []string
	current := ""
	for _, l := range lines {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "-- ") && strings.HasSuffix(trimmed, " --") && len(trimmed) > 6 {
			current = strings.TrimSpace(trimmed[3 : len(trimmed)-3])
			files[current] = ""
			continue
		}
		if current == "" {
			commands = append(commands, strings.TrimSuffix(l, "\n"))
		} else {
			files[current] += l
		}
	}
	return commands, files
}

var varPattern = regexp.MustCompile(`\$(\w+)|\$\{(\w+)\}`)

// expand replaces $NAME and ${NAME} of known variables.
func (s *script) expand(arg string) string {
	return varPattern.ReplaceAllStringFunc(arg, func(m string) string {
		name := strings.Trim(m, "${}")
		if v, ok := s.vars[name]; ok {
			return v
		}
		return m
	})
}

// words splits a line into words; single quotes group words.
func words(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, r := range line {
		switch {
		case r == '\'':
			inQuote, have = !inQuote, true
		case !inQuote && (r == ' ' || r == '\t'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(r)
			have = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	if have {
		out = append(out, cur.String())
	}
	return out, nil
}

func (s *script) exec(line string) error {
	ws, err := words(line)
	if err != nil {
		return err
	}
	negate := false
	if ws[0] == "!" {
		negate, ws = true, ws[1:]
	}
	for i := range ws {
		ws[i] = s.expand(ws[i])
	}
	cmd, args := ws[0], ws[1:]
	switch cmd {
	case "caravan":
		return s.caravan(args, negate)
	case "status":
		want, err := strconv.Atoi(args[0])
		if err != nil {
			return err
		}
		if s.last.code != want {
			return fmt.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", s.last.code, want, s.last.stdout, s.last.stderr)
		}
	case "stdout", "stderr":
		out := s.last.stdout
		if cmd == "stderr" {
			out = s.last.stderr
		}
		re, err := regexp.Compile("(?m)" + strings.Join(args, " "))
		if err != nil {
			return err
		}
		if re.MatchString(out) == negate {
			return fmt.Errorf("%s does not match as expected (negated: %v)\n%s:\n%s", cmd, negate, cmd, out)
		}
	case "json":
		if !json.Valid([]byte(s.last.stdout)) {
			return fmt.Errorf("stdout is not valid JSON:\n%s", s.last.stdout)
		}
	case "setjson":
		v, err := jsonPath(s.last.stdout, args[1])
		if err != nil {
			return err
		}
		s.vars[args[0]] = v
	case "nodes":
		return s.nodes(args)
	case "waitjob":
		return s.waitJob(args[0], args[1])
	case "waitallocs":
		n, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		return s.waitAllocs(args[0], args[1], n)
	case "cut":
		n, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		s.vars[args[0]] = s.vars[args[0]][:min(n, len(s.vars[args[0]]))]
	case "stdin":
		s.stdin = filepath.Join(s.vars["WORK"], args[0])
	default:
		return fmt.Errorf("unknown script command %q", cmd)
	}
	return nil
}

func (s *script) caravan(args []string, negate bool) error {
	var stdin *os.File
	if s.stdin != "" {
		f, err := os.Open(s.stdin)
		if err != nil {
			return err
		}
		defer f.Close()
		stdin, s.stdin = f, ""
	}
	vars := []string{"CARAVAN_ADDR=" + s.server.addr}
	if stdin != nil {
		s.last = runCLI(s.ctx, vars, stdin, args...)
	} else {
		s.last = runCLI(s.ctx, vars, nil, args...)
	}
	s.t.Logf("$ caravan %s\n%s%s(exit %d)", strings.Join(args, " "), s.last.stdout, s.last.stderr, s.last.code)
	if (s.last.code != 0) != negate {
		return fmt.Errorf("exit code %d (negated: %v)\nstdout:\n%s\nstderr:\n%s", s.last.code, negate, s.last.stdout, s.last.stderr)
	}
	return nil
}

// nodes starts simulated nodes that report their allocations running (and,
// with runfor, complete after that long).
func (s *script) nodes(args []string) error {
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	var memory int
	var runFor time.Duration
	attrs := map[string]string{}
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(a, "=")
		switch {
		case k == "memory":
			memory, err = strconv.Atoi(v)
		case k == "runfor":
			runFor, err = time.ParseDuration(v)
		case strings.HasPrefix(k, "attr."):
			attrs[strings.TrimPrefix(k, "attr.")] = v
		default:
			err = fmt.Errorf("unknown node option %q", a)
		}
		if err != nil {
			return err
		}
	}
	behavior := testcluster.RunForever
	if runFor > 0 {
		behavior = func(*caravan.Allocation) testcluster.Outcome { return testcluster.Outcome{RunFor: runFor} }
	}
	for i := 0; i < n; i++ {
		node := testcluster.NewSimNode(fmt.Sprintf("sim-%d", i), attrs, nil)
		if memory > 0 {
			node.Resources.Memory = caravan.MemoryMB(memory)
		}
		sn, err := testcluster.StartSimNode(s.ctx, []string{s.server.addr}, node, behavior)
		if err != nil {
			return err
		}
		s.t.Cleanup(sn.Stop)
	}
	return nil
}

func (s *script) waitJob(id, status string) error {
	c := s.server.client(s.t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		job, _, err := c.Job(s.ctx, id, nil)
		if err == nil && job.Status == status {
			return nil
		}
		if time.Now().After(deadline) {
			got := "?"
			if job != nil {
				got = job.Status
			}
			return fmt.Errorf("job %s is %s after 20s, want %s (%v)", id, got, status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *script) waitAllocs(job, status string, n int) error {
	c := s.server.client(s.t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		allocs, _, err := c.JobAllocations(s.ctx, job, nil)
		count := 0
		for _, a := range allocs {
			if a.ClientStatus == status {
				count++
			}
		}
		if err == nil && count == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %s has %d %s allocations after 20s, want %d (%v)", job, count, status, n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsonPath reads the value at a dotted path (object keys and list indexes)
// of a JSON document, as text.
func jsonPath(doc, path string) (string, error) {
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		return "", fmt.Errorf("stdout is not JSON: %w", err)
	}
	for _, part := range strings.Split(path, ".") {
		switch cur := v.(type) {
		case map[string]any:
			v = cur[part]
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(cur) {
				return "", fmt.Errorf("%s: no item %q", path, part)
			}
			v = cur[i]
		default:
			return "", fmt.Errorf("%s: %q is not inside an object or list", path, part)
		}
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case nil:
		return "", fmt.Errorf("%s: no value", path)
	}
	b, _ := json.Marshal(v)
	return string(b), nil
}
