package state

import (
	"context"
	"testing"
	"time"

	"github.com/caravan-sched/caravan"
	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-memdb"
)

func TestSetChangeMembers(t *testing.T) {
	type op struct {
		add bool
		id  string
	}
	tests := []struct {
		name string
		ids  []string
		ops  []op
		want []string
	}{
		{"adds merge in order", []string{"b", "d"}, []op{{true, "e"}, {true, "a"}, {true, "c"}}, []string{"a", "b", "c", "d", "e"}},
		{"removes", []string{"a", "b", "c"}, []op{{false, "b"}, {false, "a"}}, []string{"c"}},
		{"added then removed", []string{"a"}, []op{{true, "b"}, {false, "b"}}, []string{"a"}},
		{"removed then added", []string{"a", "b"}, []op{{false, "b"}, {true, "b"}}, []string{"a", "b"}},
		{"all removed", []string{"a"}, []op{{false, "a"}}, []string{}},
		{"no change shares the slice", []string{"a", "b"}, nil, []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &setChange{ids: tt.ids}
			for _, o := range tt.ops {
				if o.add {
					c.add(o.id)
				} else {
					c.remove(o.id)
				}
			}
			got := c.members()
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("members (-want +got):\n%s", diff)
			}
			if len(tt.ops) == 0 && len(got) > 0 && &got[0] != &tt.ids[0] {
				t.Errorf("members copied an unchanged set")
			}
		})
	}
}

func TestAllocsByNodeWakesOnAnUpdate(t *testing.T) {
	s := allocFixture(t, caravan.JobTypeService)
	start := s.Snapshot().TableIndex(TableAllocs)
	query := func(ws memdb.WatchSet, snap *Snapshot) (uint64, error) {
		allocs, err := snap.AllocsByNode(nodeID(1))
		var idx uint64
		for _, a := range allocs {
			idx = max(idx, a.AllocModifyIndex)
		}
		return idx, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan uint64, 1)
	go func() {
		idx, _ := s.BlockingQuery(ctx, start, query)
		done <- idx
	}()
	time.Sleep(10 * time.Millisecond)
	stop := must[*caravan.Allocation](t)(s.Snapshot().AllocByID(allocID(2))).ShallowCopy()
	stop.DesiredStatus = caravan.AllocDesiredStop
	mustOK(t, s.ApplyPlans(9, at(5), []PlanUpdate{{Stops: []*caravan.Allocation{stop}}}))
	select {
	case idx := <-done:
		if idx != 9 {
			t.Errorf("index = %d, want 9", idx)
		}
	case <-ctx.Done():
		t.Fatal("an agent's query did not wake when its allocation was stopped")
	}
}
