package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// newEvalStatusCommand is `caravan eval status ID`.
func newEvalStatusCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show an evaluation: status, trigger, placement failures explained, queued allocations",
		Long:  "Show an evaluation. ID may be a unique prefix of the evaluation id.",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		ev, _, err := c.Evaluation(ctx, args[0], nil)
		if err != nil {
			return err // the server names the object
		}
		if f.json {
			return f.printJSON(ev)
		}
		writeEvalStatus(env.Stdout, ev, time.Now())
		return nil
	})
	return cmd
}

func writeEvalStatus(w io.Writer, ev *caravan.Evaluation, now time.Time) {
	waitUntil := ""
	if !ev.WaitUntil.IsZero() {
		waitUntil = ev.WaitUntil.Local().Format("2006-01-02 15:04:05") + " (" + ago(ev.WaitUntil, now) + ")"
	}
	writeFields(w, []field{
		{"ID", ev.ID},
		{"Status", ev.Status},
		{"Status description", ev.StatusDescription},
		{"Type", ev.Type},
		{"Triggered by", ev.TriggeredBy},
		{"Job", ev.JobID},
		{"Priority", ev.Priority},
		{"Node pool", ev.NodePool},
		{"Node", ev.NodeID},
		{"Wait until", waitUntil},
		{"Created", timestamp(ev.CreateTime, now)},
		{"Modified", timestamp(ev.ModifyTime, now)},
	})
	if ev.PreviousEval != "" || ev.NextEval != "" || ev.BlockedEval != "" {
		section(w, "Linked evaluations")
		writeFields(w, []field{
			{"Previous", ev.PreviousEval},
			{"Next", ev.NextEval},
			{"Blocked", ev.BlockedEval},
		})
	}
	if q := queued(ev.QueuedAllocations); q != "nothing queued" {
		section(w, "Queued allocations")
		fmt.Fprintln(w, q)
	}
	if len(ev.FailedTGAllocs) > 0 {
		section(w, "Placement failures")
		writePlacementFailures(w, ev.FailedTGAllocs)
	}
}
