package caravan

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func decodeJob(t *testing.T, s string) *Job {
	t.Helper()
	var j Job
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return &j
}

func TestCanonicalizeMyNomadJob(t *testing.T) {
	j := decodeJob(t, `{"id":"web","task_groups":[{"name":"g","count":2,"tasks":[
		{"name":"server","config":{"image":"nginx:latest","port":8080},"resources":{"cpu":200,"memory":"256M"}},
		{"name":"sidecar","config":{"command":"sleep 100"}}]}]}`)
	j.Canonicalize()
	if err := j.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	tg := j.TaskGroups[0]
	if got := tg.Tasks[0].Driver; got != DriverDocker {
		t.Errorf("driver of image task = %q", got)
	}
	if got := tg.Tasks[1].Driver; got != DriverExec {
		t.Errorf("driver of command task = %q", got)
	}
	wantPorts := []Port{{Label: DockerPortLabel, To: 8080}}
	if diff := cmp.Diff(wantPorts, tg.Tasks[0].Resources.Ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if tg.Tasks[1].Resources.Memory != DefaultMemoryMB || tg.Tasks[1].Resources.CPU != DefaultCPU {
		t.Errorf("default resources = %+v", tg.Tasks[1].Resources)
	}
	if j.Type != JobTypeService || j.Priority != DefaultPriority || j.NodePool != DefaultNodePool {
		t.Errorf("defaults: %s %d %s", j.Type, j.Priority, j.NodePool)
	}
	// Idempotent.
	before, _ := json.Marshal(j)
	j.Canonicalize()
	after, _ := json.Marshal(j)
	if string(before) != string(after) {
		t.Errorf("Canonicalize is not idempotent:\n%s\n%s", before, after)
	}
}

func TestCanonicalizeNamesSingleGroupAndTask(t *testing.T) {
	j := decodeJob(t, `{"task_groups":[{"tasks":[{"config":{"command":"true"}}]}]}`)
	j.Canonicalize()
	if err := j.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if j.TaskGroups[0].Name != "main" || j.TaskGroups[0].Tasks[0].Name != "main" {
		t.Errorf("names: %q %q", j.TaskGroups[0].Name, j.TaskGroups[0].Tasks[0].Name)
	}
}

func TestValidateReportsFieldPaths(t *testing.T) {
	tests := []struct {
		name string
		job  string
		want []string // paths expected in the error
	}{
		{"no groups", `{"id":"a","task_groups":[]}`, []string{"task_groups"}},
		{"bad type", `{"id":"a","type":"cron","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"type"}},
		{"bad id", `{"id":"has space","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"id"}},
		{"priority", `{"id":"a","priority":500,"task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"priority"}},
		{"no driver", `{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","config":{}}]}]}`, []string{"task_groups[0].tasks[0].driver"}},
		{"unknown driver", `{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","driver":"qemu","config":{"command":"x"}}]}]}`, []string{"task_groups[0].tasks[0].driver"}},
		{"negative count", `{"id":"a","task_groups":[{"name":"g","count":-1,"tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"task_groups[0].count"}},
		{"dup group", `{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]},{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"task_groups[1].name"}},
		{"bad regexp", `{"id":"a","constraints":[{"attribute":"${attr.os}","operator":"regexp","value":"("}],"task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"constraints[0].value"}},
		{"bad operator", `{"id":"a","task_groups":[{"name":"g","constraints":[{"attribute":"x","operator":"~~"}],"tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"task_groups[0].constraints[0].operator"}},
		{"cpu and cores", `{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"},"resources":{"cpu":100,"cores":1}}]}]}`, []string{"task_groups[0].tasks[0].resources.cpu"}},
		{"docker without image", `{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","driver":"docker","config":{"command":"x"}}]}]}`, []string{"task_groups[0].tasks[0].config.image"}},
		{"restart mode", `{"id":"a","task_groups":[{"name":"g","restart":{"attempts":1,"mode":"maybe"},"tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"task_groups[0].restart.mode"}},
		{"bad port", `{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"},"resources":{"ports":[{"label":"","value":70000}]}}]}]}`, []string{"task_groups[0].tasks[0].resources.ports[0].label", "task_groups[0].tasks[0].resources.ports[0].value"}},
		{"algorithm", `{"id":"a","algorithm":"random","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"algorithm"}},
		{"unnamed groups", `{"id":"a","task_groups":[{"tasks":[{"name":"t","config":{"command":"x"}}]},{"name":"b","tasks":[{"name":"t","config":{"command":"x"}}]}]}`, []string{"task_groups[0].name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := decodeJob(t, tt.job)
			j.Canonicalize()
			err := j.Validate()
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %v, want ErrInvalid", err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("not a ValidationError: %T", err)
			}
			for _, p := range tt.want {
				found := false
				for _, f := range ve.Fields {
					if f.Path == p {
						found = true
					}
				}
				if !found {
					t.Errorf("no error at %q in %v", p, err)
				}
			}
		})
	}
}

func TestValidateNullEntriesDoNotPanic(t *testing.T) {
	j := decodeJob(t, `{"id":"a","task_groups":[null,{"name":"g","tasks":[null]}]}`)
	j.Canonicalize()
	err := j.Validate()
	if err == nil || !strings.Contains(err.Error(), "null") {
		t.Fatalf("Validate = %v", err)
	}
}

func FuzzJobDecodeValidate(f *testing.F) {
	f.Add(`{"id":"web","task_groups":[{"name":"g","count":2,"tasks":[{"name":"t","config":{"image":"nginx","port":8080},"resources":{"cpu":200,"memory":"256M"}}]}]}`)
	f.Add(`{"task_groups":[{"tasks":[{"config":{"command":"sleep 1"}}]}]}`)
	f.Add(`{"id":"x","constraints":[{"attribute":"${attr.kernel}","operator":"version","value":">= 5"}],"task_groups":[]}`)
	f.Fuzz(func(t *testing.T, s string) {
		var j Job
		if json.Unmarshal([]byte(s), &j) != nil {
			return
		}
		j.Canonicalize()
		if err := j.Validate(); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("Validate returned a non-ErrInvalid error: %v", err)
		}
		_ = j.Copy()
	})
}
