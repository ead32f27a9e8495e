package cgroup

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"
)

// ownCgroups reads the calling process's groups from /proc/self/cgroup.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	defer f.Close()
	return parseProcCgroup(f)
}

// threadCgroups reads the calling thread's groups (on v1 a thread may be in
// other groups than its process) from /proc/thread-self/cgroup.
func threadCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/thread-self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read own cgroups: %w", err)
	}
	defer f.Close()
	return parseProcCgroup(f)
}

// parseProcCgroup parses /proc/<pid>/cgroup ("4:memory:/a/b", "1:cpu,cpuacct:/",
// "0::/c") into a map from controller to path. The v2 entry's key is "".
// Named v1 hierarchies ("name=systemd") keep their "name=" key.
func parseProcCgroup(r io.Reader) (map[string]string, error) {
	out := make(map[string]string)
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Text()
		if line == "" {
			continue
		}
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("cgroup file: bad line %q", line)
		}
		ctrls, path, ok := strings.Cut(rest, ":")
		if !ok || id == "" || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("cgroup file: bad line %q", line)
		}
		if ctrls == "" {
			if id != "0" {
				return nil, fmt.Errorf("cgroup file: bad line %q", line)
			}
			out[""] = path
			continue
		}
		for c := range strings.SplitSeq(ctrls, ",") {
			out[c] = path
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("cgroup file: %w", err)
	}
	return out, nil
}
