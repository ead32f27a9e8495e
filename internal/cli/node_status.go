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

// nodeStatus is what node status ID prints with --json.
type nodeStatus struct {
	Node        *caravan.Node         `json:"node"`
	Usage       caravan.NodeUsage     `json:"usage"`
	Allocations []*caravan.Allocation `json:"allocations"`
}

// newNodeStatusCommand is `caravan node status [ID]`.
func newNodeStatusCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [ID]",
		Short: "List nodes, or show one node's attributes, resources and allocations",
		Long:  "List nodes, or show one node. ID may be a unique prefix of the node id.",
		Args:  cobra.MaximumNArgs(1),
	}
	f := addClientFlags(cmd, env)
	cmd.RunE = f.run(func(ctx context.Context, c *api.Client, args []string) error {
		if len(args) == 0 {
			return listNodes(ctx, c, f)
		}
		return showNode(ctx, c, f, args[0])
	})
	return cmd
}

func listNodes(ctx context.Context, c *api.Client, f *clientFlags) error {
	nodes, _, err := c.Nodes(ctx, nil)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	if f.json {
		return f.printJSON(nonNil(nodes))
	}
	if len(nodes) == 0 {
		fmt.Fprintln(f.env.Stdout, "No nodes.")
		return nil
	}
	counts, err := liveAllocCounts(ctx, c)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := newTable(f.env.Stdout)
	row(tw, "ID", "NAME", "POOL", "DC", "STATUS", "ALLOCATIONS", "LAST HEARTBEAT")
	for _, n := range nodes {
		row(tw, shortID(n.ID), n.Name, n.NodePool, n.Datacenter, n.DisplayStatus(), counts[n.ID], ago(n.LastHeartbeat, now))
	}
	return tw.Flush()
}

// liveAllocCounts counts, per node, the allocations that are pending or
// running and that the server has not told to stop.
func liveAllocCounts(ctx context.Context, c *api.Client) (map[string]int, error) {
	counts := map[string]int{}
	for _, status := range []string{caravan.AllocClientPending, caravan.AllocClientRunning} {
		allocs, _, err := c.Allocations(ctx, &api.QueryOptions{Params: map[string]string{"client_status": status}})
		if err != nil {
			return nil, fmt.Errorf("list allocations: %w", err)
		}
		for _, a := range allocs {
			if !a.ServerTerminal() {
				counts[a.NodeID]++
			}
		}
	}
	return counts, nil
}

func showNode(ctx context.Context, c *api.Client, f *clientFlags, id string) error {
	n, _, err := c.Node(ctx, id, nil)
	if err != nil {
		return err // the server names the object
	}
	allocs, _, err := c.Allocations(ctx, &api.QueryOptions{Params: map[string]string{"node_id": n.ID}})
	if err != nil {
		return fmt.Errorf("allocations of node %s: %w", id, err)
	}
	st := &nodeStatus{Node: n, Allocations: nonNil(allocs)}
	for _, a := range allocs {
		if !a.Terminal() {
			st.Usage = st.Usage.Add(&a.Resources)
		}
	}
	if f.json {
		return f.printJSON(st)
	}
	writeNodeStatus(f.env.Stdout, st, time.Now())
	return nil
}

func writeNodeStatus(w io.Writer, st *nodeStatus, now time.Time) {
	n := st.Node
	status := n.DisplayStatus()
	if n.StatusDescription != "" {
		status += " (" + n.StatusDescription + ")"
	}
	drain := ""
	if d := n.Drain; d != nil {
		drain = "since " + timestamp(d.StartedAt, now)
		if !d.ForceDeadline.IsZero() {
			drain += ", deadline " + timestamp(d.ForceDeadline, now)
		}
		if d.IgnoreSystemJobs {
			drain += ", system jobs stay"
		}
	}
	writeFields(w, []field{
		{"ID", n.ID},
		{"Name", n.Name},
		{"Datacenter", n.Datacenter},
		{"Node pool", n.NodePool},
		{"Status", status},
		{"Eligibility", n.SchedulingEligibility},
		{"Drain", drain},
		{"HTTP address", n.HTTPAddr},
		{"Last heartbeat", timestamp(n.LastHeartbeat, now)},
	})

	section(w, "Drivers")
	tw := newTable(w)
	row(tw, "DRIVER", "DETECTED", "HEALTHY", "DESCRIPTION")
	for _, name := range sortedKeys(n.Drivers) {
		d := n.Drivers[name]
		row(tw, name, d.Detected, d.Healthy, d.HealthDescription)
	}
	tw.Flush()

	section(w, "Resources")
	cpu, mem := n.Capacity()
	tw = newTable(w)
	row(tw, "", "CPU", "MEMORY", "CORES")
	row(tw, "Total", fmt.Sprintf("%d MHz", n.Resources.CPU), fmt.Sprintf("%d MB", n.Resources.Memory), len(n.Resources.Cores))
	row(tw, "Reserved", fmt.Sprintf("%d MHz", n.Reserved.CPU), fmt.Sprintf("%d MB", n.Reserved.Memory), len(n.Reserved.Cores))
	row(tw, "Allocated", fmt.Sprintf("%d MHz", st.Usage.CPU), fmt.Sprintf("%d MB", st.Usage.Memory), len(st.Usage.Cores))
	row(tw, "Free", fmt.Sprintf("%d MHz", cpu-st.Usage.CPU), fmt.Sprintf("%d MB", mem-st.Usage.Memory), len(n.FreeCores(st.Usage)))
	tw.Flush()

	if len(n.Attributes) > 0 {
		section(w, "Attributes")
		writeMap(w, n.Attributes)
	}
	if len(n.Meta) > 0 {
		section(w, "Meta")
		writeMap(w, n.Meta)
	}
	section(w, "Allocations")
	if len(st.Allocations) == 0 {
		fmt.Fprintln(w, "No allocations.")
		return
	}
	writeAllocTable(w, st.Allocations, now)
}

// writeMap writes a map as aligned "key = value" lines in key order.
func writeMap(w io.Writer, m map[string]string) {
	fields := make([]field, 0, len(m))
	for _, k := range sortedKeys(m) {
		fields = append(fields, field{k, m[k]})
	}
	writeFields(w, fields)
}
