package caravan

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func testNode() *Node {
	n := &Node{
		ID:        NewID(),
		Resources: NodeResources{CPU: 4000, Memory: 8192, Cores: []int{0, 1, 2, 3}},
		Reserved:  NodeReserved{CPU: 100, Memory: 256, Ports: []int{22}},
	}
	n.Canonicalize()
	return n
}

func TestNodeFits(t *testing.T) {
	n := testNode()
	used := NodeUsage{}.Add(&AllocatedResources{CPU: 1000, Memory: 1024, Cores: []int{1}, Ports: []AllocatedPort{{Label: "http", Value: 20000}}})
	tests := []struct {
		name string
		r    AllocatedResources
		want string
	}{
		{"fits", AllocatedResources{CPU: 2000, Memory: 4096}, ""},
		{"exact capacity", AllocatedResources{CPU: 2900, Memory: 6912}, ""},
		{"cpu", AllocatedResources{CPU: 2901}, DimensionCPU},
		{"memory", AllocatedResources{Memory: 6913}, DimensionMemory},
		{"used core", AllocatedResources{Cores: []int{1}}, DimensionCores},
		{"unknown core", AllocatedResources{Cores: []int{9}}, DimensionCores},
		{"free core", AllocatedResources{Cores: []int{2}}, ""},
		{"used port", AllocatedResources{Ports: []AllocatedPort{{Value: 20000}}}, DimensionPorts},
		{"reserved port", AllocatedResources{Ports: []AllocatedPort{{Value: 22}}}, DimensionPorts},
		{"port twice", AllocatedResources{Ports: []AllocatedPort{{Value: 25000}, {Value: 25000}}}, DimensionPorts},
		{"port zero", AllocatedResources{Ports: []AllocatedPort{{Value: 0}}}, DimensionPorts},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, dim := n.Fits(used, &tt.r)
			if ok != (tt.want == "") || dim != tt.want {
				t.Errorf("Fits = %v %q, want %q", ok, dim, tt.want)
			}
		})
	}
}

func TestNodeUsageAddRemove(t *testing.T) {
	a := &AllocatedResources{CPU: 100, Memory: 64, Cores: []int{3, 1}, Ports: []AllocatedPort{{Value: 30000}, {Value: 20001}}}
	b := &AllocatedResources{CPU: 50, Memory: 32, Cores: []int{2}, Ports: []AllocatedPort{{Value: 20001}}}
	u := NodeUsage{}.Add(a).Add(b)
	want := NodeUsage{CPU: 150, Memory: 96, Cores: []int{1, 2, 3}, Ports: []int{20001, 20001, 30000}, Allocs: 2}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Fatalf("after Add (-want +got):\n%s", diff)
	}
	u = u.Remove(a)
	want = NodeUsage{CPU: 50, Memory: 32, Cores: []int{2}, Ports: []int{20001}, Allocs: 1}
	if diff := cmp.Diff(want, u); diff != "" {
		t.Fatalf("after Remove (-want +got):\n%s", diff)
	}
	if got := u.Remove(b); got.CPU != 0 || got.Allocs != 0 || got.Cores != nil || got.Ports != nil {
		t.Errorf("empty usage = %+v", got)
	}
	// Inputs are not modified.
	if diff := cmp.Diff([]int{3, 1}, a.Cores); diff != "" {
		t.Errorf("Add changed its input: %s", diff)
	}
}

func TestFreeCoresAndTaskCores(t *testing.T) {
	n := testNode()
	n.Reserved.Cores = []int{0}
	u := NodeUsage{Cores: []int{2}}
	if diff := cmp.Diff([]int{1, 3}, n.FreeCores(u)); diff != "" {
		t.Errorf("FreeCores: %s", diff)
	}
	tg := &TaskGroup{Tasks: []*Task{{Name: "a", Resources: Resources{Cores: 1}}, {Name: "b"}, {Name: "c", Resources: Resources{Cores: 2}}}}
	r := &AllocatedResources{Cores: []int{1, 3, 5}}
	if diff := cmp.Diff([]int{3, 5}, r.TaskCores(tg, "c")); diff != "" {
		t.Errorf("TaskCores c: %s", diff)
	}
	if got := r.TaskCores(tg, "b"); len(got) != 0 {
		t.Errorf("TaskCores b = %v", got)
	}
}

func TestDeriveJobStatus(t *testing.T) {
	two := 2
	batch := &Job{Type: JobTypeBatch, TaskGroups: []*TaskGroup{{Name: "g", Count: &two}}}
	tests := []struct {
		name string
		job  *Job
		s    map[string]GroupSummary
		open bool
		want string
	}{
		{"nothing yet", batch, nil, true, JobStatusPending},
		{"running", batch, map[string]GroupSummary{"g": {Running: 1, Complete: 1}}, false, JobStatusRunning},
		{"complete", batch, map[string]GroupSummary{"g": {Complete: 2}}, false, JobStatusComplete},
		{"failed", batch, map[string]GroupSummary{"g": {Complete: 1, Failed: 1}}, false, JobStatusFailed},
		{"waiting for retry", batch, map[string]GroupSummary{"g": {Complete: 1, Failed: 1}}, true, JobStatusPending},
		{"stopped", &Job{Stop: true}, map[string]GroupSummary{"g": {Running: 1}}, false, JobStatusStopped},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := DeriveJobStatus(tt.job, &JobSummary{Groups: tt.s}, tt.open)
			if got != tt.want {
				t.Errorf("status = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNewIDIsUUID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !ValidUUID(id) || id[14] != '4' || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "00000000000000000000000000000000000x"} {
		if ValidUUID(bad) {
			t.Errorf("ValidUUID(%q) = true", bad)
		}
	}
}
