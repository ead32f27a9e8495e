// Command supervise is `caravan supervise` alone, without the rest of the
// caravan binary: BenchmarkAgentMemory builds it to show what a task's
// supervisor costs when it does not pay for every package of the binary.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/caravan-sched/caravan/internal/supervisor"
)

// main runs `supervise --handshake-fd N SPEC`.
func main() {
	args := os.Args[1:]
	if len(args) != 4 || args[0] != "supervise" || args[1] != "--handshake-fd" {
		os.Exit(2)
	}
	fd, err := strconv.Atoi(args[2])
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = supervisor.Run(ctx, args[3], os.NewFile(uintptr(fd), "handshake"), slog.New(slog.NewTextHandler(os.Stderr, nil)))
	stop()
	if err != nil {
		os.Exit(1)
	}
}
