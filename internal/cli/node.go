package cli

import "github.com/spf13/cobra"

// newNodeCommand groups the node commands.
func newNodeCommand(env *Env) *cobra.Command {
	cmd := parentCommand("node", "Inspect nodes, drain them, set their eligibility")
	cmd.AddCommand(
		newNodeStatusCommand(env),
		newNodeDrainCommand(env),
		newNodeEligibilityCommand(env),
	)
	return cmd
}
