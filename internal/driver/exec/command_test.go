package exec

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFirstWord(t *testing.T) {
	tests := []struct{ line, want string }{
		{"tail /dev/zero", "tail"},
		{"  /usr/bin/env x", "/usr/bin/env"},
		{"./run.sh --fast", "./run.sh"},
		{"echo hi | wc", ""},
		{"FOO=1 prog", ""},
		{"for i in 1 2; do x; done", ""},
		{"(cd /tmp && ls)", ""},
		{"'quoted prog' x", ""},
		{"$PROG x", ""},
		{"f() { x; }; f", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := firstWord(tt.line); got != tt.want {
			t.Errorf("firstWord(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(bin, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tool := write("tool", 0o755)
	private := write("private", 0o700)
	plain := write("plain", 0o644)
	nobody := taskUser{name: "nobody", uid: 65534, gid: 65534}
	root := taskUser{name: "root"}
	tests := []struct {
		name, file, path string
		u                taskUser
		want             string
		err              error
	}{
		{"in PATH", "tool", "/nonexistent:" + bin, nobody, tool, nil},
		{"relative PATH entry", "tool", "bin", nobody, tool, nil},
		{"absolute", tool, "", nobody, tool, nil},
		{"relative to the work dir", "bin/tool", "", nobody, tool, nil},
		{"missing", "nope", bin, nobody, "", ErrProgramNotFound},
		{"owner only, other user", private, "", nobody, "", ErrProgramNotFound},
		{"owner only, root", private, "", root, private, nil},
		{"not executable by anyone, root", plain, "", root, "", ErrProgramNotFound},
		{"a directory", bin, "", nobody, "", ErrProgramNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lookPath(tt.file, tt.path, dir, tt.u)
			if !errors.Is(err, tt.err) {
				t.Fatalf("error = %v, want %v", err, tt.err)
			}
			if got != tt.want {
				t.Errorf("lookPath = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	tail := " 1 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10 18446744073709551615"
	tests := []struct {
		name string
		in   string
		want procStat
		ok   bool
	}{
		{"plain", "42 (sleep) S" + tail, procStat{state: 'S', start: 123456}, true},
		{"spaces and parens in the name", "42 (a (b) c) Z" + tail, procStat{state: 'Z', start: 123456}, true},
		{"no name", "42 sleep S" + tail, procStat{}, false},
		{"short", "42 (sleep) S 1 2", procStat{}, false},
		{"bad start", "42 (sleep) S 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 x", procStat{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("error = %v, want ok=%v", err, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(procStat{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	st, err := readProcStat(os.Getpid())
	if err != nil || st.state != 'R' && st.state != 'S' || st.start == 0 {
		t.Errorf("own stat = %+v, %v", st, err)
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add("42 (sleep) S 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000")
	f.Add("1 ()) ) R")
	f.Fuzz(func(t *testing.T, s string) {
		st, err := parseProcStat(s)
		if err == nil && !strings.Contains(s, ")") {
			t.Errorf("parsed %q without a name: %+v", s, st)
		}
	})
}
