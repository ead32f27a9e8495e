package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caravan-sched/caravan"
)

// newTable returns a tabwriter for aligned columns; call Flush at the end.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes one tab-separated row.
func row(w io.Writer, cols ...any) {
	for i, c := range cols {
		if i > 0 {
			io.WriteString(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	io.WriteString(w, "\n")
}

// field is one "Name = value" line of a details block.
type field struct {
	name  string
	value any
}

// writeFields writes aligned "Name = value" lines, leaving out empty
// values.
func writeFields(w io.Writer, fields []field) {
	tw := newTable(w)
	for _, f := range fields {
		v := fmt.Sprint(f.value)
		if v == "" {
			continue
		}
		fmt.Fprintf(tw, "%s\t= %s\n", f.name, v)
	}
	tw.Flush()
}

// section writes a blank line and a heading.
func section(w io.Writer, title string) {
	fmt.Fprintf(w, "\n%s\n", title)
}

// shortID shortens a UUID to 8 characters for tables.
func shortID(id string) string { return caravan.ShortID(id) }

// ago renders how long ago t was, such as "5s ago"; "" for a zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < 0 {
		return "in " + roughDuration(-d)
	}
	return roughDuration(d) + " ago"
}

// roughDuration rounds d to its two largest units: 45s, 3m12s, 2h5m, 3d4h.
func roughDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// timestamp renders t with how long ago it was.
func timestamp(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format("2006-01-02 15:04:05") + " (" + ago(t, now) + ")"
}

// plural renders "1 node" or "3 nodes".
func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// writePlacementFailures explains, per task group, why allocations were
// not placed: nodes evaluated, filtered by which constraint, exhausted by
// which resource.
func writePlacementFailures(w io.Writer, failed map[string]*caravan.AllocMetric) {
	for _, group := range sortedKeys(failed) {
		m := failed[group]
		if m == nil {
			continue
		}
		fmt.Fprintf(w, "Task group %q: %s not placed\n", group, plural(m.CoalescedFailures+1, "allocation"))
		for _, line := range explainMetric(m) {
			fmt.Fprintf(w, "  * %s\n", line)
		}
	}
}

// explainMetric turns an AllocMetric into sentences.
func explainMetric(m *caravan.AllocMetric) []string {
	var out []string
	if m.NodesInPool == 0 && m.NodesEvaluated == 0 {
		out = append(out, "no ready node in the job's node pool and datacenters")
	} else {
		out = append(out, fmt.Sprintf("%s evaluated (%d ready in the job's node pool and datacenters)",
			plural(m.NodesEvaluated, "node"), m.NodesInPool))
	}
	for _, reason := range sortedByCount(m.ConstraintFiltered) {
		out = append(out, fmt.Sprintf("%s filtered %s", quoteReason(reason), plural(m.ConstraintFiltered[reason], "node")))
	}
	for _, dim := range sortedByCount(m.DimensionExhausted) {
		out = append(out, fmt.Sprintf("%s exhausted on %s", dim, plural(m.DimensionExhausted[dim], "node")))
	}
	if rest := m.NodesFiltered - sum(m.ConstraintFiltered); rest > 0 {
		out = append(out, fmt.Sprintf("%s filtered for other reasons", plural(rest, "node")))
	}
	return out
}

// quoteReason quotes a constraint ("${attr.os} = linux") but leaves a
// sentence ("missing driver docker") as it is.
func quoteReason(r string) string {
	if strings.Contains(r, "${") {
		return "constraint " + fmt.Sprintf("%q", r)
	}
	return r
}

// sortedByCount orders keys by count, highest first, then by name.
func sortedByCount(m map[string]int) []string {
	keys := sortedKeys(m)
	sort.SliceStable(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	return keys
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// writeAllocTable writes allocations as a table, oldest first.
func writeAllocTable(w io.Writer, allocs []*caravan.Allocation, now time.Time) {
	sorted := append([]*caravan.Allocation(nil), allocs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		if sorted[i].CreateIndex != sorted[j].CreateIndex {
			return sorted[i].CreateIndex < sorted[j].CreateIndex
		}
		return sorted[i].Name < sorted[j].Name
	})
	tw := newTable(w)
	row(tw, "ID", "NAME", "NODE", "VERSION", "DESIRED", "STATUS", "CREATED")
	for _, a := range sorted {
		status := a.ClientStatus
		if a.TerminalReason != "" && a.TerminalReason != status {
			status += " (" + a.TerminalReason + ")"
		}
		row(tw, shortID(a.ID), a.Name, nodeLabel(a), a.JobVersion, a.DesiredStatus, status, ago(a.CreateTime, now))
	}
	tw.Flush()
}

// nodeLabel names an allocation's node: its name, or its short id.
func nodeLabel(a *caravan.Allocation) string {
	if a.NodeName != "" {
		return a.NodeName
	}
	return shortID(a.NodeID)
}

// writeSummary writes a job summary table, one row per task group.
func writeSummary(w io.Writer, groups map[string]caravan.GroupSummary) {
	tw := newTable(w)
	row(tw, "GROUP", "PENDING", "RUNNING", "COMPLETE", "FAILED", "LOST", "STOPPED")
	for _, g := range sortedKeys(groups) {
		s := groups[g]
		row(tw, g, s.Pending, s.Running, s.Complete, s.Failed, s.Lost, s.Stopped)
	}
	tw.Flush()
}

// writeEvalTable writes evaluations, newest first.
func writeEvalTable(w io.Writer, evals []*caravan.Evaluation, now time.Time) {
	tw := newTable(w)
	row(tw, "ID", "TRIGGERED BY", "STATUS", "PLACEMENT FAILURES", "CREATED")
	for _, e := range evals {
		row(tw, shortID(e.ID), e.TriggeredBy, e.Status, len(e.FailedTGAllocs) > 0, ago(e.CreateTime, now))
	}
	tw.Flush()
}

// newestFirst sorts evaluations by creation, newest first.
func newestFirst(evals []*caravan.Evaluation) []*caravan.Evaluation {
	out := append([]*caravan.Evaluation(nil), evals...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].CreateIndex != out[j].CreateIndex {
			return out[i].CreateIndex > out[j].CreateIndex
		}
		return out[i].CreateTime.After(out[j].CreateTime)
	})
	return out
}

// joinMap renders a map as "k=v, k=v" in key order.
func joinMap(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ", ")
}
