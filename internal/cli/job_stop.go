package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/api"
)

// newJobStopCommand is `caravan job stop [--purge] ID`.
func newJobStopCommand(env *Env) *cobra.Command {
	var purge bool
	cmd := &cobra.Command{
		Use:   "stop [--purge] ID",
		Short: "Stop a job's allocations; --purge also removes the job",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.Flags().BoolVar(&purge, "purge", false, "remove the job and its history from the cluster state")
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		resp, err := c.StopJob(ctx, args[0], purge)
		if err != nil {
			return fmt.Errorf("stop job %s: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(resp)
		}
		what := "stopped"
		if purge {
			what = "stopped and purged"
		}
		fmt.Fprintf(env.Stdout, "Job %q %s", args[0], what)
		if resp.EvalID != "" {
			fmt.Fprintf(env.Stdout, " (evaluation %s)", resp.EvalID)
		}
		fmt.Fprintln(env.Stdout)
		return nil
	})
	return cmd
}
