package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/api"
)

// newAllocLogsCommand is `caravan alloc logs [-f] [--stderr] [--tail N] ALLOC [TASK]`.
func newAllocLogsCommand(env *Env) *cobra.Command {
	var (
		follow, stderr bool
		tail           int64
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--stderr] [--tail N] ALLOC [TASK]",
		Short: "Print a task's output; -f follows it live",
		Long: `Print the output of one task of an allocation, read from its node through
the server. ALLOC may be a unique prefix of the allocation id; TASK may be
left out when the task group has a single task.`,
		Args: cobra.RangeArgs(1, 2),
	}
	f := addClientFlags(cmd, env)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the task ends or Ctrl-C")
	cmd.Flags().BoolVar(&stderr, "stderr", false, "print standard error instead of standard output")
	cmd.Flags().Int64VarP(&tail, "tail", "n", 0, "print only the last N bytes")
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		if tail < 0 {
			return fmt.Errorf("--tail %d: give a number of bytes, 0 or more", tail)
		}
		opt := api.LogOptions{Follow: follow, Type: "stdout"}
		if stderr {
			opt.Type = "stderr"
		}
		if len(args) == 2 {
			opt.Task = args[1]
		}
		if tail > 0 {
			opt.Offset, opt.Origin = tail, "end"
		}
		if err := c.Logs(ctx, args[0], opt, env.Stdout); err != nil && ctx.Err() == nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("logs of allocation %s: the stream broke off: the agent running it went away (the server keeps the allocation's status; try again when the node is back)", args[0])
			}
			return fmt.Errorf("logs of allocation %s: %w", args[0], err)
		}
		return nil
	})
	return cmd
}
