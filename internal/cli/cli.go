// Package cli is caravan's command line: one file per command, each a thin
// layer over the api client or over the server and agent Run functions. It
// holds no business logic.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// ExitError carries a specific exit code out of a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode prints err (when there is one) and returns the process exit code.
func ExitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(stderr, "Error:", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintln(stderr, "Error:", err)
	return 1
}

// Env is what commands get from the process: arguments aside, everything
// they may read or write. Tests run the whole program in-process with their
// own Env.
type Env struct {
	Vars   []string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Getenv returns the value of an environment variable from Vars.
func (e *Env) Getenv(key string) string {
	for i := len(e.Vars) - 1; i >= 0; i-- {
		kv := e.Vars[i]
		if len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key {
			return kv[len(key)+1:]
		}
	}
	return ""
}

// Run runs the caravan command line with args (without the program name).
func Run(ctx context.Context, args, vars []string, stdin io.Reader, stdout, stderr io.Writer) error {
	env := &Env{Vars: vars, Stdin: stdin, Stdout: stdout, Stderr: stderr}
	root := newRootCommand(env)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}

func newRootCommand(env *Env) *cobra.Command {
	root := &cobra.Command{
		Use:   "caravan",
		Short: "caravan schedules and runs workloads on a cluster of Linux machines",
		Long: `caravan schedules and runs workloads on a cluster of Linux machines.

Start with "caravan dev": a server and an agent in one process. Then submit
a job with "caravan job run FILE" and watch it with "caravan job status".`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(
		newDevCommand(env),
		newServerCommand(env),
		newAgentCommand(env),
		newJobCommand(env),
		newAllocCommand(env),
		newNodeCommand(env),
		newEvalCommand(env),
	)
	root.AddCommand(newSuperviseCommand(env))
	return root
}

// flagError adds the command's usage line to a flag parsing error.
func flagError(cmd *cobra.Command, err error) error {
	return fmt.Errorf("%w\nUsage: %s (see %s --help)", err, cmd.UseLine(), cmd.CommandPath())
}
