package taskrunner

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
)

func TestEnv(t *testing.T) {
	web := &caravan.Task{Name: "web", Driver: caravan.DriverExec,
		Env:       map[string]string{"GREETING": "hi", "CARAVAN_ALLOC_ID": "forged"},
		Resources: caravan.Resources{CPU: 500, Memory: 256, Ports: []caravan.Port{{Label: "http"}}},
		Meta:      map[string]string{"tier": "task"}}
	batch := &caravan.Task{Name: "crunch", Driver: caravan.DriverDocker,
		Resources: caravan.Resources{Cores: 2, Memory: 1024, Ports: []caravan.Port{{Label: "admin-ui", To: 9000}}}}
	job := &caravan.Job{ID: "1001", Name: "nightly", Meta: map[string]string{"owner": "ops", "tier": "job"},
		TaskGroups: []*caravan.TaskGroup{{Name: "g", Meta: map[string]string{"zone.name": "a"}, Tasks: []*caravan.Task{web, batch}}}}
	alloc := &caravan.Allocation{ID: "0b6ef2a6-0d5a-4f6e-9c36-3c3f8a1d1c2e", JobID: "1001", Job: job, TaskGroup: "g", Index: 3, Name: "1001.g[3]",
		Resources: caravan.AllocatedResources{Cores: []int{4, 5}, Ports: []caravan.AllocatedPort{{Label: "http", Value: 21000}, {Label: "admin-ui", Value: 22000, To: 9000}}}}
	node := NodeInfo{ID: "node-id", Name: "n1", Datacenter: "dc1", Address: "10.0.0.5", MHzPerCore: 2000}

	got := Env(alloc, web, node, "/data/alloc/A", "/data/alloc/A/web")
	want := map[string]string{
		"GREETING": "hi", "PATH": defaultPath, "TMPDIR": "/data/alloc/A/web/tmp",
		"CARAVAN_JOB_ID": "1001", "CARAVAN_JOB_NAME": "nightly", "CARAVAN_ALLOC_ID": alloc.ID,
		"CARAVAN_ALLOC_INDEX": "3", "CARAVAN_ALLOC_NAME": "1001.g[3]", "CARAVAN_GROUP_NAME": "g",
		"CARAVAN_TASK_NAME": "web", "CARAVAN_TASK_DIR": "/data/alloc/A/web", "CARAVAN_ALLOC_DIR": "/data/alloc/A/alloc",
		"CARAVAN_CPU_LIMIT": "500", "CARAVAN_MEMORY_LIMIT": "256",
		"CARAVAN_NODE_ID": "node-id", "CARAVAN_NODE_NAME": "n1", "CARAVAN_DC": "dc1",
		"CARAVAN_PORT_HTTP": "21000", "CARAVAN_HOST_PORT_HTTP": "21000", "CARAVAN_ADDR_HTTP": "10.0.0.5:21000",
		"CARAVAN_PORT_ADMIN_UI": "22000", "CARAVAN_HOST_PORT_ADMIN_UI": "22000", "CARAVAN_ADDR_ADMIN_UI": "10.0.0.5:22000",
		"CARAVAN_META_OWNER": "ops", "CARAVAN_META_TIER": "task", "CARAVAN_META_ZONE_NAME": "a",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("exec env (-want +got):\n%s", diff)
	}

	got = Env(alloc, batch, node, "/data/alloc/A", "/data/alloc/A/crunch")
	checks := map[string]string{
		"CARAVAN_TASK_DIR": "/local", "CARAVAN_ALLOC_DIR": "/alloc",
		"CARAVAN_CPU_CORES": "4,5", "CARAVAN_CPU_LIMIT": "4000",
		"CARAVAN_PORT_ADMIN_UI": "9000", "CARAVAN_HOST_PORT_ADMIN_UI": "22000",
	}
	for k, v := range checks {
		if got[k] != v {
			t.Errorf("docker %s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["PATH"]; ok {
		t.Error("docker env sets PATH, which would hide the image's")
	}
	if diff := cmp.Diff([]caravan.AllocatedPort{{Label: "admin-ui", Value: 22000, To: 9000}}, TaskPorts(alloc, batch)); diff != "" {
		t.Errorf("TaskPorts (-want +got):\n%s", diff)
	}
}

func TestExpandOutputPath(t *testing.T) {
	v := OutputVars{JobID: "1001", JobName: "nightly", NodeName: "n1", ArrayIndex: 7}
	tests := []struct{ pattern, want string }{
		{"", ""},
		{"/out/%j.out", "/out/1001.out"},
		{"/out/%x-%j_%a.%n.log", "/out/nightly-1001_7.n1.log"},
		{"/out/100%%-%j", "/out/100%-1001"},
		{"/out/%u-%q.log", "/out/%u-%q.log"},
		{"/out/trailing%", "/out/trailing%"},
		{"slurm-%j.out", "/work/dir/slurm-1001.out"},
		{"../up/%j", "/work/up/1001"},
	}
	for _, tc := range tests {
		if got := ExpandOutputPath(tc.pattern, v, "/work/dir"); got != tc.want {
			t.Errorf("ExpandOutputPath(%q) = %q, want %q", tc.pattern, got, tc.want)
		}
	}
}
