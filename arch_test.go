package caravan_test

import (
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestArchitecture guards the layering of STYLE.md: the domain package and
// the scheduler are pure and may not import the network, Raft, Docker,
// cgroups or the state store's library; only the state store uses go-memdb.
func TestArchitecture(t *testing.T) {
	// Direct imports that would bring I/O or a clock into a pure package.
	noDirect := map[string][]string{
		".":                    {"net", "net/http", "os/exec"},
		"./internal/scheduler": {"net", "net/http", "os", "os/exec", "io/fs"},
	}
	for pkg, bad := range noDirect {
		for _, imp := range goList(t, "-f", "{{join .Imports \"\\n\"}}", pkg) {
			for _, b := range bad {
				if imp == b {
					t.Errorf("%s imports %s", pkg, imp)
				}
			}
		}
	}
	// Libraries that may not be reached at all, even indirectly.
	noDeps := map[string][]string{
		".":                    {"github.com/", "golang.org/x/", "go.etcd.io/"},
		"./internal/scheduler": {"github.com/hashicorp/", "github.com/docker/", "github.com/containerd/", "go.etcd.io/", "github.com/caravan-sched/caravan/internal/state"},
		"./internal/broker":    {"net/http", "github.com/hashicorp/raft", "github.com/docker/"},
	}
	for pkg, bad := range noDeps {
		for _, d := range goList(t, "-deps", pkg) {
			if strings.HasPrefix(d, "github.com/caravan-sched/caravan") && !strings.Contains(d, "/internal/state") {
				continue
			}
			for _, b := range bad {
				if d == b || (strings.HasSuffix(b, "/") && strings.HasPrefix(d, b)) || (strings.HasPrefix(b, "github.com/caravan") && d == b) {
					t.Errorf("%s depends on %s (forbidden: %s)", pkg, d, b)
				}
			}
		}
	}
	// go-memdb is the state store's business alone (and the layers that
	// speak its WatchSet type: the server and the HTTP API).
	allowed := map[string]bool{"internal/state": true, "internal/httpapi": true, "internal/server": true}
	for _, pkg := range goList(t, "./...") {
		rel := strings.TrimPrefix(pkg, "github.com/caravan-sched/caravan/")
		if allowed[rel] {
			continue
		}
		for _, imp := range goList(t, "-f", "{{join .Imports \"\\n\"}}", pkg) {
			if imp == "github.com/hashicorp/go-memdb" {
				t.Errorf("%s imports go-memdb directly; go through internal/state", rel)
			}
		}
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", args, err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestPackagesHaveDocComments enforces a doc comment on every package.
func TestPackagesHaveDocComments(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			checkPackageDoc(t, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkPackageDoc(t *testing.T, dir string) {
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi os.FileInfo) bool {
		return !strings.HasSuffix(fi.Name(), "_test.go")
	}, parser.ParseComments|parser.PackageClauseOnly)
	if err != nil {
		t.Errorf("parse %s: %v", dir, err)
		return
	}
	for name, pkg := range pkgs {
		documented := false
		for _, f := range pkg.Files {
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				documented = true
			}
		}
		if !documented {
			t.Errorf("package %s (%s) has no doc comment", name, dir)
		}
	}
}
