package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// newNodeDrainCommand is `caravan node drain [--enable|--disable] [--deadline 1h] [--ignore-system] ID`.
func newNodeDrainCommand(env *Env) *cobra.Command {
	var (
		enable, disable, ignoreSystem, keepIneligible bool
		deadline                                      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "drain --enable|--disable [--deadline 1h] [--ignore-system] ID",
		Short: "Move allocations off a node (drain), or end a drain",
		Long: `Drain a node: it takes no new allocations, and its allocations are moved
to other nodes; those still there at the deadline are stopped. ID may be a
unique prefix of the node id.

--deadline 0 waits without a deadline; a negative deadline stops every
allocation at once. --disable ends a drain and makes the node eligible
again (unless --keep-ineligible).`,
		Args: cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.Flags().BoolVar(&enable, "enable", false, "start draining the node")
	cmd.Flags().BoolVar(&disable, "disable", false, "end the node's drain")
	cmd.Flags().DurationVar(&deadline, "deadline", time.Hour, "how long allocations may take to move before they are stopped")
	cmd.Flags().BoolVar(&ignoreSystem, "ignore-system", false, "leave system job allocations running")
	cmd.Flags().BoolVar(&keepIneligible, "keep-ineligible", false, "with --disable: leave the node ineligible")
	cmd.MarkFlagsMutuallyExclusive("enable", "disable")
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		if !enable && !disable {
			return errors.New("give --enable to start a drain or --disable to end one")
		}
		var drain *caravan.DrainStrategy
		if enable {
			drain = &caravan.DrainStrategy{Deadline: caravan.Duration(deadline), IgnoreSystemJobs: ignoreSystem}
		}
		resp, err := c.DrainNode(ctx, args[0], drain, disable && !keepIneligible)
		if err != nil {
			return fmt.Errorf("drain node %s: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(resp)
		}
		if enable {
			fmt.Fprintf(env.Stdout, "Node %s is draining (deadline %s)\n", args[0], describeDeadline(deadline))
		} else {
			fmt.Fprintf(env.Stdout, "Node %s is no longer draining\n", args[0])
		}
		return nil
	})
	return cmd
}

func describeDeadline(d time.Duration) string {
	switch {
	case d == 0:
		return "none"
	case d < 0:
		return "now: allocations are stopped at once"
	}
	return d.String()
}
