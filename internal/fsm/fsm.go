// Package fsm is caravan's Raft finite state machine: it applies committed
// Raft entries to the state store, and saves and restores the store for
// Raft snapshots.
//
// An entry is one MessageType byte followed by the command's JSON payload
// (Encode). Apply dispatches on the type in one flat switch and calls one
// write method of the store. Apply is deterministic: the leader fills in
// every id and time before it proposes the entry, so every server writes
// the same state.
package fsm

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/state"
	jsonv2 "github.com/go-json-experiment/json"
	"github.com/hashicorp/raft"
)

var _ raft.FSM = (*FSM)(nil)

// FSM applies Raft entries to a state store.
type FSM struct {
	store  *state.Store
	logger *slog.Logger
}

// New returns an FSM writing to store.
func New(store *state.Store, logger *slog.Logger) *FSM {
	return &FSM{store: store, logger: logger.With("component", "fsm")}
}

// Apply applies one committed entry. It returns a *Response, or an error
// value when the entry is malformed or the command fails (then nothing
// was written). It never panics on bad input.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	resp, err := f.apply(l.Index, l.Data)
	if err != nil {
		return err
	}
	return resp
}

func (f *FSM) apply(index uint64, data []byte) (*Response, error) {
	if len(data) == 0 {
		err := fmt.Errorf("raft entry %d is empty: %w", index, caravan.ErrInvalid)
		f.logger.Error("cannot apply raft entry", "index", index, "error", err)
		return nil, err
	}
	t, payload := MessageType(data[0]), data[1:]
	resp, err := f.dispatch(index, t, payload)
	if err != nil {
		return nil, fmt.Errorf("apply %s at index %d: %w", t, index, err)
	}
	resp.Index = index
	return resp, nil
}

// dispatch decodes the payload of t and runs its command.
func (f *FSM) dispatch(index uint64, t MessageType, payload []byte) (*Response, error) {
	s := f.store
	switch t {
	case JobRegister:
		return run(f, t, payload, func(r *JobRegisterRequest) (*Response, error) {
			out, err := s.RegisterJob(index, r.Time, r.Job, r.Eval, r.ForceNewVersion)
			return &Response{JobID: out.JobID, JobVersion: out.Version}, err
		})
	case JobRegisterBatch:
		return run(f, t, payload, func(r *JobRegisterBatchRequest) (*Response, error) {
			regs := make([]state.JobRegistration, len(r.Jobs))
			for i, j := range r.Jobs {
				regs[i] = state.JobRegistration{Time: j.Time, Job: j.Job, Eval: j.Eval, ForceNewVersion: j.ForceNewVersion}
			}
			out, err := s.RegisterJobs(index, regs)
			return &Response{Jobs: out}, err
		})
	case JobStop:
		return run(f, t, payload, func(r *JobStopRequest) (*Response, error) {
			return &Response{JobID: r.JobID}, s.StopJob(index, r.Time, r.JobID, r.Purge, r.Eval)
		})
	case EvalUpsert:
		return run(f, t, payload, func(r *EvalUpsertRequest) (*Response, error) {
			return &Response{}, s.UpsertEvals(index, r.Time, r.Evals)
		})
	case NodeRegister:
		return run(f, t, payload, func(r *NodeRegisterRequest) (*Response, error) {
			return &Response{}, s.RegisterNode(index, r.Time, r.Node, r.Evals)
		})
	case NodeStatus:
		return run(f, t, payload, func(r *NodeStatusRequest) (*Response, error) {
			return &Response{}, s.UpdateNodeStatus(index, r.Time, r.NodeID, r.Status, r.Description, r.Evals)
		})
	case NodeDrain:
		return run(f, t, payload, func(r *NodeDrainRequest) (*Response, error) {
			return &Response{}, s.UpdateNodeDrain(index, r.Time, r.NodeID, r.Drain, r.Eligibility, r.Evals)
		})
	case NodeEligibility:
		return run(f, t, payload, func(r *NodeEligibilityRequest) (*Response, error) {
			return &Response{}, s.UpdateNodeEligibility(index, r.Time, r.NodeID, r.Eligibility, r.Evals)
		})
	case NodeDeregister:
		return run(f, t, payload, func(r *NodeDeregisterRequest) (*Response, error) {
			return &Response{}, s.DeregisterNodes(index, r.NodeIDs)
		})
	case AllocClientUpdate:
		return run(f, t, payload, func(r *AllocClientUpdateRequest) (*Response, error) {
			return &Response{}, s.UpdateAllocsFromClient(index, r.Time, r.NodeID, r.Updates, r.Evals)
		})
	case PlanApply:
		return run(f, t, payload, func(r *PlanApplyRequest) (*Response, error) {
			return &Response{}, s.ApplyPlans(index, r.Time, r.Plans)
		})
	case PlanApplyCompact:
		return run(f, t, payload, func(r *compactRequest) (*Response, error) {
			req, err := r.expand()
			if err != nil {
				return nil, err
			}
			return &Response{}, s.ApplyPlans(index, req.Time, req.Plans)
		})
	case Reap:
		return run(f, t, payload, func(r *ReapRequest) (*Response, error) {
			return &Response{}, s.Reap(index, r.Reap)
		})
	case ServerMember:
		return run(f, t, payload, func(r *ServerMemberRequest) (*Response, error) {
			if r.Remove {
				return &Response{}, s.RemoveServer(index, r.Member.ID)
			}
			return &Response{}, s.UpsertServer(index, r.Member)
		})
	}
	err := fmt.Errorf("unknown message type %d: %w", uint8(t), caravan.ErrInvalid)
	f.logger.Error("cannot apply raft entry", "index", index, "error", err)
	return nil, err
}

// run decodes a payload into a new T and calls cmd with it. An
// undecodable payload is logged and returned as an error. Payloads are
// decoded with go-json-experiment/json, about twice as fast as
// encoding/json on what Encode writes.
func run[T any](f *FSM, t MessageType, payload []byte, cmd func(*T) (*Response, error)) (*Response, error) {
	req := new(T)
	if err := jsonv2.Unmarshal(payload, req); err != nil {
		err = fmt.Errorf("decode payload: %v: %w", err, caravan.ErrInvalid)
		f.logger.Error("cannot decode raft entry", "type", t.String(), "error", err)
		return nil, err
	}
	resp, err := cmd(req)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Snapshot grabs the store's immutable snapshot; Persist does the writing.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{snap: f.store.Snapshot(), logger: f.logger}, nil
}

// Restore replaces the store's state with a persisted snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(rc); err != nil {
		return fmt.Errorf("restore fsm: %w", err)
	}
	return nil
}

// snapshot writes one state snapshot to a Raft snapshot sink.
type snapshot struct {
	snap   *state.Snapshot
	logger *slog.Logger
}

// Persist streams the state to sink, cancelling the sink on failure.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.snap.Persist(sink); err != nil {
		if cerr := sink.Cancel(); cerr != nil {
			s.logger.Warn("cannot cancel raft snapshot sink", "error", cerr)
		}
		return fmt.Errorf("persist fsm snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("close fsm snapshot: %w", err)
	}
	return nil
}

// Release does nothing: the memdb snapshot needs no release.
func (s *snapshot) Release() {}
