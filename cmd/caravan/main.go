// Command caravan is the caravan workload scheduler: server, agent, dev mode
// and the command-line client, in one binary.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/caravan-sched/caravan/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.Run(ctx, os.Args[1:], os.Environ(), os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode(err, os.Stderr))
}
