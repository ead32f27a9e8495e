package fsm

import (
	"fmt"
	"strconv"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
)

// PlanApplyCompact entries carry a PlanApplyRequest in less space than
// PlanApply entries, and decode with much less work: the allocations a
// plan places share their evaluation, job, version, group and statuses, so
// each plan writes one template allocation, each node once, and per
// allocation only its id, index, node and what differs (cores, ports,
// another group). Stops are ids with their job version and the desired
// status and description when they differ from the plan's first stop.
// Allocations that do not fit the form (task states, reschedule links,
// another job or evaluation) are written whole, in place, so the decoded
// request holds the same allocations in the same order as the one
// encoded. Fields the state store sets itself on placement (Job, the
// create and modify indexes and times) are left out.
//
// The payload is JSON, as for every entry:
//
//	{"time": ..., "plans": [{"eval_id": ..., "job_id": ...,
//	  "template": {allocation}, "nodes": [{"i": id, "n": name}, ...],
//	  "allocs": [{"i": id, "x": index, "n": node}, {"full": {allocation}}, ...],
//	  "stop": {"d": desired, "m": description},
//	  "stops": [{"i": id, "v": version}, ...], "evals": [...]}]}
type compactRequest struct {
	Time  time.Time     `json:"time"`
	Plans []compactPlan `json:"plans"`
}

type compactPlan struct {
	EvalID string `json:"eval_id,omitempty"`
	JobID  string `json:"job_id,omitempty"`
	// Template holds the fields the compact allocations share.
	Template *caravan.Allocation `json:"template,omitempty"`
	Nodes    []compactNode       `json:"nodes,omitempty"`
	Allocs   []compactAlloc      `json:"allocs,omitempty"`
	// Stop holds the desired status and description compact stops share.
	Stop  *compactStopTemplate  `json:"stop,omitempty"`
	Stops []compactStop         `json:"stops,omitempty"`
	Evals []*caravan.Evaluation `json:"evals,omitempty"`
}

type compactNode struct {
	ID   string `json:"i"`
	Name string `json:"n,omitempty"`
}

// compactAlloc is an allocation made of the template and these fields, or
// Full.
type compactAlloc struct {
	Full  *caravan.Allocation `json:"full,omitempty"`
	ID    string              `json:"i,omitempty"`
	Index int                 `json:"x,omitempty"`
	Node  int                 `json:"n,omitempty"`
	// Group is the task group when not the template's.
	Group string `json:"g,omitempty"`
	// Name is set when it is not AllocName(job, group, index).
	Name string `json:"nm,omitempty"`
	// Resources are set when cpu or memory are not the template's; Cores
	// and Ports otherwise.
	Resources *caravan.AllocatedResources `json:"r,omitempty"`
	Cores     []int                       `json:"c,omitempty"`
	Ports     []caravan.AllocatedPort     `json:"p,omitempty"`
}

type compactStopTemplate struct {
	Desired     string `json:"d,omitempty"`
	Description string `json:"m,omitempty"`
}

// compactStop is a stop of an allocation of the plan's job, or Full.
type compactStop struct {
	Full        *caravan.Allocation `json:"full,omitempty"`
	ID          string              `json:"i,omitempty"`
	Version     uint64              `json:"v,omitempty"`
	Desired     string              `json:"d,omitempty"`
	Description string              `json:"m,omitempty"`
}

// compactOf writes a request in the compact form. Allocations keep their
// Job out, as in PlanApply entries.
func compactOf(r *PlanApplyRequest) *compactRequest {
	out := &compactRequest{Time: r.Time, Plans: make([]compactPlan, len(r.Plans))}
	for i := range r.Plans {
		out.Plans[i] = compactPlanOf(&r.Plans[i])
	}
	return out
}

func compactPlanOf(p *state.PlanUpdate) compactPlan {
	cp := compactPlan{EvalID: p.EvalID, JobID: p.JobID, Evals: p.Evals}
	if len(p.Allocs) > 0 {
		cp.Allocs = make([]compactAlloc, len(p.Allocs))
	}
	nodes := map[string]int{}
	for i, a := range p.Allocs {
		if cp.Template == nil && placementLike(a) {
			cp.Template = templateOf(a)
		}
		if cp.Template == nil || !fitsTemplate(cp.Template, a) {
			cp.Allocs[i] = compactAlloc{Full: withoutJob(a)}
			continue
		}
		node, ok := nodes[a.NodeID]
		if !ok {
			node = len(cp.Nodes)
			nodes[a.NodeID] = node
			cp.Nodes = append(cp.Nodes, compactNode{ID: a.NodeID, Name: a.NodeName})
		}
		if cp.Nodes[node].Name != a.NodeName {
			cp.Allocs[i] = compactAlloc{Full: withoutJob(a)}
			continue
		}
		ca := compactAlloc{ID: a.ID, Index: a.Index, Node: node}
		if a.TaskGroup != cp.Template.TaskGroup {
			ca.Group = a.TaskGroup
		}
		if a.Name == "" {
			cp.Allocs[i] = compactAlloc{Full: withoutJob(a)}
			continue
		}
		if a.Name != allocName(a.JobID, a.TaskGroup, a.Index) {
			ca.Name = a.Name
		}
		if a.Resources.CPU != cp.Template.Resources.CPU || a.Resources.Memory != cp.Template.Resources.Memory {
			r := a.Resources
			ca.Resources = &r
		} else {
			ca.Cores, ca.Ports = a.Resources.Cores, a.Resources.Ports
		}
		cp.Allocs[i] = ca
	}
	if len(p.Stops) > 0 {
		cp.Stops = make([]compactStop, len(p.Stops))
	}
	for i, a := range p.Stops {
		if !stopLike(a, p.JobID) {
			cp.Stops[i] = compactStop{Full: withoutJob(a)}
			continue
		}
		if cp.Stop == nil {
			cp.Stop = &compactStopTemplate{Desired: a.DesiredStatus, Description: a.DesiredDescription}
		}
		cs := compactStop{ID: a.ID, Version: a.JobVersion}
		if a.DesiredStatus != cp.Stop.Desired {
			cs.Desired = a.DesiredStatus
		}
		if a.DesiredDescription != cp.Stop.Description {
			cs.Description = a.DesiredDescription
		}
		if cs.Desired == "" && a.DesiredStatus != cp.Stop.Desired || cs.Description == "" && a.DesiredDescription != cp.Stop.Description {
			cs = compactStop{Full: withoutJob(a)}
		}
		cp.Stops[i] = cs
	}
	return cp
}

// placementLike reports whether a can make a template: it carries none of
// the fields only reschedules and agents set.
func placementLike(a *caravan.Allocation) bool {
	return a != nil && a.ID != "" && a.TaskGroup != "" && a.TaskStates == nil && a.RescheduleTracker == nil &&
		a.PreviousAllocation == "" && a.NextAllocation == "" && a.FollowupEvalID == ""
}

// templateOf is a with its own fields cleared.
func templateOf(a *caravan.Allocation) *caravan.Allocation {
	return &caravan.Allocation{
		EvalID: a.EvalID, JobID: a.JobID, JobVersion: a.JobVersion, TaskGroup: a.TaskGroup,
		Resources:     caravan.AllocatedResources{CPU: a.Resources.CPU, Memory: a.Resources.Memory},
		DesiredStatus: a.DesiredStatus, DesiredDescription: a.DesiredDescription,
		ClientStatus: a.ClientStatus, ClientDescription: a.ClientDescription, TerminalReason: a.TerminalReason,
	}
}

// fitsTemplate reports whether a is the template but for its id, index,
// node, group, name and resources (and the fields the store sets).
func fitsTemplate(t, a *caravan.Allocation) bool {
	return placementLike(a) &&
		a.EvalID == t.EvalID && a.JobID == t.JobID && a.JobVersion == t.JobVersion &&
		a.DesiredStatus == t.DesiredStatus && a.DesiredDescription == t.DesiredDescription &&
		a.ClientStatus == t.ClientStatus && a.ClientDescription == t.ClientDescription &&
		a.TerminalReason == t.TerminalReason
}

// stopLike reports whether a stop carries nothing but its id, its job's
// version and the desired status and description.
func stopLike(a *caravan.Allocation, jobID string) bool {
	return a != nil && a.ID != "" && a.JobID == jobID && jobID != "" &&
		a.NextAllocation == "" && a.FollowupEvalID == "" && a.RescheduleTracker == nil
}

func withoutJob(a *caravan.Allocation) *caravan.Allocation {
	if a == nil || a.Job == nil {
		return a
	}
	c := a.ShallowCopy()
	c.Job = nil
	return c
}

// expand makes the request a compact one was written from.
func (r *compactRequest) expand() (*PlanApplyRequest, error) {
	out := &PlanApplyRequest{Time: r.Time, Plans: make([]state.PlanUpdate, len(r.Plans))}
	for i := range r.Plans {
		p, err := r.Plans[i].expand()
		if err != nil {
			return nil, err
		}
		out.Plans[i] = p
	}
	return out, nil
}

func (cp *compactPlan) expand() (state.PlanUpdate, error) {
	p := state.PlanUpdate{EvalID: cp.EvalID, JobID: cp.JobID, Evals: cp.Evals}
	if len(cp.Allocs) > 0 {
		p.Allocs = make([]*caravan.Allocation, len(cp.Allocs))
	}
	for i := range cp.Allocs {
		ca := &cp.Allocs[i]
		if ca.Full != nil {
			p.Allocs[i] = ca.Full
			continue
		}
		t := cp.Template
		if t == nil || ca.ID == "" || ca.Node < 0 || ca.Node >= len(cp.Nodes) {
			return p, errCompact("allocation %d of the plan of evaluation %q has no template, id or node", i, cp.EvalID)
		}
		a := new(caravan.Allocation)
		*a = *t
		node := &cp.Nodes[ca.Node]
		a.ID, a.Index, a.NodeID, a.NodeName = ca.ID, ca.Index, node.ID, node.Name
		if ca.Group != "" {
			a.TaskGroup = ca.Group
		}
		a.Name = ca.Name
		if a.Name == "" {
			a.Name = allocName(a.JobID, a.TaskGroup, a.Index)
		}
		if ca.Resources != nil {
			a.Resources = *ca.Resources
		} else {
			a.Resources.Cores, a.Resources.Ports = ca.Cores, ca.Ports
		}
		p.Allocs[i] = a
	}
	if len(cp.Stops) > 0 {
		p.Stops = make([]*caravan.Allocation, len(cp.Stops))
	}
	for i := range cp.Stops {
		cs := &cp.Stops[i]
		if cs.Full != nil {
			p.Stops[i] = cs.Full
			continue
		}
		if cp.Stop == nil || cs.ID == "" {
			return p, errCompact("stop %d of the plan of evaluation %q has no template or id", i, cp.EvalID)
		}
		a := &caravan.Allocation{ID: cs.ID, JobID: cp.JobID, JobVersion: cs.Version,
			DesiredStatus: cp.Stop.Desired, DesiredDescription: cp.Stop.Description}
		if cs.Desired != "" {
			a.DesiredStatus = cs.Desired
		}
		if cs.Description != "" {
			a.DesiredDescription = cs.Description
		}
		p.Stops[i] = a
	}
	return p, nil
}

// allocName is caravan.AllocName without fmt.
func allocName(jobID, group string, index int) string {
	return jobID + "." + group + "[" + strconv.Itoa(index) + "]"
}

func errCompact(format string, args ...any) error {
	return fmt.Errorf("compact plan: "+format+": %w", append(args, caravan.ErrInvalid)...)
}
