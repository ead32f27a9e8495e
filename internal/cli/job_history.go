package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/api"
)

// newJobHistoryCommand is `caravan job history ID`.
func newJobHistoryCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "history ID",
		Short: "List the kept versions of a job, newest first",
		Args:  cobra.ExactArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		versions, err := c.JobVersions(ctx, args[0])
		if err != nil {
			return fmt.Errorf("job %s versions: %w", args[0], err)
		}
		if f.json {
			return f.printJSON(nonNil(versions))
		}
		now := time.Now()
		tw := newTable(env.Stdout)
		row(tw, "VERSION", "SUBMITTED", "STOPPED", "TYPE", "PRIORITY", "TASK GROUPS")
		for _, v := range versions {
			row(tw, v.Version, timestamp(v.SubmitTime, now), v.Stop, v.Type, v.Priority, groupCounts(v))
		}
		return tw.Flush()
	})
	return cmd
}

// groupCounts renders a job's groups as "web×3, db×1".
func groupCounts(j *caravan.Job) string {
	parts := make([]string, 0, len(j.TaskGroups))
	for _, tg := range j.TaskGroups {
		if tg != nil {
			parts = append(parts, fmt.Sprintf("%s×%d", tg.Name, tg.GroupCount()))
		}
	}
	return strings.Join(parts, ", ")
}
