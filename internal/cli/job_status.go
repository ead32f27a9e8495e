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

// jobStatus is what job status ID prints with --json.
type jobStatus struct {
	Job              *caravan.Job          `json:"job"`
	Summary          *caravan.JobSummary   `json:"summary,omitempty"`
	Allocations      []*caravan.Allocation `json:"allocations"`
	LatestEvaluation *caravan.Evaluation   `json:"latest_evaluation,omitempty"`
	Evaluations      []*caravan.Evaluation `json:"evaluations,omitempty"`
}

// newJobStatusCommand is `caravan job status [ID]`.
func newJobStatusCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [ID]",
		Short: "List jobs, or show one job with its allocations and evaluations",
		Args:  cobra.MaximumNArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		if len(args) == 0 {
			return listJobs(ctx, c, f)
		}
		return showJob(ctx, c, f, args[0])
	})
	return cmd
}

func listJobs(ctx context.Context, c *api.Client, f *clientFlags) error {
	jobs, _, err := c.Jobs(ctx, nil)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	if f.json {
		return f.printJSON(nonNil(jobs))
	}
	if len(jobs) == 0 {
		fmt.Fprintln(f.env.Stdout, "No jobs.")
		return nil
	}
	now := time.Now()
	tw := newTable(f.env.Stdout)
	row(tw, "ID", "NAME", "TYPE", "PRIORITY", "POOL", "STATUS", "ALLOCATIONS", "SUBMITTED")
	for _, j := range jobs {
		name := j.Name
		if name == "" {
			name = j.ID
		}
		row(tw, j.ID, name, j.Type, j.Priority, j.NodePool, j.Status, summaryCounts(j.Summary), ago(j.SubmitTime, now))
	}
	return tw.Flush()
}

// summaryCounts renders a summary as "3 running, 1 pending".
func summaryCounts(groups map[string]caravan.GroupSummary) string {
	var t caravan.GroupSummary
	for _, g := range groups {
		t.Pending += g.Pending
		t.Running += g.Running
		t.Complete += g.Complete
		t.Failed += g.Failed
		t.Lost += g.Lost
		t.Stopped += g.Stopped
	}
	var parts []string
	for _, c := range []struct {
		n    int
		name string
	}{{t.Running, "running"}, {t.Pending, "pending"}, {t.Complete, "complete"}, {t.Failed, "failed"}, {t.Lost, "lost"}, {t.Stopped, "stopped"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.name))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func showJob(ctx context.Context, c *api.Client, f *clientFlags, id string) error {
	job, _, err := c.Job(ctx, id, nil)
	if err != nil {
		return err // the server names the object
	}
	st := &jobStatus{Job: job}
	if st.Summary, _, err = c.JobSummary(ctx, job.ID, nil); err != nil {
		return fmt.Errorf("job %s summary: %w", id, err)
	}
	if st.Allocations, _, err = c.JobAllocations(ctx, job.ID, nil); err != nil {
		return fmt.Errorf("job %s allocations: %w", id, err)
	}
	evals, _, err := c.JobEvaluations(ctx, job.ID, nil)
	if err != nil {
		return fmt.Errorf("job %s evaluations: %w", id, err)
	}
	st.Evaluations = newestFirst(evals)
	if len(st.Evaluations) > 0 {
		st.LatestEvaluation = st.Evaluations[0]
	}
	st.Allocations = nonNil(st.Allocations)
	if f.json {
		return f.printJSON(st)
	}
	writeJobStatus(f.env.Stdout, st, time.Now())
	return nil
}

func writeJobStatus(w io.Writer, st *jobStatus, now time.Time) {
	j := st.Job
	status := j.Status
	if j.StatusDescription != "" {
		status += " (" + j.StatusDescription + ")"
	}
	writeFields(w, []field{
		{"ID", j.ID},
		{"Name", j.Name},
		{"Type", j.Type},
		{"Priority", j.Priority},
		{"Account", j.Account},
		{"Node pool", j.NodePool},
		{"Datacenters", strings.Join(j.Datacenters, ",")},
		{"Status", status},
		{"Version", j.Version},
		{"Submitted", timestamp(j.SubmitTime, now)},
	})
	if st.Summary != nil && len(st.Summary.Groups) > 0 {
		section(w, "Summary")
		writeSummary(w, st.Summary.Groups)
	}
	if ev := st.LatestEvaluation; ev != nil {
		section(w, "Latest evaluation")
		writeFields(w, []field{
			{"ID", ev.ID},
			{"Triggered by", ev.TriggeredBy},
			{"Status", describeEval(ev)},
			{"Created", timestamp(ev.CreateTime, now)},
		})
	}
	processed := latestProcessed(st.Evaluations)
	if processed != nil && len(processed.FailedTGAllocs) > 0 {
		section(w, "Placement failures (evaluation "+shortID(processed.ID)+")")
		writePlacementFailures(w, processed.FailedTGAllocs)
	}
	for _, ev := range st.Evaluations {
		if ev.Status == caravan.EvalStatusBlocked {
			fmt.Fprintf(w, "\nEvaluation %s is blocked: allocations wait for capacity", shortID(ev.ID))
			if processed != nil && len(processed.QueuedAllocations) > 0 {
				fmt.Fprintf(w, " (queued: %s)", queued(processed.QueuedAllocations))
			}
			fmt.Fprintln(w, ".")
			break
		}
	}
	section(w, "Allocations")
	if len(st.Allocations) == 0 {
		fmt.Fprintln(w, "No allocations.")
		return
	}
	writeAllocTable(w, st.Allocations, now)
}

// latestProcessed is the newest evaluation a scheduler has worked on.
func latestProcessed(newest []*caravan.Evaluation) *caravan.Evaluation {
	for _, ev := range newest {
		if ev.Status == caravan.EvalStatusComplete || ev.Status == caravan.EvalStatusFailed {
			return ev
		}
	}
	return nil
}

// queued renders queued allocations per group, such as "web: 3".
func queued(q map[string]int) string {
	var parts []string
	for _, g := range sortedKeys(q) {
		if q[g] > 0 {
			parts = append(parts, fmt.Sprintf("%s: %d", g, q[g]))
		}
	}
	if len(parts) == 0 {
		return "nothing queued"
	}
	return strings.Join(parts, ", ")
}

// nonNil returns an empty slice for nil, so JSON shows [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
