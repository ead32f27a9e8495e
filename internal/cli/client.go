package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// Where client commands find a server when neither --address nor the
// environment says.
const (
	addressEnv     = "CARAVAN_ADDR"
	defaultAddress = "http://127.0.0.1:8500"
)

// clientFlags are the flags every command that talks to a server has.
type clientFlags struct {
	env     *Env
	address string
	json    bool
}

// addClientFlags registers --address and --json on cmd.
func addClientFlags(cmd *cobra.Command, env *Env) *clientFlags {
	f := &clientFlags{env: env}
	def := env.Getenv(addressEnv)
	if def == "" {
		def = defaultAddress
	}
	cmd.Flags().StringVar(&f.address, "address", def, "address of a caravan server ("+addressEnv+" sets the default)")
	cmd.Flags().BoolVar(&f.json, "json", false, "print JSON instead of tables")
	return f
}

// run makes the RunE of a client command: it builds the API client, runs
// fn, and turns API errors into messages that say what went wrong where.
func (f *clientFlags) run(fn func(ctx context.Context, c *api.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := api.New(api.Config{Addresses: []string{f.address}})
		if err != nil {
			return fmt.Errorf("--address %q: %w", f.address, err)
		}
		return f.explain(fn(cmd.Context(), c, args))
	}
}

// explain makes an API error readable: field problems one per line and
// the request id, or a hint when no server answered.
func (f *clientFlags) explain(err error) error {
	if err == nil {
		return nil
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return err
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return &apiFailure{err: err, api: ae}
	}
	if errors.Is(err, caravan.ErrUnavailable) {
		// The client keeps only the text of the network error; its last
		// part says what happened ("connection refused").
		msg := err.Error()
		cause := msg[strings.LastIndex(msg, ": ")+2:]
		return fmt.Errorf("no caravan server answers at %s: %s\nStart one with \"caravan dev\", or point --address or %s at one.", f.address, cause, addressEnv)
	}
	return err
}

// apiFailure is an error answer of the API, rendered with its field
// problems and request id.
type apiFailure struct {
	err error
	api *api.Error
}

func (e *apiFailure) Unwrap() error { return e.err }

func (e *apiFailure) Error() string {
	var b strings.Builder
	if len(e.api.Fields) == 0 {
		b.WriteString(e.err.Error())
	} else {
		msg := strings.TrimSuffix(e.err.Error(), e.api.Error())
		fmt.Fprintf(&b, "%sthe server refused the request (HTTP %d):", msg, e.api.StatusCode)
		for _, fe := range e.api.Fields {
			b.WriteString("\n  ")
			b.WriteString(fe.String())
		}
	}
	if e.api.RequestID != "" {
		fmt.Fprintf(&b, "\n  (request id %s)", e.api.RequestID)
	}
	return b.String()
}

// printJSON writes v as indented JSON.
func (f *clientFlags) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	b = append(b, '\n')
	_, err = f.env.Stdout.Write(b)
	return err
}

// parentCommand makes a command that groups subcommands. Run alone it
// prints its help; with an unknown subcommand it fails with suggestions.
func parentCommand(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:                        use,
		Short:                      short,
		Args:                       cobra.ArbitraryArgs,
		SuggestionsMinimumDistance: 2,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			return errors.New(msg + "\nRun '" + cmd.CommandPath() + " --help' for its commands.")
		},
	}
}
