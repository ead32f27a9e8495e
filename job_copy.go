package caravan

import (
	"bytes"
	"encoding/json"
	"time"
)

// Copy returns a deep copy of the job.
func (j *Job) Copy() *Job {
	if j == nil {
		return nil
	}
	b, err := json.Marshal(j)
	if err != nil {
		panic("caravan: job does not marshal: " + err.Error()) // all fields are plain data
	}
	var c Job
	if err := json.Unmarshal(b, &c); err != nil {
		panic("caravan: job does not unmarshal: " + err.Error())
	}
	return &c
}

// ShallowCopy returns a copy sharing task groups, maps and slices; enough for
// changing the server-managed scalar fields copy-on-write.
func (j *Job) ShallowCopy() *Job {
	c := *j
	return &c
}

// SpecEqual reports whether two jobs have the same user-given spec, ignoring
// the fields the server manages (status, version, indexes, submit time, stop).
func (j *Job) SpecEqual(o *Job) bool {
	return bytes.Equal(j.specJSON(), o.specJSON())
}

func (j *Job) specJSON() []byte {
	c := *j
	c.Stop = false
	c.Status, c.StatusDescription = "", ""
	c.Version = 0
	c.SubmitTime = time.Time{}
	c.CreateIndex, c.ModifyIndex, c.JobModifyIndex = 0, 0, 0
	b, _ := json.Marshal(&c)
	return b
}

// JobSummary counts a job's allocations per task group and client status.
// The state store keeps it up to date with every allocation write, so the
// job's status is derived without scanning allocations.
type JobSummary struct {
	JobID       string                  `json:"job_id"`
	Groups      map[string]GroupSummary `json:"groups"`
	CreateIndex uint64                  `json:"create_index,omitempty"`
	ModifyIndex uint64                  `json:"modify_index,omitempty"`
}

// GroupSummary counts one task group's allocations by client status.
type GroupSummary struct {
	Pending  int `json:"pending"`
	Running  int `json:"running"`
	Complete int `json:"complete"`
	Failed   int `json:"failed"`
	Lost     int `json:"lost"`
	Stopped  int `json:"stopped"`
}

// Copy returns a deep copy.
func (s *JobSummary) Copy() *JobSummary {
	c := *s
	c.Groups = make(map[string]GroupSummary, len(s.Groups))
	for k, v := range s.Groups {
		c.Groups[k] = v
	}
	return &c
}

// Add counts (delta +1) or uncounts (delta -1) an allocation.
func (s *JobSummary) Add(a *Allocation, delta int) {
	g := s.Groups[a.TaskGroup]
	switch SummaryBucket(a) {
	case AllocClientPending:
		g.Pending += delta
	case AllocClientRunning:
		g.Running += delta
	case AllocClientComplete:
		g.Complete += delta
	case AllocClientFailed:
		g.Failed += delta
	case AllocClientLost:
		g.Lost += delta
	default:
		g.Stopped += delta
	}
	if s.Groups == nil {
		s.Groups = map[string]GroupSummary{}
	}
	s.Groups[a.TaskGroup] = g
}

// SummaryBucket names the summary count an allocation belongs to: its
// client status, or "stopped" while the server has stopped it and the agent
// has not yet reported it terminal.
func SummaryBucket(a *Allocation) string {
	if !a.ClientTerminal() && a.ServerTerminal() {
		return "stopped"
	}
	return a.ClientStatus
}

// DeriveJobStatus computes a job's status from its summary and whether it
// has evaluations still open (pending or blocked).
func DeriveJobStatus(j *Job, s *JobSummary, openEvals bool) string {
	if j.Stop {
		return JobStatusStopped
	}
	total, active := 0, 0
	for _, g := range s.Groups {
		active += g.Pending + g.Running
		total += g.Pending + g.Running + g.Complete + g.Failed + g.Lost + g.Stopped
	}
	switch {
	case active > 0:
		return JobStatusRunning
	case openEvals || total == 0:
		if total == 0 && !openEvals && j.Type != JobTypeBatch {
			return JobStatusRunning // nothing to run: count 0 everywhere
		}
		return JobStatusPending
	}
	for _, tg := range j.TaskGroups {
		if s.Groups[tg.Name].Complete < tg.GroupCount() {
			return JobStatusFailed
		}
	}
	return JobStatusComplete
}
