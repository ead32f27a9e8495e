package cli

import "github.com/spf13/cobra"

// newEvalCommand groups the evaluation commands.
func newEvalCommand(env *Env) *cobra.Command {
	cmd := parentCommand("eval", "Inspect evaluations")
	cmd.AddCommand(newEvalStatusCommand(env))
	return cmd
}
