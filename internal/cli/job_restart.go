package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/api"
)

// newJobRestartCommand is `caravan job restart ID`.
func newJobRestartCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restart ID",
		Short: "Replace every allocation of a job, as a rolling update",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		resp, err := c.RestartJob(ctx, args[0])
		if err != nil {
			return fmt.Errorf("restart job %s: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(resp)
		}
		fmt.Fprintf(env.Stdout, "Job %q restarting as version %d (evaluation %s)\n", resp.JobID, resp.JobVersion, resp.EvalID)
		return nil
	})
	return cmd
}
