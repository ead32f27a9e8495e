// Package testenv lets tests ask for what they need from the machine (root,
// cgroups, a Docker Engine, Chromium, a built caravan binary). On a user's
// machine that lacks it the test skips with a message; with
// CARAVAN_TEST_STRICT=1 (set by .ci/run) every such skip is a failure,
// because CI has everything.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Strict reports whether missing requirements fail tests instead of
// skipping them.
func Strict() bool { return os.Getenv("CARAVAN_TEST_STRICT") == "1" }

// Skip skips t with the reason, or fails it in strict mode.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Strict() {
		t.Fatalf("CARAVAN_TEST_STRICT=1 but: %s", msg)
	}
	t.Skip(msg)
}

// RequireRoot needs the test to run as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root")
	}
}

// RequireLinux needs a Linux host.
func RequireLinux(t testing.TB) {
	t.Helper()
	if runtime.GOOS != "linux" {
		Skip(t, "needs Linux")
	}
}

// RequireCgroups needs root and a writable cgroup hierarchy (v1 or v2).
func RequireCgroups(t testing.TB) {
	t.Helper()
	RequireLinux(t)
	RequireRoot(t)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return // v2
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil {
		return // v1
	}
	Skip(t, "needs a mounted cgroup hierarchy (v1 memory controller or v2)")
}

var (
	dockerOnce sync.Once
	dockerErr  error
)

// RequireDocker needs a Docker Engine answering on its default socket.
func RequireDocker(t testing.TB) {
	t.Helper()
	dockerOnce.Do(func() {
		host := os.Getenv("DOCKER_HOST")
		sock := "/var/run/docker.sock"
		if host != "" && strings.HasPrefix(host, "unix://") {
			sock = host[7:]
		}
		c, err := net.DialTimeout("unix", sock, 2*time.Second)
		if err != nil {
			dockerErr = err
			return
		}
		c.Close()
	})
	if dockerErr != nil {
		Skip(t, "needs a Docker Engine: %v", dockerErr)
	}
}

// BusyboxPath returns the path of a statically linked busybox (Debian's
// busybox-static), needed to build test images FROM scratch.
func BusyboxPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isStatic(p) {
			return p
		}
	}
	Skip(t, "needs a static busybox (apt-get install busybox-static)")
	return ""
}

func isStatic(path string) bool {
	out, err := exec.Command("file", "-L", path).Output()
	if err != nil {
		_, statErr := os.Stat(path)
		return statErr == nil // no file(1): trust the path
	}
	return strings.Contains(string(out), "statically linked") || strings.Contains(string(out), "static-pie")
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// CaravanBinary builds the caravan binary once per test process (static,
// CGO_ENABLED=0) and returns its path.
func CaravanBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "caravan-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "caravan")
		root, err := moduleRoot()
		if err != nil {
			binErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binPath, "./cmd/caravan")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatalf("build caravan: %v", binErr)
	}
	return binPath
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// UnifiedHierarchy returns the root of a cgroup v2 (unified) hierarchy: the
// host's own on a v2 host, the spare one a hybrid host mounts at
// /sys/fs/cgroup/unified, or else one this call mounts (cgroup2 is a single
// hierarchy however often it is mounted; on a v1 host it has no
// controllers, but cgroup.procs, clone3 into a cgroup and cgroup.kill work)
// and unmounts when the test ends.
func UnifiedHierarchy(t testing.TB) string {
	t.Helper()
	RequireCgroups(t)
	const root = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return root
	}
	if _, err := os.Stat(filepath.Join(root, "unified", "cgroup.procs")); err == nil {
		return filepath.Join(root, "unified")
	}
	dir, err := os.MkdirTemp("", "caravan-cgroup2-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "cgroup2", "none", dir).CombinedOutput(); err != nil {
		_ = os.Remove(dir)
		Skip(t, "needs a cgroup v2 hierarchy, and mounting one failed: %v: %s", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			return
		}
		_ = os.Remove(dir)
	})
	return dir
}
