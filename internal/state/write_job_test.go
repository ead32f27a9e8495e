package state

import (
	"errors"
	"strings"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
)

func TestRegisterJobAssignsIDsFromTheSequence(t *testing.T) {
	s := newStore(t)
	// A user takes "1002" by hand; the sequence skips it.
	mustOK(t, errOf(s.RegisterJob(10, at(0), testJob("1002", caravan.JobTypeBatch, 1), nil, false)))
	var got []string
	for i := 0; i < 3; i++ {
		out, err := s.RegisterJob(uint64(11+i), at(i), testJob("", caravan.JobTypeBatch, 1), nil, false)
		mustOK(t, err)
		got = append(got, out.JobID)
	}
	if diff := cmp.Diff([]string{"1001", "1003", "1004"}, got); diff != "" {
		t.Errorf("assigned ids (-want +got):\n%s", diff)
	}
	if got := must[[]*caravan.Job](t)(s.Snapshot().JobVersions("1003")); len(got) != 1 {
		t.Errorf("job 1003 has %d versions, want 1", len(got))
	}
	checkDerived(t, s)
}

func errOf[T any](_ T, err error) error { return err }

func TestRegisterJobVersions(t *testing.T) {
	changed := testJob("web", caravan.JobTypeService, 3)
	changed.Priority = 70
	tests := []struct {
		name  string
		prep  func(s *Store)
		job   *caravan.Job
		force bool
		// want is the registered job's version, JobModifyIndex and
		// SubmitTime second.
		wantVersion        uint64
		wantJobModifyIndex uint64
		wantSubmit         int
	}{
		{"unchanged spec keeps the version", nil, testJob("web", caravan.JobTypeService, 3), false, 0, 10, 0},
		{"changed spec makes a new version", nil, changed, false, 1, 20, 5},
		{"restart makes a new version", nil, testJob("web", caravan.JobTypeService, 3), true, 1, 20, 5},
		{"stopped job makes a new version", func(s *Store) {
			mustOK(t, s.StopJob(15, at(3), "web", false, nil))
		}, testJob("web", caravan.JobTypeService, 3), false, 1, 20, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			out := must[RegisteredJob](t)(s.RegisterJob(10, at(0), testJob("web", caravan.JobTypeService, 3), nil, false))
			if out != (RegisteredJob{JobID: "web", Version: 0}) {
				t.Fatalf("first register = %+v", out)
			}
			if tt.prep != nil {
				tt.prep(s)
			}
			out = must[RegisteredJob](t)(s.RegisterJob(20, at(5), tt.job, nil, tt.force))
			if out.Version != tt.wantVersion {
				t.Errorf("version = %d, want %d", out.Version, tt.wantVersion)
			}
			snap := s.Snapshot()
			j := must[*caravan.Job](t)(snap.JobByID("web"))
			got := struct {
				Version, CreateIndex, ModifyIndex, JobModifyIndex uint64
				Stop                                              bool
				Submit                                            int
			}{j.Version, j.CreateIndex, j.ModifyIndex, j.JobModifyIndex, j.Stop, int(j.SubmitTime.Sub(t0).Seconds())}
			want := got
			want.Version, want.CreateIndex, want.ModifyIndex = tt.wantVersion, 10, 20
			want.JobModifyIndex, want.Stop, want.Submit = tt.wantJobModifyIndex, false, tt.wantSubmit
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("job fields (-want +got):\n%s", diff)
			}
			versions := must[[]*caravan.Job](t)(snap.JobVersions("web"))
			if len(versions) != int(tt.wantVersion)+1 || versions[0].Version != tt.wantVersion {
				t.Errorf("versions = %d, newest %d; want %d, newest %d", len(versions), versions[0].Version, tt.wantVersion+1, tt.wantVersion)
			}
			if !versions[0].SpecEqual(j) {
				t.Errorf("newest version's spec differs from the job's")
			}
			checkDerived(t, s)
		})
	}
}

func TestRegisterJobWritesItsEvaluation(t *testing.T) {
	s := newStore(t)
	e := testEval(1, "", caravan.EvalStatusPending)
	out := must[RegisteredJob](t)(s.RegisterJob(7, at(1), testJob("", caravan.JobTypeBatch, 2), e, false))
	snap := s.Snapshot()
	got := must[*caravan.Evaluation](t)(snap.EvalByID(e.ID))
	if got.JobID != out.JobID || got.JobModifyIndex != 7 || got.CreateIndex != 7 || !got.CreateTime.Equal(at(1)) || !got.SubmitTime.Equal(at(1)) {
		t.Errorf("evaluation = %+v", got)
	}
	j := must[*caravan.Job](t)(snap.JobByID(out.JobID))
	if j.Status != caravan.JobStatusPending {
		t.Errorf("status = %q, want pending", j.Status)
	}
	sum := must[*caravan.JobSummary](t)(snap.JobSummary(out.JobID))
	if diff := cmp.Diff(map[string]caravan.GroupSummary{"web": {}}, sum.Groups); diff != "" {
		t.Errorf("summary groups (-want +got):\n%s", diff)
	}
	if e.JobID != "" {
		t.Errorf("the caller's evaluation was modified")
	}
	if got := snap.TableIndex(TableJobs, TableEvals, TableJobVersions, TableJobSummary, TableSequence); got != 7 {
		t.Errorf("table index = %d, want 7", got)
	}
	checkDerived(t, s)
}

func TestRegisterJobBadInput(t *testing.T) {
	s := newStore(t)
	_, err := s.RegisterJob(1, at(0), nil, nil, false)
	if !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("nil job: error = %v, want ErrInvalid", err)
	}
	nullGroup := testJob("x", caravan.JobTypeBatch, 1)
	nullGroup.TaskGroups = append(nullGroup.TaskGroups, nil)
	if _, err := s.RegisterJob(1, at(0), nullGroup, nil, false); !errors.Is(err, caravan.ErrInvalid) || !strings.Contains(err.Error(), "task_groups[1]") {
		t.Errorf("null task group: error = %v", err)
	}
	nullTask := testJob("x", caravan.JobTypeBatch, 1)
	nullTask.TaskGroups[0].Tasks = []*caravan.Task{nil}
	if _, err := s.RegisterJob(1, at(0), nullTask, nil, false); !errors.Is(err, caravan.ErrInvalid) || !strings.Contains(err.Error(), "task_groups[0].tasks[0]") {
		t.Errorf("null task: error = %v", err)
	}
	_, err = s.RegisterJob(2, at(0), testJob("x", caravan.JobTypeBatch, 1), &caravan.Evaluation{}, false)
	if !errors.Is(err, caravan.ErrInvalid) {
		t.Errorf("eval without id: error = %v, want ErrInvalid", err)
	}
	if _, err := s.Snapshot().JobByID("x"); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("a failed write left the job behind: %v", err)
	}
	if got := s.LatestIndex(); got != 0 {
		t.Errorf("latest index after failed writes = %d, want 0", got)
	}
}

func TestStopJob(t *testing.T) {
	tests := []struct {
		name  string
		purge bool
	}{{"stop", false}, {"purge", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
			mustOK(t, errOf(s.RegisterJob(2, at(0), testJob("web", caravan.JobTypeService, 1), nil, false)))
			mustOK(t, s.ApplyPlans(3, at(1), []PlanUpdate{{EvalID: evalID(1), JobID: "web", Allocs: []*caravan.Allocation{testAlloc(1, "web", 0, 1)}}}))
			e := testEval(2, "web", caravan.EvalStatusPending)
			e.TriggeredBy = caravan.TriggerJobDeregister
			mustOK(t, s.StopJob(4, at(2), "web", tt.purge, e))
			snap := s.Snapshot()
			j, err := snap.JobByID("web")
			if tt.purge {
				if !errors.Is(err, caravan.ErrNotFound) {
					t.Errorf("purged job lookup error = %v", err)
				}
				if _, err := snap.JobVersions("web"); !errors.Is(err, caravan.ErrNotFound) {
					t.Errorf("purged job versions error = %v", err)
				}
				if _, err := snap.JobSummary("web"); !errors.Is(err, caravan.ErrNotFound) {
					t.Errorf("purged job summary error = %v", err)
				}
			} else {
				mustOK(t, err)
				if !j.Stop || j.Status != caravan.JobStatusStopped || j.ModifyIndex != 4 || j.Version != 0 {
					t.Errorf("stopped job = stop %v status %q modify %d version %d", j.Stop, j.Status, j.ModifyIndex, j.Version)
				}
			}
			if allocs := must[[]*caravan.Allocation](t)(snap.AllocsByJob("web")); len(allocs) != 1 {
				t.Errorf("allocations after stop = %d, want 1 (they stay until GC)", len(allocs))
			}
			if got := must[*caravan.Evaluation](t)(snap.EvalByID(e.ID)); got.JobModifyIndex != 2 {
				t.Errorf("eval job modify index = %d, want 2", got.JobModifyIndex)
			}
			checkDerived(t, s)
		})
	}
}

func TestStopUnknownJob(t *testing.T) {
	s := newStore(t)
	if err := s.StopJob(1, at(0), "nope", false, nil); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("error = %v, want ErrNotFound", err)
	}
}

func TestReRegisterAfterPurgeCountsRemainingAllocs(t *testing.T) {
	s := newStore(t)
	mustOK(t, s.RegisterNode(1, at(0), testNode(1), nil))
	mustOK(t, errOf(s.RegisterJob(2, at(0), testJob("web", caravan.JobTypeService, 1), nil, false)))
	mustOK(t, s.ApplyPlans(3, at(1), []PlanUpdate{{Allocs: []*caravan.Allocation{testAlloc(1, "web", 0, 1)}}}))
	mustOK(t, s.StopJob(4, at(2), "web", true, nil))
	// A client update of the purged job's allocation writes no summary.
	mustOK(t, s.UpdateAllocsFromClient(5, at(3), nodeID(1), []*caravan.AllocClientUpdate{{ID: allocID(1), ClientStatus: caravan.AllocClientRunning}}, nil))
	if _, err := s.Snapshot().JobSummary("web"); !errors.Is(err, caravan.ErrNotFound) {
		t.Errorf("summary of a purged job: %v", err)
	}
	out := must[RegisteredJob](t)(s.RegisterJob(6, at(4), testJob("web", caravan.JobTypeService, 1), nil, false))
	if out.Version != 1 {
		t.Errorf("version of the job registered again = %d, want 1 (after the purged job's allocations)", out.Version)
	}
	sum := must[*caravan.JobSummary](t)(s.Snapshot().JobSummary("web"))
	if got := sum.Groups["web"].Running; got != 1 {
		t.Errorf("running in new summary = %d, want 1", got)
	}
	checkDerived(t, s)
}
