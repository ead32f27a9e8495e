package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// newNodeEligibilityCommand is `caravan node eligibility [--enable|--disable] ID`.
func newNodeEligibilityCommand(env *Env) *cobra.Command {
	var enable, disable bool
	cmd := &cobra.Command{
		Use:   "eligibility --enable|--disable ID",
		Short: "Let a node take new allocations, or keep new ones off it",
		Long:  "Set whether a node takes new allocations; those it runs stay. ID may be a unique prefix of the node id.",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.Flags().BoolVar(&enable, "enable", false, "make the node eligible for new allocations")
	cmd.Flags().BoolVar(&disable, "disable", false, "make the node ineligible for new allocations")
	cmd.MarkFlagsMutuallyExclusive("enable", "disable")
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		if !enable && !disable {
			return errors.New("give --enable or --disable")
		}
		elig := caravan.NodeEligible
		if disable {
			elig = caravan.NodeIneligible
		}
		resp, err := c.SetNodeEligibility(ctx, args[0], elig)
		if err != nil {
			return fmt.Errorf("node %s eligibility: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(resp)
		}
		fmt.Fprintf(env.Stdout, "Node %s is %s\n", args[0], elig)
		return nil
	})
	return cmd
}
