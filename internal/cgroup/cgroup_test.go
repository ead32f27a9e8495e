package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"caravan/abc.web", true},
		{"caravan", true},
		{"a/b/c-d_e@f:g+h", true},
		{"", false},
		{"/caravan/x", false},
		{"caravan/", false},
		{"caravan//x", false},
		{"caravan/../x", false},
		{"caravan/.", false},
		{"caravan/x y", false},
		{"caravan/x\n", false},
		{"caravan/" + strings.Repeat("x", 256), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidName) {
				t.Fatalf("error %v is not ErrInvalidName", err)
			}
		})
	}
}

func TestSegment(t *testing.T) {
	tests := []struct{ in, want string }{
		{"3f2a.web", "3f2a.web"},
		{"a/b", "a_b"},
		{"..", "__"},
		{".", "_"},
		{"", "_"},
		{"naïve task", "na__ve_task"},
		{strings.Repeat("x", 300), strings.Repeat("x", 200)},
	}
	for _, tt := range tests {
		got := Segment(tt.in)
		if got != tt.want {
			t.Errorf("Segment(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if err := ValidateName(got); err != nil {
			t.Errorf("Segment(%q) = %q is not valid: %v", tt.in, got, err)
		}
	}
}

func TestCPUList(t *testing.T) {
	if got := FormatCPUList([]int{3, 1, 1, 0}); got != "0,1,3" {
		t.Errorf("FormatCPUList = %q", got)
	}
	tests := []struct {
		in   string
		want []int
		ok   bool
	}{
		{"", nil, true},
		{"0", []int{0}, true},
		{"0-2,5\n", []int{0, 1, 2, 5}, true},
		{"1,3", []int{1, 3}, true},
		{"a", nil, false},
		{"3-1", nil, false},
		{"-1", nil, false},
		{"0-99999999", nil, false},
	}
	for _, tt := range tests {
		got, err := ParseCPUList(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("ParseCPUList(%q) error = %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseCPUList(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
		ok   bool
	}{
		{
			name: "hybrid",
			in:   "9:name=systemd:/\n4:memory:/process_api/e26\n2:cpu,cpuacct:/a\n0::/\n",
			want: map[string]string{"name=systemd": "/", "memory": "/process_api/e26", "cpu": "/a", "cpuacct": "/a", "": "/"},
			ok:   true,
		},
		{
			name: "unified",
			in:   "0::/user.slice/session-1.scope\n",
			want: map[string]string{"": "/user.slice/session-1.scope"},
			ok:   true,
		},
		{name: "garbage", in: "hello\n"},
		{name: "relative path", in: "4:memory:x\n"},
		{name: "v2 entry with a bad id", in: "3::/x\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcCgroup(strings.NewReader(tt.in))
			if (err == nil) != tt.ok {
				t.Fatalf("error = %v, want ok=%v", err, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); tt.ok && diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestEventValue(t *testing.T) {
	b := []byte("populated 1\nfrozen 0\n")
	if got := eventValue(b, "frozen"); got != "0" {
		t.Errorf("frozen = %q", got)
	}
	if got := eventValue(b, "populated"); got != "1" {
		t.Errorf("populated = %q", got)
	}
	if got := eventValue(b, "missing"); got != "" {
		t.Errorf("missing = %q", got)
	}
}

func TestCPUWeight(t *testing.T) {
	tests := []struct{ shares, want uint64 }{
		{0, 0},
		{2, 1},
		{1024, 100},
		{262144, 10000},
		{1 << 40, 10000},
	}
	for _, tt := range tests {
		if got := CPUWeight(tt.shares); got != tt.want {
			t.Errorf("CPUWeight(%d) = %d, want %d", tt.shares, got, tt.want)
		}
	}
	// Monotonic over the MHz range tasks ask for.
	prev := uint64(0)
	for mhz := uint64(2); mhz <= 100000; mhz += 97 {
		w := CPUWeight(mhz)
		if w < prev || w < 1 || w > 10000 {
			t.Fatalf("CPUWeight(%d) = %d after %d", mhz, w, prev)
		}
		prev = w
	}
}

func TestLimitsV2(t *testing.T) {
	got := limitsV2(Limits{MemoryBytes: 32 << 20, CPUShares: 1024, Cpus: []int{1, 0}, Pids: 100})
	want := []limitFile{
		{"memory", "memory.max", "33554432"}, {"memory", "memory.swap.max", "0"},
		{"cpu", "cpu.weight", "100"}, {"cpuset", "cpuset.cpus", "0,1"}, {"pids", "pids.max", "100"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(limitFile{})); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"cpu", "cpuset", "memory", "pids"}, controllersV2(Limits{MemoryBytes: 1, CPUShares: 1, Cpus: []int{0}, Pids: 1})); diff != "" {
		t.Errorf("controllers (-want +got):\n%s", diff)
	}
	if got := controllersV2(Limits{}); len(got) != 0 {
		t.Errorf("no limits enable %v", got)
	}
	if diff := cmp.Diff([]string{"cpu"}, controllersV2(Limits{CPUShares: 100})); diff != "" {
		t.Errorf("shares only (-want +got):\n%s", diff)
	}
}

func TestLimitsV1(t *testing.T) {
	root := t.TempDir()
	mustMkdir(t, filepath.Join(root, "memory"))
	m := &Manager{version: V1, root: root, controllers: []string{"memory", "cpu"}}
	diff := func(want, got []limitFile) string { return cmp.Diff(want, got, cmp.AllowUnexported(limitFile{})) }
	if d := diff([]limitFile{{"memory", "memory.limit_in_bytes", "1048576"}, {"cpu", "cpu.shares", "2"}},
		m.limitsV1(Limits{MemoryBytes: 1 << 20, CPUShares: 1})); d != "" {
		t.Errorf("without swap accounting, shares at the minimum (-want +got):\n%s", d)
	}
	if err := os.WriteFile(filepath.Join(root, "memory", "memory.memsw.limit_in_bytes"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if d := diff([]limitFile{{"cpu", "cpu.shares", "262144"}}, m.limitsV1(Limits{CPUShares: 1 << 40})); d != "" {
		t.Errorf("shares at the maximum (-want +got):\n%s", d)
	}
	if d := diff([]limitFile{{"memory", "memory.limit_in_bytes", "1048576"}, {"memory", "memory.memsw.limit_in_bytes", "1048576"},
		{"cpuset", "cpuset.cpus", "2"}, {"pids", "pids.max", "5"}},
		m.limitsV1(Limits{MemoryBytes: 1 << 20, Cpus: []int{2}, Pids: 5})); d != "" {
		t.Errorf("swap off, cpuset, pids (-want +got):\n%s", d)
	}
}

// TestStatsFiles reads the figures from the files of both versions.
func TestStatsFiles(t *testing.T) {
	root := t.TempDir()
	v1 := &v1Group{root: root, name: "g", controllers: []string{"cpuacct", "memory"}}
	mustMkdir(t, filepath.Join(root, "cpuacct", "g"))
	mustMkdir(t, filepath.Join(root, "memory", "g"))
	mustWrite(t, filepath.Join(root, "cpuacct", "g", "cpuacct.stat"), "user 250\nsystem 3\n")
	mustWrite(t, filepath.Join(root, "memory", "g", "memory.usage_in_bytes"), "4096\n")
	mustWrite(t, filepath.Join(root, "memory", "g", "memory.max_usage_in_bytes"), "8192\n")
	mustWrite(t, filepath.Join(root, "memory", "g", "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
	s, err := v1.stats()
	want := Stats{CPUUser: 2500 * time.Millisecond, CPUSystem: 30 * time.Millisecond, MemoryBytes: 4096, MaxMemoryBytes: 8192, OOMKills: 2}
	if err != nil || s != want {
		t.Errorf("v1 stats = %+v, %v; want %+v", s, err, want)
	}
	v2dir := filepath.Join(root, "unified", "g")
	mustMkdir(t, v2dir)
	mustWrite(t, filepath.Join(v2dir, "cpu.stat"), "usage_usec 9\nuser_usec 7\nsystem_usec 2\n")
	mustWrite(t, filepath.Join(v2dir, "memory.current"), "100\n")
	mustWrite(t, filepath.Join(v2dir, "memory.events"), "low 0\noom 1\noom_kill 1\n")
	s, err = (&v2Group{dir: v2dir}).stats()
	want = Stats{CPUUser: 7 * time.Microsecond, CPUSystem: 2 * time.Microsecond, MemoryBytes: 100, OOMKills: 1}
	if err != nil || s != want {
		t.Errorf("v2 stats = %+v, %v; want %+v (no memory.peak before Linux 5.19)", s, err, want)
	}
	if _, err := (&v2Group{dir: filepath.Join(root, "gone")}).stats(); !errors.Is(err, ErrNotFound) {
		t.Errorf("stats of a deleted group: %v", err)
	}
}

func TestDetect(t *testing.T) {
	v2 := t.TempDir()
	mustWrite(t, filepath.Join(v2, "cgroup.controllers"), "cpu memory\n")
	v1 := t.TempDir()
	mustMkdir(t, filepath.Join(v1, "memory"))
	mustWrite(t, filepath.Join(v1, "memory", "cgroup.procs"), "")
	tests := []struct {
		root string
		want Version
		err  error
	}{
		{v2, V2, nil},
		{v1, V1, nil},
		{t.TempDir(), 0, ErrUnsupported},
	}
	for _, tt := range tests {
		got, err := Detect(tt.root)
		if got != tt.want || !errors.Is(err, tt.err) {
			t.Errorf("Detect(%s) = %v, %v; want %v, %v", tt.root, got, err, tt.want, tt.err)
		}
	}
}

func TestNewManagerLayout(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"memory", "cpu", "freezer", "blkio"} {
		mustMkdir(t, filepath.Join(root, c))
		mustWrite(t, filepath.Join(root, c, "cgroup.procs"), "")
	}
	m, err := NewManager(0, root)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version() != V1 {
		t.Fatalf("version = %v", m.Version())
	}
	if diff := cmp.Diff([]string{"freezer", "cpu", "memory"}, m.Controllers()); diff != "" {
		t.Errorf("controllers (-want +got):\n%s", diff)
	}
	g := &v1Group{root: root, name: "caravan/a.web", controllers: m.controllers}
	want := []hierarchyDir{
		{"freezer", filepath.Join(root, "freezer/caravan/a.web")},
		{"cpu", filepath.Join(root, "cpu/caravan/a.web")},
		{"memory", filepath.Join(root, "memory/caravan/a.web")},
	}
	if diff := cmp.Diff(want, g.dirs(), cmp.AllowUnexported(hierarchyDir{})); diff != "" {
		t.Errorf("dirs (-want +got):\n%s", diff)
	}
	if _, err := m.Load("caravan/missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load of a missing group: %v", err)
	}
	if _, err := m.Create("../escape", Limits{}); !errors.Is(err, ErrInvalidName) {
		t.Errorf("Create of a bad name: %v", err)
	}
	if _, err := NewManager(V2, root); !errors.Is(err, ErrUnsupported) {
		t.Errorf("NewManager(V2) on a v1 root: %v", err)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseCPUList(f *testing.F) {
	f.Add("0-2,5")
	f.Add("1,3\n")
	f.Add("-")
	f.Fuzz(func(t *testing.T, s string) {
		cpus, err := ParseCPUList(s)
		if err != nil {
			return
		}
		again, err := ParseCPUList(FormatCPUList(cpus))
		if err != nil || len(again) > len(cpus) {
			t.Errorf("%q: round trip %v -> %v, %v", s, cpus, again, err)
		}
	})
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add("4:memory:/a\n0::/\n")
	f.Add("::\n")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseProcCgroup(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range m {
			if !strings.HasPrefix(p, "/") {
				t.Errorf("%q: path %q", s, p)
			}
		}
	})
}
