package cli

import "github.com/spf13/cobra"

// newAllocCommand groups the allocation commands.
func newAllocCommand(env *Env) *cobra.Command {
	cmd := parentCommand("alloc", "Inspect allocations, read their logs, stop them")
	cmd.AddCommand(
		newAllocStatusCommand(env),
		newAllocLogsCommand(env),
		newAllocStopCommand(env),
	)
	return cmd
}
