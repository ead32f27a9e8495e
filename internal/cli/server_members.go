package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/api"
)

// newServerMembersCommand is `caravan server members`.
func newServerMembersCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the servers of the cluster and their Raft roles",
		Args:  cobra.NoArgs,
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, _ []string) error {
		members, err := c.Members(ctx)
		if err != nil {
			return fmt.Errorf("list servers: %w", err)
		}
		if f.json {
			return f.printJSON(nonNil(members))
		}
		tw := newTable(env.Stdout)
		row(tw, "NAME", "RAFT ADDRESS", "HTTP ADDRESS", "STATUS", "LEADER", "VOTER")
		for _, m := range members {
			row(tw, m.ID, m.RaftAddr, m.HTTPAddr, m.Status, m.Leader, m.Voter)
		}
		return tw.Flush()
	})
	return cmd
}
