package cli

import (
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/internal/supervisor"
)

// newSuperviseCommand is `caravan supervise SPEC`: the hidden mode in which
// the exec driver runs its tasks, so that they outlive the agent.
func newSuperviseCommand(env *Env) *cobra.Command {
	var handshakeFD int
	cmd := &cobra.Command{
		Use:    "supervise SPEC",
		Short:  "Hold exec tasks (started by the agent's exec driver)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			logger := slog.New(slog.NewTextHandler(env.Stderr, nil))
			var handshake io.WriteCloser
			if handshakeFD > 2 {
				handshake = os.NewFile(uintptr(handshakeFD), "handshake")
			}
			return supervisor.Run(cmd.Context(), args[0], handshake, logger)
		},
	}
	cmd.Flags().IntVar(&handshakeFD, "handshake-fd", 0, "file descriptor that receives the started line")
	return cmd
}
