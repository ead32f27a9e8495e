package httpapi

import (
	"errors"
	"strings"
	"testing"

	"github.com/caravan-sched/caravan"
)

func TestDecodeReportsPaths(t *testing.T) {
	tests := []struct {
		name, body, wantPath, wantText string
	}{
		{"unknown field", `{"job":{"id":"a","task_groups":[{"name":"g","tasks":[{"name":"t","confg":{}}]}]}}`,
			"job.task_groups[0].tasks[0].confg", `did you mean "config"`},
		{"wrong type", `{"job":{"id":"a","task_groups":[{"name":"g","count":"two"}]}}`,
			"job.task_groups[0].count", "whole number"},
		{"bad memory", `{"job":{"task_groups":[{"tasks":[{"resources":{"memory":"lots"}}]}]}}`,
			"job.task_groups[0].tasks[0].resources.memory", "invalid memory amount"},
		{"bad duration", `{"job":{"task_groups":[{"tasks":[{"time_limit":"soon"}]}]}}`,
			"job.task_groups[0].tasks[0].time_limit", "invalid duration"},
		{"not an object", `{"job":[1,2]}`, "job", "expected an object"},
		{"array expected", `{"job":{"task_groups":{"a":1}}}`, "job.task_groups", "expected an array"},
		{"map value", `{"job":{"meta":{"rack":5}}}`, "job.meta.rack", "expected a string"},
		{"syntax", `{"job":`, "", "not valid JSON"},
		{"empty", ``, "", "empty request body"},
		{"top-level array", `[1]`, "", "expected an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req caravan.JobRegisterRequest
			err := decodeBytes([]byte(tt.body), &req)
			if !errors.Is(err, caravan.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			var ve *caravan.ValidationError
			if !errors.As(err, &ve) || len(ve.Fields) == 0 {
				t.Fatalf("not a ValidationError: %v", err)
			}
			if ve.Fields[0].Path != tt.wantPath || !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("err = %v (path %q), want path %q and %q", err, ve.Fields[0].Path, tt.wantPath, tt.wantText)
			}
		})
	}
}

func TestDecodeAcceptsGoodJob(t *testing.T) {
	var req caravan.JobRegisterRequest
	body := `{"job":{"id":"web","type":"service","task_groups":[{"name":"g","count":2,"tasks":[{"name":"t",
		"config":{"image":"nginx","port":8080},"resources":{"cpu":100,"memory":"1G"},"kill_timeout":"3s"}]}]}}`
	if err := decodeBytes([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	if req.Job.TaskGroups[0].Tasks[0].Resources.Memory != 1024 || *req.Job.TaskGroups[0].Count != 2 {
		t.Errorf("decoded %+v", req.Job.TaskGroups[0])
	}
}

func FuzzDecodeJob(f *testing.F) {
	f.Add(`{"job":{"id":"web","task_groups":[{"name":"g","tasks":[{"name":"t","config":{"command":"x"}}]}]}}`)
	f.Add(`{"job":{"task_groups":[{"tasks":[{"resources":{"memory":"8G","ports":[{"label":"x","value":1}]}}]}]}}`)
	f.Add(`{"job":{"meta":{"a":"b"},"update":{"max_parallel":2}}}`)
	f.Fuzz(func(t *testing.T, body string) {
		var req caravan.JobRegisterRequest
		err := decodeBytes([]byte(body), &req)
		if err != nil && !errors.Is(err, caravan.ErrInvalid) {
			t.Fatalf("non-400 error for client input: %v", err)
		}
		if err == nil && req.Job != nil {
			req.Job.Canonicalize()
			_ = req.Job.Validate()
		}
	})
}

// BenchmarkDecodeJob decodes the body of a job registration as clients
// send it.
func BenchmarkDecodeJob(b *testing.B) {
	body := []byte(`{"job":{"id":"bench-00001","type":"service","spreads":[{"attribute":"${meta.rack}","weight":100}],
		"task_groups":[{"name":"g","count":1,"tasks":[{"name":"t","config":{"command":"sleep 1000"},
		"resources":{"cpu":100,"memory":128},"kill_timeout":"5s"}]}]}}`)
	for b.Loop() {
		var req caravan.JobRegisterRequest
		if err := decodeBytes(body, &req); err != nil {
			b.Fatal(err)
		}
	}
}
