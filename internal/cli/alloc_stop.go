package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/api"
)

// newAllocStopCommand is `caravan alloc stop ID`.
func newAllocStopCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stop ID",
		Short: "Stop an allocation; the scheduler replaces it if its job still wants it",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		resp, err := c.StopAllocation(ctx, args[0])
		if err != nil {
			return fmt.Errorf("stop allocation %s: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(resp)
		}
		fmt.Fprintf(env.Stdout, "Allocation %s stopping", args[0])
		if resp.EvalID != "" {
			fmt.Fprintf(env.Stdout, " (evaluation %s)", resp.EvalID)
		}
		fmt.Fprintln(env.Stdout)
		return nil
	})
	return cmd
}
