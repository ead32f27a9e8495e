package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/api"
)

// newJobEvalCommand is `caravan job eval ID`.
func newJobEvalCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval ID",
		Short: "Force a new evaluation of a job",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		resp, err := c.EvaluateJob(ctx, args[0])
		if err != nil {
			return fmt.Errorf("evaluate job %s: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(resp)
		}
		fmt.Fprintf(env.Stdout, "Evaluation %s created for job %q\n", resp.EvalID, args[0])
		return nil
	})
	return cmd
}
