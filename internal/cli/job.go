package cli

import "github.com/spf13/cobra"

// newJobCommand groups the job commands.
func newJobCommand(env *Env) *cobra.Command {
	cmd := parentCommand("job", "Submit, inspect and stop jobs")
	cmd.AddCommand(
		newJobRunCommand(env),
		newJobStatusCommand(env),
		newJobStopCommand(env),
		newJobHistoryCommand(env),
		newJobRestartCommand(env),
		newJobEvalCommand(env),
	)
	return cmd
}
