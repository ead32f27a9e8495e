package jobspec

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// checkRoundTrip fails when a job that parsed does not come back the same
// through its own JSON.
func checkRoundTrip(t *testing.T, name string, src []byte, format Format) {
	job, err := ParseFormat(name, src, format)
	if err != nil {
		if err.Error() == "" {
			t.Fatal("empty error message")
		}
		return
	}
	b, err := json.Marshal(job)
	if err != nil {
		t.Fatalf("marshal parsed job: %v", err)
	}
	again, err := ParseFormat("again.json", b, FormatJSON)
	if err != nil {
		t.Fatalf("the job's own JSON does not parse: %v\n%s", err, b)
	}
	if diff := cmp.Diff(job, again, cmpopts.EquateEmpty()); diff != "" {
		t.Fatalf("round trip changed the job (-first +again):\n%s", diff)
	}
}

func addSeeds(f *testing.F, pattern string) {
	files, _ := filepath.Glob(filepath.Join("testdata", pattern))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

func FuzzParseJSON(f *testing.F) {
	addSeeds(f, "*.json")
	f.Add([]byte(`{"job": {"task_groups": [{"tasks": [{"config": {"command": "x"}}]}]}}`))
	f.Add([]byte(`{"task_groups": [{"count": 1e3, "tasks": [{"time_limit": 30, "resources": {"memory": "1.5G"}}]}]}`))
	f.Add([]byte(`{"id": "a", "id": "b", "meta": {"x": null}, "task_groups": null}`))
	f.Fuzz(func(t *testing.T, src []byte) {
		checkRoundTrip(t, "fuzz.json", src, FormatJSON)
	})
}

func FuzzParseHCL(f *testing.F) {
	addSeeds(f, "*.hcl")
	f.Add([]byte("job \"x\" {\n  group \"g\" {\n    task \"t\" {\n      config {\n        command = \"${attr.os} $${y}\"\n      }\n    }\n  }\n}\n"))
	f.Add([]byte("job {\n  meta { a = 1 }\n  group {\n    count = 1e400\n  }\n}\n"))
	f.Add([]byte("job \"x\" {\n  constraint {\n    attribute = attr.os\n  }\n  datacenters = [for d in [\"a\"] : d]\n}\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		checkRoundTrip(t, "fuzz.hcl", src, FormatHCL)
	})
}
