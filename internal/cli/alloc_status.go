package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// newAllocStatusCommand is `caravan alloc status ID`.
func newAllocStatusCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show an allocation: its tasks' states and events, resources, ports",
		Long:  "Show an allocation. ID may be a unique prefix of the allocation id.",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		a, _, err := c.Allocation(ctx, args[0], nil)
		if err != nil {
			return err // the server names the object
		}
		if f.json {
			return f.printJSON(a)
		}
		writeAllocStatus(env.Stdout, a, time.Now())
		return nil
	})
	return cmd
}

func writeAllocStatus(w io.Writer, a *caravan.Allocation, now time.Time) {
	client := a.ClientStatus
	if a.ClientDescription != "" {
		client += " (" + a.ClientDescription + ")"
	}
	desired := a.DesiredStatus
	if a.DesiredDescription != "" {
		desired += " (" + a.DesiredDescription + ")"
	}
	node := a.NodeID
	if a.NodeName != "" {
		node = a.NodeName + " (" + a.NodeID + ")"
	}
	writeFields(w, []field{
		{"ID", a.ID},
		{"Name", a.Name},
		{"Job", fmt.Sprintf("%s (version %d)", a.JobID, a.JobVersion)},
		{"Task group", a.TaskGroup},
		{"Node", node},
		{"Evaluation", a.EvalID},
		{"Desired status", desired},
		{"Client status", client},
		{"Terminal reason", a.TerminalReason},
		{"Previous allocation", a.PreviousAllocation},
		{"Next allocation", a.NextAllocation},
		{"Created", timestamp(a.CreateTime, now)},
		{"Modified", timestamp(a.ModifyTime, now)},
	})

	section(w, "Resources")
	r := a.Resources
	res := []field{{"CPU", fmt.Sprintf("%d MHz", r.CPU)}, {"Memory", fmt.Sprintf("%d MB", r.Memory)}}
	if len(r.Cores) > 0 {
		res = append(res, field{"Cores", fmt.Sprint(r.Cores)})
	}
	writeFields(w, res)
	if len(r.Ports) > 0 {
		section(w, "Ports")
		tw := newTable(w)
		row(tw, "LABEL", "HOST PORT", "TO")
		for _, p := range r.Ports {
			to := "-"
			if p.To > 0 {
				to = fmt.Sprint(p.To)
			}
			row(tw, p.Label, p.Value, to)
		}
		tw.Flush()
	}

	for _, name := range taskOrder(a) {
		ts := a.TaskStates[name]
		if ts == nil {
			continue
		}
		writeTaskState(w, name, ts, now)
	}
}

// taskOrder lists the allocation's tasks in the job's order, then any
// others that have a state.
func taskOrder(a *caravan.Allocation) []string {
	var names []string
	seen := map[string]bool{}
	if a.Job != nil {
		if tg := a.Job.LookupTaskGroup(a.TaskGroup); tg != nil {
			for _, t := range tg.Tasks {
				if t != nil && !seen[t.Name] {
					names, seen[t.Name] = append(names, t.Name), true
				}
			}
		}
	}
	for _, n := range sortedKeys(a.TaskStates) {
		if !seen[n] {
			names = append(names, n)
		}
	}
	return names
}

func writeTaskState(w io.Writer, name string, ts *caravan.TaskState, now time.Time) {
	section(w, fmt.Sprintf("Task %q is %s", name, ts.State))
	fields := []field{
		{"Restarts", ts.Restarts},
		{"Started", timestamp(ts.StartedAt, now)},
		{"Finished", timestamp(ts.FinishedAt, now)},
	}
	if caravan.TaskStateTerminal(ts.State) {
		fields = append(fields, field{"Exit code", ts.ExitCode})
		if ts.Signal != 0 {
			fields = append(fields, field{"Signal", ts.Signal})
		}
	}
	if s := ts.Stats; s != nil {
		fields = append(fields,
			field{"CPU time", s.CPUTime.D().Round(time.Millisecond)},
			field{"Memory", fmt.Sprintf("%d MB (peak %d MB)", s.MemoryBytes>>20, s.MaxMemoryBytes>>20)})
	}
	writeFields(w, fields)
	if len(ts.Events) == 0 {
		return
	}
	fmt.Fprintln(w, "Events:")
	tw := newTable(w)
	row(tw, "TIME", "TYPE", "DESCRIPTION")
	for i := len(ts.Events) - 1; i >= 0; i-- { // newest first
		e := ts.Events[i]
		if e == nil {
			continue
		}
		row(tw, e.Time.Local().Format("2006-01-02 15:04:05"), e.Type, describeEvent(e))
	}
	tw.Flush()
}

// describeEvent renders a task event's message with its details.
func describeEvent(e *caravan.TaskEvent) string {
	var parts []string
	if e.Message != "" {
		parts = append(parts, e.Message)
	}
	if (e.Type == caravan.TaskEventExited || e.ExitCode != 0) && !strings.Contains(e.Message, "exit code") {
		parts = append(parts, fmt.Sprintf("exit code %d", e.ExitCode))
	}
	if e.Signal != 0 {
		parts = append(parts, fmt.Sprintf("signal %d", e.Signal))
	}
	if e.RestartIn > 0 && e.Message == "" {
		parts = append(parts, "restart in "+e.RestartIn.String())
	}
	return strings.Join(parts, ", ")
}
