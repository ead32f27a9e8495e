package state

import (
	"encoding/binary"
	"fmt"

	"github.com/caravan-sched/caravan"
	"github.com/hashicorp/go-memdb"
)

// Table names. They are also the keys of the index table, which records the
// Raft index of each table's last write.
const (
	TableJobs        = "jobs"
	TableJobVersions = "job_versions"
	TableJobSummary  = "job_summary"
	TableEvals       = "evals"
	TableAllocs      = "allocs"
	TableNodes       = "nodes"
	TableNodeUsage   = "node_usage"
	TableServers     = "servers"
	TableIndex       = "index"
	TableSequence    = "sequence"

	// tableJobAllocs holds the allocation sets of jobs (allocsets.go);
	// those of nodes are in TableNodeUsage.
	tableJobAllocs = "job_allocs"
)

// Index names.
const (
	indexID      = "id"
	indexJob     = "job"
	indexOpenJob = "open_job" // evaluations still pending or blocked, by job
)

// ServerMember is one Raft peer. Any server can look up the leader's HTTP
// address here to forward writes.
type ServerMember struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

// indexRow is one row of the index table.
type indexRow struct {
	Table string `json:"table"`
	Index uint64 `json:"index"`
}

// sequenceRow is one named counter; Value is the last number handed out.
type sequenceRow struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// jobIDSequence names the sequence of job ids.
const jobIDSequence = "job_id"

// firstJobNumber is the first id handed to a job submitted without one.
const firstJobNumber = 1001

// stringIndex indexes a table by one string key taken from the object
// without reflection. Empty keys are missing values. Non-unique indexes
// get room for memdb to append the primary key without growing the slice.
type stringIndex struct {
	key func(obj any) (string, bool)
	// room is the capacity reserved after the key (the primary key's
	// length for non-unique indexes).
	room int
}

func (x *stringIndex) FromObject(obj any) (bool, []byte, error) {
	s, ok := x.key(obj)
	if !ok {
		return false, nil, fmt.Errorf("unexpected object %T", obj)
	}
	if s == "" {
		return false, nil, nil
	}
	b := make([]byte, len(s)+1, len(s)+1+x.room)
	copy(b, s)
	return true, b, nil
}

func (x *stringIndex) FromArgs(args ...any) ([]byte, error) {
	s, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return append([]byte(s), 0), nil
}

func (x *stringIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	s, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return []byte(s), nil
}

func oneString(args []any) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("want one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return "", fmt.Errorf("argument is a %T, not a string", args[0])
	}
	return s, nil
}

// jobVersionIndex indexes job versions by job id and version:
// "<id>\x00" followed by the version as 8 big-endian bytes.
type jobVersionIndex struct{}

func (jobVersionIndex) FromObject(obj any) (bool, []byte, error) {
	j, ok := obj.(*caravan.Job)
	if !ok {
		return false, nil, fmt.Errorf("unexpected object %T", obj)
	}
	if j.ID == "" {
		return false, nil, nil
	}
	return true, jobVersionKey(j.ID, j.Version), nil
}

func (jobVersionIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("want job id and version, got %d arguments", len(args))
	}
	id, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("job id is a %T, not a string", args[0])
	}
	v, ok := args[1].(uint64)
	if !ok {
		return nil, fmt.Errorf("version is a %T, not a uint64", args[1])
	}
	return jobVersionKey(id, v), nil
}

// PrefixFromArgs takes the job id alone: every version of the job.
func (jobVersionIndex) PrefixFromArgs(args ...any) ([]byte, error) {
	id, err := oneString(args)
	if err != nil {
		return nil, err
	}
	return append([]byte(id), 0), nil
}

func jobVersionKey(id string, v uint64) []byte {
	b := make([]byte, len(id)+1+8)
	copy(b, id)
	binary.BigEndian.PutUint64(b[len(id)+1:], v)
	return b
}

func jobKey(obj any) (string, bool) {
	j, ok := obj.(*caravan.Job)
	if !ok {
		return "", false
	}
	return j.ID, true
}

func setKeyOf(obj any) (string, bool) {
	s, ok := obj.(*allocSet)
	if !ok {
		return "", false
	}
	return s.Key, true
}

func evalKey(f func(*caravan.Evaluation) string) func(any) (string, bool) {
	return func(obj any) (string, bool) {
		e, ok := obj.(*caravan.Evaluation)
		if !ok {
			return "", false
		}
		return f(e), true
	}
}

func allocKey(f func(*caravan.Allocation) string) func(any) (string, bool) {
	return func(obj any) (string, bool) {
		a, ok := obj.(*caravan.Allocation)
		if !ok {
			return "", false
		}
		return f(a), true
	}
}

// openEvalJob is an evaluation's job id while it is pending or blocked, so
// "does the job have open evaluations" is one lookup.
func openEvalJob(e *caravan.Evaluation) string {
	if e.Status == caravan.EvalStatusPending || e.Status == caravan.EvalStatusBlocked {
		return e.JobID
	}
	return ""
}

func idIndex(key func(any) (string, bool)) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: indexID, Unique: true, Indexer: &stringIndex{key: key}}
}

func secondaryIndex(name string, room int, key func(any) (string, bool)) *memdb.IndexSchema {
	return &memdb.IndexSchema{Name: name, AllowMissing: true, Indexer: &stringIndex{key: key, room: room}}
}

// pkRoom is the room non-unique indexes reserve for the primary key memdb
// appends: an evaluation's or allocation's id and its NUL.
const pkRoom = 36 + 1

func schema() *memdb.DBSchema {
	tables := []*memdb.TableSchema{
		{Name: TableJobs, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(jobKey)}},
		{Name: TableJobVersions, Indexes: map[string]*memdb.IndexSchema{
			indexID: {Name: indexID, Unique: true, Indexer: jobVersionIndex{}},
		}},
		{Name: TableJobSummary, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(func(obj any) (string, bool) {
			s, ok := obj.(*caravan.JobSummary)
			if !ok {
				return "", false
			}
			return s.JobID, true
		})}},
		{Name: TableEvals, Indexes: map[string]*memdb.IndexSchema{
			indexID:      idIndex(evalKey(func(e *caravan.Evaluation) string { return e.ID })),
			indexJob:     secondaryIndex(indexJob, pkRoom, evalKey(func(e *caravan.Evaluation) string { return e.JobID })),
			indexOpenJob: secondaryIndex(indexOpenJob, pkRoom, evalKey(openEvalJob)),
		}},
		{Name: TableAllocs, Indexes: map[string]*memdb.IndexSchema{
			indexID: idIndex(allocKey(func(a *caravan.Allocation) string { return a.ID })),
		}},
		{Name: tableJobAllocs, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(setKeyOf)}},
		{Name: TableNodes, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(func(obj any) (string, bool) {
			n, ok := obj.(*caravan.Node)
			if !ok {
				return "", false
			}
			return n.ID, true
		})}},
		{Name: TableNodeUsage, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(setKeyOf)}},
		{Name: TableServers, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(func(obj any) (string, bool) {
			m, ok := obj.(*ServerMember)
			if !ok {
				return "", false
			}
			return m.ID, true
		})}},
		{Name: TableIndex, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(func(obj any) (string, bool) {
			r, ok := obj.(*indexRow)
			if !ok {
				return "", false
			}
			return r.Table, true
		})}},
		{Name: TableSequence, Indexes: map[string]*memdb.IndexSchema{indexID: idIndex(func(obj any) (string, bool) {
			r, ok := obj.(*sequenceRow)
			if !ok {
				return "", false
			}
			return r.Name, true
		})}},
	}
	s := &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{}}
	for _, t := range tables {
		s.Tables[t.Name] = t
	}
	return s
}
