package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestV1ConcurrentCreateUnderNewParent creates many groups at once below a
// parent that does not exist yet, as an agent's first tasks do: each must
// get cpus and memory nodes. Before, a start that found the parent made by
// another (but without its cpuset set yet) copied its empty cpus, and the
// task's start failed with "no space left on device" (found by the system
// test that starts two jobs on a fresh agent).
func TestV1ConcurrentCreateUnderNewParent(t *testing.T) {
	testenv.RequireCgroups(t)
	m, err := NewManager(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if m.Version() != V1 {
		t.Skip("the cpuset inheritance is v1's")
	}
	const n = 16
	for round := range 5 {
		parent := fmt.Sprintf("%s/%s-%d-%d", testParent, Segment(t.Name()), os.Getpid(), round)
		groups := make([]*Group, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			// With cores, or the group has no cpuset at all.
			wg.Go(func() { groups[i], errs[i] = m.Create(fmt.Sprintf("%s/g%d", parent, i), Limits{Cpus: []int{0}}) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Errorf("create g%d: %v", i, errs[i])
				continue
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(m.Root(), "cpuset", groups[i].Name(), f))
				if err != nil || strings.TrimSpace(string(b)) == "" {
					t.Errorf("round %d, g%d: %s = %q, %v", round, i, f, b, err)
				}
			}
		}
		for _, g := range groups {
			if g != nil {
				_ = g.Delete()
			}
		}
		for _, c := range m.Controllers() {
			_ = os.Remove(filepath.Join(m.Root(), c, parent))
			_ = os.Remove(filepath.Join(m.Root(), c, testParent))
		}
	}
}
