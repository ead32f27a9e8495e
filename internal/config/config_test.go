package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caravan-sched/caravan"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadHCL(t *testing.T) {
	p := writeFile(t, "server.hcl", `
name     = "s1"
data_dir = "/tmp/x"
bind     = "127.0.0.2"
server {
  http_port = 9500
  join      = ["127.0.0.1:8500"]
  default_algorithm = "spread"
}
agent {
  servers = ["127.0.0.2:9500"]
  meta    = { rack = "r1" }
  allow_root = true
}
`)
	c := Default()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.Name != "s1" || c.Server.HTTPPort != 9500 || c.Server.RaftPort != 9300 || c.Server.DefaultAlgorithm != "spread" {
		t.Errorf("server: %+v", c.Server)
	}
	if c.AdvertiseHTTP() != "127.0.0.2:9500" || c.Agent.Meta["rack"] != "r1" || !c.Agent.AllowRoot {
		t.Errorf("agent: %+v %s", c.Agent, c.AdvertiseHTTP())
	}
	// Defaults survive where the file is silent.
	if c.Agent.TaskUser != "nobody" || c.Server.MaxJobVersions != 10 {
		t.Errorf("defaults lost: %+v", c.Agent)
	}
}

func TestRetryJoinIsJoin(t *testing.T) {
	p := writeFile(t, "j.hcl", "server {\n  retry_join = [\"10.0.0.1:8500\", \"10.0.0.2:8500\"]\n}\n")
	c := Default()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if len(c.Server.Join) != 2 || c.Server.Join[1] != "10.0.0.2:8500" {
		t.Errorf("join = %v", c.Server.Join)
	}
}

func TestLoadJSON(t *testing.T) {
	p := writeFile(t, "c.json", `{"name":"s2","server":{"http_port":7000}}`)
	c := Default()
	if err := c.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if c.Name != "s2" || c.Server.HTTPPort != 7000 {
		t.Errorf("got %+v", c.Server)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, file, body, want string
	}{
		{"unknown field", "a.hcl", "server {\n  htp_port = 1\n}\n", "a.hcl:2"},
		{"wrong type", "b.hcl", "server {\n  http_port = \"x\"\n}\n", "b.hcl:2"},
		{"syntax", "c.hcl", "server {", "c.hcl:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Default().LoadFile(writeFile(t, tt.file, tt.body))
			if !errors.Is(err, caravan.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
	if err := Default().LoadFile("/nonexistent/x.hcl"); err == nil {
		t.Error("missing file: no error")
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Bind = "localhost"
	c.Server.HTTPPort = 70000
	c.Server.Join = []string{"nohost"}
	c.Server.GCInterval = "soon"
	c.Server.DefaultAlgorithm = "random"
	c.Agent.Datacenter = "bad dc"
	c.Agent.TasksPerSupervisor = -1
	err := c.Finish()
	var ve *caravan.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	for _, field := range []string{"bind", "server.http_port", "server.join[0]", "server.gc_interval", "server.default_algorithm", "agent.datacenter", "agent.tasks_per_supervisor"} {
		if !strings.Contains(err.Error(), field+":") {
			t.Errorf("no error for %s in %v", field, err)
		}
	}
}

func TestDefaultsAreValid(t *testing.T) {
	c := Default()
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr() != "127.0.0.1:8500" || c.RaftAddr() != "127.0.0.1:8300" || c.AgentHTTPAddr() != "127.0.0.1:8501" {
		t.Errorf("addresses: %s %s %s", c.HTTPAddr(), c.RaftAddr(), c.AgentHTTPAddr())
	}
}
