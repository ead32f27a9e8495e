// Command supervise is `caravan supervise` alone, without the rest of the
// caravan binary: BenchmarkAgentMemory builds it to show what a task's
// supervisor costs when it does not pay for every package of the binary.
package main

import (
	"os"

	"github.com/caravan-sched/caravan/internal/supervisor"
)

// main runs `supervise --handshake-fd N SPEC`.
func main() { os.Exit(supervisor.Main(os.Args[1:])) }
