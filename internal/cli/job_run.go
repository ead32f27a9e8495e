package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
	"github.com/caravan-sched/caravan/internal/jobspec"
)

// maxJobFileBytes bounds a job file, as the server bounds a request body.
const maxJobFileBytes = 8 << 20

// Exit codes of job run.
const (
	exitBlocked = 2 // some allocations could not be placed and wait for capacity
)

// jobRunResult is what job run prints with --json.
type jobRunResult struct {
	JobID       string                `json:"job_id"`
	JobVersion  uint64                `json:"job_version"`
	EvalID      string                `json:"eval_id,omitempty"`
	Warnings    []string              `json:"warnings,omitempty"`
	Evaluation  *caravan.Evaluation   `json:"evaluation,omitempty"`
	Allocations []*caravan.Allocation `json:"allocations,omitempty"`
}

// newJobRunCommand is `caravan job run FILE`.
func newJobRunCommand(env *Env) *cobra.Command {
	var detach bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Submit a job from a JSON or HCL file and follow its placement",
		Long: `Submit a job from a file (JSON or HCL, see docs/jobspec.md; "-" reads
standard input), then follow its evaluation: placements as they happen,
placement failures with their reasons, then the allocations until they
run (batch jobs: until they finish), for at most --wait, and the final
state.

Exit codes: 0 when every allocation was placed, 2 when some wait for
capacity (blocked), 1 on any error.`,
		Args: cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "print the job and evaluation ids and return at once")
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Second, "how long to follow the allocations after placement (0: not at all)")
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		job, err := readJobFile(env, args[0])
		if err != nil {
			return err
		}
		resp, err := c.RegisterJob(ctx, job)
		if err != nil {
			return fmt.Errorf("submit job: %w", err)
		}
		for _, w := range resp.Warnings {
			fmt.Fprintln(env.Stderr, "Warning:", w)
		}
		res := &jobRunResult{JobID: resp.JobID, JobVersion: resp.JobVersion, EvalID: resp.EvalID, Warnings: resp.Warnings}
		if detach || resp.EvalID == "" {
			if f.json {
				return f.printJSON(res)
			}
			writeFields(env.Stdout, []field{{"Job ID", resp.JobID}, {"Job version", resp.JobVersion}, {"Evaluation ID", resp.EvalID}})
			return nil
		}
		out := env.Stdout
		if f.json {
			out = io.Discard
		}
		fmt.Fprintf(out, "==> Job %q submitted (version %d), evaluation %s\n", resp.JobID, resp.JobVersion, shortID(resp.EvalID))
		m := &evalMonitor{client: c, out: out, jobID: resp.JobID}
		eval, allocs, err := m.follow(ctx, resp.EvalID)
		if err != nil {
			if ctx.Err() != nil {
				fmt.Fprintf(env.Stderr, "Stopped following; the job goes on. See: caravan job status %s\n", resp.JobID)
				return nil
			}
			return err
		}
		if wait > 0 && eval.Status != caravan.EvalStatusFailed {
			var settled bool
			allocs, settled = m.settle(ctx, allocs, job.Type == caravan.JobTypeBatch, wait)
			if !settled && ctx.Err() == nil {
				fmt.Fprintf(out, "==> Stopped following after %v; the job goes on. See: caravan job status %s\n", wait, resp.JobID)
			}
		}
		res.Evaluation, res.Allocations = eval, allocs
		if f.json {
			if err := f.printJSON(res); err != nil {
				return err
			}
		} else {
			writeRunOutcome(ctx, c, out, eval, allocs)
		}
		return runExit(eval)
	})
	return cmd
}

// readJobFile reads and parses a job file; "-" is standard input.
func readJobFile(env *Env, name string) (*caravan.Job, error) {
	var r io.Reader
	if name == "-" {
		r = env.Stdin
	} else {
		file, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("read job file: %w", err)
		}
		defer file.Close()
		r = file
	}
	src, err := io.ReadAll(io.LimitReader(r, maxJobFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read job file: %w", err)
	}
	if len(src) > maxJobFileBytes {
		return nil, fmt.Errorf("job file %s is larger than %d MB", name, maxJobFileBytes>>20)
	}
	return jobspec.Parse(name, src)
}

// writeRunOutcome prints what an evaluation did: failures, blocked work,
// the allocations it placed and the job's status.
func writeRunOutcome(ctx context.Context, c *api.Client, w io.Writer, eval *caravan.Evaluation, allocs []*caravan.Allocation) {
	if len(eval.FailedTGAllocs) > 0 {
		fmt.Fprintln(w, "==> Placement failures")
		writePlacementFailures(w, eval.FailedTGAllocs)
	}
	blocked := eval.BlockedEval
	if eval.Status == caravan.EvalStatusBlocked {
		blocked = eval.ID
	}
	if blocked != "" {
		fmt.Fprintf(w, "==> Evaluation %s is blocked: what did not fit is placed when capacity frees up\n", shortID(blocked))
	}
	if eval.Status == caravan.EvalStatusFailed {
		return
	}
	fmt.Fprintf(w, "==> Final state: %s placed by this evaluation\n", plural(len(allocs), "allocation"))
	if len(allocs) > 0 {
		writeAllocTable(w, allocs, time.Now())
	}
	if job, _, err := c.Job(ctx, eval.JobID, nil); err == nil {
		fmt.Fprintf(w, "==> Job %q is %s\n", job.ID, job.Status)
	}
}

// runExit is the exit status of job run for a finished evaluation.
func runExit(eval *caravan.Evaluation) error {
	switch {
	case eval.Status == caravan.EvalStatusFailed:
		desc := eval.StatusDescription
		if desc == "" {
			desc = "no reason given"
		}
		return fmt.Errorf("evaluation %s failed: %s", eval.ID, desc)
	case eval.Status == caravan.EvalStatusBlocked || eval.BlockedEval != "" || len(eval.FailedTGAllocs) > 0:
		return &ExitError{Code: exitBlocked}
	}
	return nil
}

// errEvalGone means the followed evaluation disappeared (garbage collected).
var errEvalGone = errors.New("the evaluation is gone")
