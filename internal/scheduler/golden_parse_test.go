package scheduler

import (
	"fmt"
	"strings"
	"time"

	"github.com/caravan-sched/caravan"
)

// parseNode reads one node line of a scenario:
//
//	id cpu=4000 mem=8192 cores=4 dc=dc1 pool=default status=ready
//	   eligible=no drain=yes drain_deadline=-1s ignore_system=yes
//	   drivers=exec,docker! (a trailing ! marks an unhealthy driver)
//	   reserved_cpu=N reserved_mem=N reserved_cores=0,1 reserved_ports=22,80
//	   ports=20000-20010 attr.X=V meta.X=V
//
// Left out, a field keeps testNode's default.
func parseNode(line string) (*caravan.Node, error) {
	kv := fields(line)
	n := testNode(kv["id"])
	for k, v := range kv {
		switch {
		case k == "id":
		case k == "cpu":
			n.Resources.CPU = atoi(v, 0)
		case k == "mem":
			n.Resources.Memory = caravan.MemoryMB(atoi(v, 0))
		case k == "cores":
			n.Resources.Cores = nil
			for i := range atoi(v, 0) {
				n.Resources.Cores = append(n.Resources.Cores, i)
			}
		case k == "dc":
			n.Datacenter = v
		case k == "pool":
			n.NodePool = v
		case k == "name":
			n.Name = v
		case k == "status":
			n.Status = v
		case k == "eligible":
			if v == "no" {
				n.SchedulingEligibility = caravan.NodeIneligible
			}
		case k == "drain":
			if n.Drain == nil {
				n.Drain = &caravan.DrainStrategy{}
			}
		case k == "drain_deadline":
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, err
			}
			n.Drain = &caravan.DrainStrategy{Deadline: caravan.Duration(d)}
		case k == "ignore_system":
			if n.Drain == nil {
				n.Drain = &caravan.DrainStrategy{}
			}
			n.Drain.IgnoreSystemJobs = v == "yes"
		case k == "drivers":
			n.Drivers = map[string]caravan.DriverInfo{}
			for _, d := range strings.Split(v, ",") {
				if d == "" {
					continue
				}
				name, unhealthy := strings.CutSuffix(d, "!")
				n.Drivers[name] = caravan.DriverInfo{Detected: true, Healthy: !unhealthy}
			}
		case k == "reserved_cpu":
			n.Reserved.CPU = atoi(v, 0)
		case k == "reserved_mem":
			n.Reserved.Memory = caravan.MemoryMB(atoi(v, 0))
		case k == "reserved_cores":
			n.Reserved.Cores = ints(v)
		case k == "reserved_ports":
			n.Reserved.Ports = ints(v)
		case k == "ports":
			lo, hi, _ := strings.Cut(v, "-")
			n.Resources.MinDynamicPort, n.Resources.MaxDynamicPort = atoi(lo, 0), atoi(hi, 0)
		case strings.HasPrefix(k, "attr."):
			n.Attributes[strings.TrimPrefix(k, "attr.")] = v
		case strings.HasPrefix(k, "meta."):
			if n.Meta == nil {
				n.Meta = map[string]string{}
			}
			n.Meta[strings.TrimPrefix(k, "meta.")] = v
		default:
			return nil, fmt.Errorf("node %s: unknown field %q", n.ID, k)
		}
	}
	return n, nil
}

// parseAlloc reads one allocation line of a scenario:
//
//	id node=n1 job=other group=web index=0 version=0 client=running desired=run
//	   cpu=500 mem=256 cores=0,1 ports=http:20001,db:5432
//	   finished=RFC3339 modify=RFC3339 next=ID followup=ID
//	   reschedules=RFC3339;RFC3339 create=N
//
// The allocation shares the job of its version; a version without a
// section leaves Job nil (a missing job version).
func parseAlloc(line string, job *caravan.Job, versions map[uint64]*caravan.Job) (*caravan.Allocation, error) {
	kv := fields(line)
	group := kv["group"]
	if group == "" {
		group = job.TaskGroups[0].Name
	}
	index := atoi(kv["index"], 0)
	version := uint64(atoi(kv["version"], int(job.Version)))
	jobID := orDefault(kv["job"], job.ID)
	if jobID != job.ID {
		versions = nil // another job's allocation: only its usage matters
	}
	a := &caravan.Allocation{
		ID: kv["id"], EvalID: "eval-0", Name: caravan.AllocName(jobID, group, index),
		JobID: jobID, JobVersion: version, TaskGroup: group, Index: index,
		NodeID: kv["node"], NodeName: kv["node"], Job: versions[version],
		Resources: caravan.AllocatedResources{
			CPU: atoi(kv["cpu"], 500), Memory: caravan.MemoryMB(atoi(kv["mem"], 256)), Cores: ints(kv["cores"]),
		},
		DesiredStatus:  orDefault(kv["desired"], caravan.AllocDesiredRun),
		ClientStatus:   orDefault(kv["client"], caravan.AllocClientRunning),
		NextAllocation: kv["next"],
		FollowupEvalID: kv["followup"],
		CreateIndex:    uint64(atoi(kv["create"], 0)),
	}
	if v := kv["ports"]; v != "" {
		for _, p := range strings.Split(v, ",") {
			label, value, _ := strings.Cut(p, ":")
			a.Resources.Ports = append(a.Resources.Ports, caravan.AllocatedPort{Label: label, Value: atoi(value, 0), To: atoi(value, 0)})
		}
	}
	for k, dst := range map[string]*time.Time{"modify": &a.ModifyTime} {
		if v := kv[k]; v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return nil, err
			}
			*dst = t
		}
	}
	if v := kv["finished"]; v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, err
		}
		a.TaskStates = map[string]*caravan.TaskState{"main": {State: caravan.TaskStateFailed, Failed: true, FinishedAt: t}}
	}
	if v := kv["reschedules"]; v != "" {
		a.RescheduleTracker = &caravan.RescheduleTracker{}
		for _, s := range strings.Split(v, ";") {
			t, err := time.Parse(time.RFC3339, s)
			if err != nil {
				return nil, err
			}
			a.RescheduleTracker.Events = append(a.RescheduleTracker.Events, caravan.RescheduleEvent{Time: t, PrevAllocID: "earlier"})
		}
	}
	return a, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
