package docker

import (
	"errors"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"
	"github.com/google/go-cmp/cmp"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

func TestCommand(t *testing.T) {
	tests := []struct {
		name           string
		cfg            caravan.TaskConfig
		wantEntrypoint []string
		wantCmd        []string
	}{
		{"image default", caravan.TaskConfig{}, nil, nil},
		{"program alone", caravan.TaskConfig{Command: "/bin/true"}, nil, []string{"/bin/true"}},
		{"program and args", caravan.TaskConfig{Command: "echo", Args: []string{"a b", "c"}}, nil, []string{"echo", "a b", "c"}},
		{"whole command line", caravan.TaskConfig{Command: "echo hi | tr a-z A-Z > /tmp/x"}, nil, []string{"/bin/sh", "-c", "echo hi | tr a-z A-Z > /tmp/x"}},
		{"tab is white space", caravan.TaskConfig{Command: "sleep\t1"}, nil, []string{"/bin/sh", "-c", "sleep\t1"}},
		{"white space with args stays verbatim", caravan.TaskConfig{Command: "my prog", Args: []string{"x"}}, nil, []string{"my prog", "x"}},
		{"entrypoint gets the line verbatim", caravan.TaskConfig{Entrypoint: []string{"/init"}, Command: "run this"}, []string{"/init"}, []string{"run this"}},
		{"args alone replace CMD", caravan.TaskConfig{Args: []string{"-v"}}, nil, []string{"-v"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, cmd := command(&tt.cfg)
			if diff := cmp.Diff(tt.wantEntrypoint, ep); diff != "" {
				t.Errorf("entrypoint (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantCmd, cmd); diff != "" {
				t.Errorf("cmd (-want +got):\n%s", diff)
			}
		})
	}
}

func TestContainerName(t *testing.T) {
	tests := []struct{ task, alloc, want string }{
		{"web", "0b5e0c2e-1111-2222-3333-444455556666", "caravan-web-0b5e0c2e-1111-2222-3333-444455556666"},
		{"my task/ü", "a1", "caravan-my-task---a1"},
	}
	for _, tt := range tests {
		if got := containerName(tt.task, tt.alloc); got != tt.want {
			t.Errorf("containerName(%q, %q) = %q, want %q", tt.task, tt.alloc, got, tt.want)
		}
	}
}

func testTaskConfig() *driver.TaskConfig {
	return &driver.TaskConfig{
		ID:      "a1/web",
		AllocID: "a1",
		JobID:   "1001",
		Task: &caravan.Task{
			Name:    "web",
			WorkDir: "/srv",
			Config: caravan.TaskConfig{
				Image:   "busybox:test",
				Command: "httpd -f",
				Labels:  map[string]string{"team": "a", LabelJobID: "spoofed"},
			},
		},
		Env:      map[string]string{"B": "2", "A": "1"},
		AllocDir: "/data/alloc/a1",
		TaskDir:  "/data/alloc/a1/web",
		User:     "nobody",
		CPU:      500,
		Memory:   64,
		Cores:    []int{2, 3},
		Ports:    []caravan.AllocatedPort{{Label: "http", Value: 23456, To: 80}, {Label: "admin", Value: 23457}},
	}
}

func TestBuildSpec(t *testing.T) {
	lc := logConfig{Dir: "/logs", MaxFileSize: 1 << 20, MaxFiles: 3}
	s, err := buildSpec(testTaskConfig(), lc, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	wantConfig := &container.Config{
		Image:      "busybox:test",
		Cmd:        []string{"/bin/sh", "-c", "httpd -f"},
		Env:        []string{"A=1", "B=2"},
		WorkingDir: "/srv",
		User:       "nobody",
		Labels: map[string]string{
			"team": "a", LabelJobID: "1001", LabelAllocID: "a1", LabelTask: "web",
		},
		ExposedPorts: nat.PortSet{"80/tcp": {}, "80/udp": {}, "23457/tcp": {}, "23457/udp": {}},
	}
	if diff := cmp.Diff(wantConfig, s.config); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	wantHost := &container.HostConfig{
		PortBindings: nat.PortMap{
			"80/tcp":    {{HostIP: "127.0.0.1", HostPort: "23456"}},
			"80/udp":    {{HostIP: "127.0.0.1", HostPort: "23456"}},
			"23457/tcp": {{HostIP: "127.0.0.1", HostPort: "23457"}},
			"23457/udp": {{HostIP: "127.0.0.1", HostPort: "23457"}},
		},
		Resources: container.Resources{Memory: 64 << 20, MemorySwap: 64 << 20, CPUShares: 500, CpusetCpus: "2,3"},
		LogConfig: container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "1048576", "max-file": "3"}},
		Mounts: []mount.Mount{
			{Type: mount.TypeBind, Source: "/data/alloc/a1/alloc", Target: "/alloc"},
			{Type: mount.TypeBind, Source: "/data/alloc/a1/web/local", Target: "/local"},
		},
	}
	if diff := cmp.Diff(wantHost, s.host); diff != "" {
		t.Errorf("host config (-want +got):\n%s", diff)
	}
	if s.name != "caravan-web-a1" {
		t.Errorf("name = %q", s.name)
	}
}

func TestBuildSpecLowCPUAndNoLimits(t *testing.T) {
	cfg := testTaskConfig()
	cfg.CPU, cfg.Memory, cfg.Cores, cfg.Ports = 1, 0, nil, nil
	s, err := buildSpec(cfg, logConfig{Dir: "/l", MaxFileSize: 1, MaxFiles: 1}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := container.Resources{CPUShares: minCPUShares}
	if diff := cmp.Diff(want, s.host.Resources); diff != "" {
		t.Errorf("resources (-want +got):\n%s", diff)
	}
}

func TestBuildSpecRefusesBadInput(t *testing.T) {
	tests := []struct {
		name   string
		change func(*driver.TaskConfig)
	}{
		{"no task", func(c *driver.TaskConfig) { c.Task = nil }},
		{"no image", func(c *driver.TaskConfig) { c.Task.Config.Image = "" }},
		{"no alloc id", func(c *driver.TaskConfig) { c.AllocID = "" }},
		{"relative work dir", func(c *driver.TaskConfig) { c.Task.WorkDir = "srv" }},
		{"empty env name", func(c *driver.TaskConfig) { c.Env = map[string]string{"": "x"} }},
		{"env name with =", func(c *driver.TaskConfig) { c.Env = map[string]string{"A=B": "x"} }},
		{"env value with NUL", func(c *driver.TaskConfig) { c.Env = map[string]string{"A": "x\x00"} }},
		{"host port 0", func(c *driver.TaskConfig) { c.Ports = []caravan.AllocatedPort{{Label: "x"}} }},
		{"container port too big", func(c *driver.TaskConfig) { c.Ports = []caravan.AllocatedPort{{Label: "x", Value: 80, To: 70000}} }},
		{"negative memory", func(c *driver.TaskConfig) { c.Memory = -1 }},
		{"negative cpu", func(c *driver.TaskConfig) { c.CPU = -1 }},
		{"negative core", func(c *driver.TaskConfig) { c.Cores = []int{-1} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testTaskConfig()
			tt.change(cfg)
			_, err := buildSpec(cfg, logConfig{Dir: "/l", MaxFileSize: 1, MaxFiles: 1}, "")
			if !errors.Is(err, caravan.ErrInvalid) {
				t.Errorf("buildSpec error = %v, want one matching caravan.ErrInvalid", err)
			}
		})
	}
	if _, err := buildSpec(nil, logConfig{}, ""); !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("buildSpec(nil) error = %v, want ErrInvalid", err)
	}
}

func TestStatsFrom(t *testing.T) {
	tests := []struct {
		name string
		in   container.StatsResponse
		want caravan.TaskStats
	}{
		{
			name: "cgroup v1",
			in: container.StatsResponse{
				CPUStats:    container.CPUStats{CPUUsage: container.CPUUsage{TotalUsage: 1500}},
				MemoryStats: container.MemoryStats{Usage: 1000, MaxUsage: 4000, Stats: map[string]uint64{"total_inactive_file": 300}},
			},
			want: caravan.TaskStats{CPUTime: 1500, MemoryBytes: 700, MaxMemoryBytes: 4000},
		},
		{
			name: "cgroup v2 has no peak",
			in: container.StatsResponse{
				MemoryStats: container.MemoryStats{Usage: 1000, Stats: map[string]uint64{"inactive_file": 100}},
			},
			want: caravan.TaskStats{MemoryBytes: 900, MaxMemoryBytes: 900},
		},
		{
			name: "inactive above usage is ignored",
			in: container.StatsResponse{
				MemoryStats: container.MemoryStats{Usage: 10, Stats: map[string]uint64{"inactive_file": 100}},
			},
			want: caravan.TaskStats{MemoryBytes: 10, MaxMemoryBytes: 10},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(&tt.want, statsFrom(&tt.in)); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}
