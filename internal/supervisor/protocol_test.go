package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/google/go-cmp/cmp"
)

func validSpec(dir string) *Spec {
	return &Spec{
		TaskID:      "a/web",
		Path:        "/bin/sh",
		Args:        []string{"/bin/sh", "-c", "echo hi"},
		Env:         []string{"PATH=/bin"},
		Dir:         "/",
		UID:         65534,
		GID:         65534,
		Cgroup:      CgroupSpec{Name: "caravan/a.web"},
		Logs:        LogSpec{Dir: dir, Name: "web"},
		TimeLimit:   caravan.Duration(time.Minute),
		KillTimeout: caravan.Duration(5 * time.Second),
		StatusPath:  filepath.Join(dir, "status.json"),
		StopPath:    filepath.Join(dir, "stop.json"),
	}
}

func TestSpecFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spec.json")
	want := validSpec(dir)
	if err := WriteSpec(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if _, err := ReadSpec(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing spec: %v", err)
	}
}

func TestSpecValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Spec)
	}{
		{"no path", func(s *Spec) { s.Path = "" }},
		{"no args", func(s *Spec) { s.Args = nil }},
		{"no dir", func(s *Spec) { s.Dir = "" }},
		{"no cgroup", func(s *Spec) { s.Cgroup.Name = "" }},
		{"no log dir", func(s *Spec) { s.Logs.Dir = "" }},
		{"no status path", func(s *Spec) { s.StatusPath = "" }},
		{"negative time limit", func(s *Spec) { s.TimeLimit = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec(t.TempDir())
			tt.change(s)
			if err := s.Validate(); err == nil {
				t.Error("Validate accepted it")
			}
		})
	}
	if err := validSpec("/x").Validate(); err != nil {
		t.Errorf("valid spec: %v", err)
	}
}

func TestStatusFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "status.json")
	if _, err := ReadStatus(path); !errors.Is(err, ErrNoStatus) {
		t.Fatalf("missing status: %v", err)
	}
	want := &driver.ExitResult{
		ExitCode: 137, Signal: 9, OOMKilled: true,
		StartedAt: time.Unix(100, 0).UTC(), FinishedAt: time.Unix(200, 0).UTC(),
		Stats: &caravan.TaskStats{CPUTime: caravan.Duration(time.Second), MemoryBytes: 1, MaxMemoryBytes: 2},
	}
	if err := writeStatus(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadStatus(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := os.WriteFile(path, []byte("{broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadStatus(path); err == nil || errors.Is(err, ErrNoStatus) {
		t.Errorf("broken status: %v", err)
	}
}

func TestStopRequest(t *testing.T) {
	dir := t.TempDir()
	def := StopRequest{Signal: 15, KillTimeout: caravan.Duration(time.Second)}
	path := filepath.Join(dir, "stop.json")
	if got := readStop(path, def); got != def {
		t.Errorf("missing file gives %+v", got)
	}
	want := StopRequest{Signal: 2, KillTimeout: caravan.Duration(3 * time.Second)}
	if err := RequestStop(path, want); err != nil {
		t.Fatal(err)
	}
	if got := readStop(path, def); got != want {
		t.Errorf("readStop = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"{", `{"kill_timeout":"-1s"}`, `{"kill_timeout":-5}`} {
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := readStop(path, def); got != def {
			t.Errorf("readStop(%s) = %+v, want the default", bad, got)
		}
	}
	signals := []struct {
		in   int
		want syscall.Signal
	}{{0, syscall.SIGTERM}, {9, syscall.SIGKILL}, {2, syscall.SIGINT}, {-1, syscall.SIGTERM}, {1000, syscall.SIGTERM}}
	for _, s := range signals {
		if got := (StopRequest{Signal: s.in}).signal(); got != s.want {
			t.Errorf("signal %d -> %v, want %v", s.in, got, s.want)
		}
	}
}

func TestReadHandshake(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *Started
	}{
		{"pid", `{"pid":42}` + "\n", &Started{Pid: 42}},
		{"error", `{"error":"start /x: no such file"}` + "\n", &Started{Error: "start /x: no such file"}},
		{"no newline", `{"pid":7}`, &Started{Pid: 7}},
		{"empty", "", nil},
		{"no pid", "{}\n", nil},
		{"negative pid", `{"pid":-1}` + "\n", nil},
		{"garbage", "hello\n", nil},
		{"endless line", strings.Repeat("x", 200<<10), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadHandshake(strings.NewReader(tt.in))
			if (err == nil) != (tt.want != nil) {
				t.Fatalf("ReadHandshake error = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzReadHandshake(f *testing.F) {
	f.Add(`{"pid":42}` + "\n")
	f.Add(`{"error":"x"}`)
	f.Add("\x00\xff")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ReadHandshake(strings.NewReader(s))
		if err == nil && got.Pid <= 0 && got.Error == "" {
			t.Errorf("accepted %q as %+v", s, got)
		}
	})
}

func TestMainRefusesBadArguments(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"supervise"},
		{"supervise", "--handshake-fd", "x", "-"},
		{"supervise", "--handshake-fd", "1", "-"},
		{"run", "--handshake-fd", "3", "-"},
		{"supervise", "--spec", "3", "-"},
	} {
		if code := Main(args); code != 2 {
			t.Errorf("Main(%q) = %d, want 2", args, code)
		}
	}
}
