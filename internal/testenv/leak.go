package testenv

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// modulePath marks goroutines running caravan's own code.
const modulePath = "github.com/caravan-sched/caravan/"

// CheckGoroutines waits up to timeout for every goroutine running
// caravan's code to end, and returns an error listing those still running:
// servers, agents, handlers and streams must not outlive their tests.
// Goroutines whose stacks contain one of ignore are not counted.
func CheckGoroutines(timeout time.Duration, ignore ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		leaked := leakedGoroutines(ignore)
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d goroutines of caravan still running after the tests:\n\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func leakedGoroutines(ignore []string) []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, modulePath) || strings.Contains(g, "testenv.leakedGoroutines") ||
			strings.Contains(g, ".TestMain(") || strings.Contains(g, "testing.tRunner") {
			continue
		}
		skip := false
		for _, s := range ignore {
			if strings.Contains(g, s) {
				skip = true
			}
		}
		if !skip {
			leaked = append(leaked, g)
		}
	}
	return leaked
}

// MainWithLeakCheck runs the tests, then CheckGoroutines, and exits: call
// it from TestMain.
func MainWithLeakCheck(m *testing.M, ignore ...string) {
	code := m.Run()
	if code == 0 {
		if err := CheckGoroutines(10*time.Second, ignore...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
