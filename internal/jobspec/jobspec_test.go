package jobspec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHCLAndJSONDescribeTheSameJob(t *testing.T) {
	fromHCL, err := Parse("web.hcl", readTestdata(t, "web.hcl"))
	if err != nil {
		t.Fatalf("HCL: %v", err)
	}
	fromJSON, err := Parse("web.json", readTestdata(t, "web.json"))
	if err != nil {
		t.Fatalf("JSON: %v", err)
	}
	if diff := cmp.Diff(fromJSON, fromHCL); diff != "" {
		t.Errorf("HCL and JSON differ (-json +hcl):\n%s", diff)
	}

	j := fromHCL
	if got := j.Constraints[0].Attribute; got != "${attr.os}" {
		t.Errorf("constraint attribute = %q, want the literal ${attr.os}", got)
	}
	web := j.TaskGroups[0]
	if web.Name != "web" || web.GroupCount() != 3 {
		t.Errorf("group = %q count %d", web.Name, web.GroupCount())
	}
	server := web.Tasks[0]
	if server.Resources.Memory != 256 || server.TimeLimit.D() != time.Hour {
		t.Errorf("server resources %+v, time limit %v", server.Resources, server.TimeLimit)
	}
	wantPorts := []caravan.Port{{Label: "http", To: 8080}, {Label: "admin", Value: 9000}}
	if diff := cmp.Diff(wantPorts, server.Resources.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	wantScript := "#!/bin/sh\necho \"home is ${HOME}, literal ${x}\"\n"
	if got := web.Tasks[1].Config.Script; got != wantScript {
		t.Errorf("script = %q, want %q", got, wantScript)
	}
}

// The example of the design brief writes several attributes on one line
// in a block, which plain HCL refuses; caravan accepts it.
func TestOneLineBlocksWithSeveralAttributes(t *testing.T) {
	oneLine := `job "web" {
  type = "service"
  datacenters = ["dc1"]
  constraint { attribute = "${attr.os}"  operator = "="  value = "linux" }
  group "web" {
    count = 3
    restart { attempts = 2  delay = "5s"  interval = "1m"  mode = "fail" }
    task "server" {
      driver = "exec"   # optional: inferred
      config { command = "/bin/sleep"  args = ["1000"] }
      resources { cpu = 200  memory = "256M" }
      env = { FOO = "bar" }
      time_limit = "1h"
    }
  }
}
`
	spread := `job "web" {
  type = "service"
  datacenters = ["dc1"]
  constraint {
    attribute = "${attr.os}"
    operator  = "="
    value     = "linux"
  }
  group "web" {
    count = 3
    restart {
      attempts = 2
      delay    = "5s"
      interval = "1m"
      mode     = "fail"
    }
    task "server" {
      driver = "exec"
      config {
        command = "/bin/sleep"
        args    = ["1000"]
      }
      resources {
        cpu    = 200
        memory = "256M"
      }
      env        = { FOO = "bar" }
      time_limit = "1h"
    }
  }
}
`
	a, err := Parse("one.hcl", []byte(oneLine))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("spread.hcl", []byte(spread))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(b, a); diff != "" {
		t.Errorf("one-line blocks differ (-spread +one-line):\n%s", diff)
	}
	// Unchanged input is returned as is.
	if got := relaxOneLineBlocks([]byte(spread)); string(got) != spread {
		t.Errorf("a file without one-line blocks was changed:\n%s", got)
	}
}

func TestParseSmallForms(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            func(*caravan.Job) string // returns a problem, or ""
	}{
		{
			name: "job without an id",
			file: "a.hcl",
			src:  "job {\n  group \"g\" {\n    task \"t\" {\n      config {\n        command = \"true\"\n      }\n    }\n  }\n}\n",
			want: func(j *caravan.Job) string {
				if j.ID != "" || j.TaskGroups[0].Tasks[0].Config.Command != "true" {
					return "unexpected job"
				}
				return ""
			},
		},
		{
			name: "env as a map attribute and numbers converted",
			file: "a.hcl",
			src:  "job \"x\" {\n  group \"g\" {\n    count = \"2\"\n    task \"t\" {\n      env = { A = \"1\", \"B.C\" = 2 }\n      config {\n        command = \"true\"\n      }\n    }\n  }\n}\n",
			want: func(j *caravan.Job) string {
				if j.TaskGroups[0].GroupCount() != 2 {
					return "count not converted"
				}
				if diff := cmp.Diff(map[string]string{"A": "1", "B.C": "2"}, j.TaskGroups[0].Tasks[0].Env); diff != "" {
					return diff
				}
				return ""
			},
		},
		{
			name: "the API's request body is a job file too",
			file: "a.json",
			src:  `{"job": {"id": "x", "task_groups": [{"tasks": [{"config": {"command": "true"}}]}]}}`,
			want: func(j *caravan.Job) string {
				if j.ID != "x" {
					return "id " + j.ID
				}
				return ""
			},
		},
		{
			name: "JSON found by content on stdin",
			file: "-",
			src:  "  {\"task_groups\": [{\"tasks\": [{\"config\": {\"image\": \"busybox\"}}]}]}",
			want: func(j *caravan.Job) string {
				if j.TaskGroups[0].Tasks[0].Config.Image != "busybox" {
					return "image missing"
				}
				return ""
			},
		},
		{
			name: "HCL found by content on stdin, with escaped interpolation",
			file: "-",
			src:  "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      config {\n        command = \"echo $${HOME} ${ meta.rack }\"\n      }\n    }\n  }\n}\n",
			want: func(j *caravan.Job) string {
				if got := j.TaskGroups[0].Tasks[0].Config.Command; got != "echo ${HOME} ${meta.rack}" {
					return "command " + got
				}
				return ""
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Parse(tt.file, []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if p := tt.want(j); p != "" {
				t.Error(p)
			}
		})
	}
}

func TestParseErrorsSayWhere(t *testing.T) {
	tests := []struct {
		name, file, src string
		want            []string // each must appear in the error
	}{
		{
			name: "JSON unknown field with suggestion",
			file: "bad.json",
			src:  "{\n  \"id\": \"x\",\n  \"task_groups\": [{\n    \"tasks\": [{\"confg\": {}}]\n  }]\n}\n",
			want: []string{`bad.json:4:16: task_groups[0].tasks[0].confg: unknown field (did you mean "config"?)`},
		},
		{
			name: "JSON bad memory and wrong kind",
			file: "bad.json",
			src:  "{\"task_groups\": [{\"count\": \"3\",\n \"tasks\": [{\"resources\": {\"memory\": \"lots\"}}]}]}",
			want: []string{
				`bad.json:1:28: task_groups[0].count: expected a whole number, got "3" (a string)`,
				`bad.json:2:37: task_groups[0].tasks[0].resources.memory: invalid memory amount "lots"`,
			},
		},
		{
			name: "JSON syntax error",
			file: "bad.json",
			src:  "{\n  \"id\": \"x\",\n  \"task_groups\": [}\n",
			want: []string{"bad.json:3:18: invalid JSON"},
		},
		{
			name: "JSON duplicate field",
			file: "bad.json",
			src:  "{\"id\": \"a\",\n\"id\": \"b\"}",
			want: []string{"bad.json:2:1: id: given twice (first on line 1)"},
		},
		{
			name: "JSON trailing text",
			file: "bad.json",
			src:  "{\"task_groups\": [{\"tasks\": [{\"config\": {\"command\": \"x\"}}]}]} {}",
			want: []string{"bad.json:1:62: unexpected text after the job object"},
		},
		{
			name: "validation problems are placed",
			file: "bad.json",
			src:  "{\n \"type\": \"daily\",\n \"task_groups\": [{\n  \"tasks\": [{\"config\": {\"command\": \"x\"},\n   \"resources\": {\"cpu\": 100, \"cores\": 2}}]}]}",
			want: []string{
				`bad.json:2:2: type: unknown job type "daily"`,
				`bad.json:5:18: task_groups[0].tasks[0].resources.cpu: give cpu or cores, not both`,
			},
		},
		{
			name: "HCL syntax error",
			file: "bad.hcl",
			src:  "job \"x\" {\n  group \"g\" {\n    restart { attempts = 2  inner { } }\n  }\n}\n",
			want: []string{"bad.hcl:3:29: Invalid single-argument block definition"},
		},
		{
			name: "HCL error inside a one-line block keeps its place",
			file: "bad.hcl",
			src:  "job \"x\" {\n  group \"g\" {\n    restart { attempts = 2  delay = \"soon\" }\n  }\n}\n",
			want: []string{`bad.hcl:3:29: task_groups[0].restart.delay: invalid duration "soon"`},
		},
		{
			name: "HCL unknown attribute and block",
			file: "bad.hcl",
			src:  "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      resources {\n        memroy = 3\n      }\n      networks {}\n    }\n  }\n}\n",
			want: []string{
				`bad.hcl:5:9: task_groups[0].tasks[0].resources.memroy: unknown attribute "memroy" (did you mean "memory"?)`,
				`bad.hcl:7:7: task_groups[0].tasks[0].networks: unknown block "networks"`,
			},
		},
		{
			name: "HCL bad values",
			file: "bad.hcl",
			src:  "job \"x\" {\n  group \"g\" {\n    count = \"three\"\n    task \"t\" {\n      time_limit = \"soon\"\n      config {\n        command = \"x\"\n      }\n    }\n  }\n}\n",
			want: []string{
				"bad.hcl:3:13: task_groups[0].count: expected number",
				`bad.hcl:5:7: task_groups[0].tasks[0].time_limit: invalid duration "soon"`,
			},
		},
		{
			name: "HCL reference without quotes and expression in a template",
			file: "bad.hcl",
			src:  "job \"x\" {\n  constraint {\n    attribute = attr.os\n    value = \"${upper(\"x\")}\"\n  }\n}\n",
			want: []string{
				`bad.hcl:3:17: constraints[0].attribute: attr.os is a reference: write a string, such as "${attr.os}"`,
				"bad.hcl:4:16: constraints[0].value: only references such as ${attr.os}",
			},
		},
		{
			name: "HCL shape mistakes",
			file: "bad.hcl",
			src:  "job \"x\" {\n  id = \"y\"\n  status = \"running\"\n  update = 3\n  datacenters {}\n  restart {}\n  group \"a\" \"b\" {}\n}\njob \"z\" {}\n",
			want: []string{
				"bad.hcl:2:3: id: the id is already given as the block's label",
				"bad.hcl:3:3: status: status is set by the server",
				"bad.hcl:4:3: update: update is a block: write update { ... }",
				"bad.hcl:5:3: datacenters: datacenters is an attribute",
				`bad.hcl:6:3: restart: unknown block "restart"`,
				"bad.hcl:7:13: task_groups[0]: a group block takes one label, its name",
				"bad.hcl:9:1: a job file holds one job block; the first is on line 1",
			},
		},
		{
			name: "HCL without a job",
			file: "bad.hcl",
			src:  "group \"g\" {}\n",
			want: []string{`bad.hcl:1:1: unexpected block "group"`},
		},
		{
			name: "HCL validation placed at the block",
			file: "bad.hcl",
			src:  "job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      driver = \"podman\"\n    }\n  }\n}\n",
			want: []string{`bad.hcl:4:7: task_groups[0].tasks[0].driver: unknown driver "podman"`},
		},
		{
			name: "empty input",
			file: "-",
			src:  "",
			want: []string{"<stdin>:1:1: no job block"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.file, []byte(tt.src))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("error %T does not match ErrInvalid", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestManyProblemsAreCut(t *testing.T) {
	var b strings.Builder
	b.WriteString("{\n")
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&b, "\"nope%d\": 1,\n", i)
	}
	b.WriteString("\"id\": \"x\"}")
	_, err := Parse("many.json", []byte(b.String()))
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v", err)
	}
	if len(pe.Problems) != maxProblems+1 || !strings.Contains(pe.Problems[maxProblems].Message, "and 20 more") {
		t.Errorf("got %d problems, last %+v", len(pe.Problems), pe.Problems[len(pe.Problems)-1])
	}
}
