package api

import (
	"bufio"
	"strings"
	"testing"
)

// TestDecodeAllocChanges reads both answers to ?since: the changes, and
// the whole list of a server that predates the parameter (its index comes
// from the header, 12 here).
func TestDecodeAllocChanges(t *testing.T) {
	tests := []struct {
		name, body               string
		since, index             uint64
		count, allocs, jobs, ids int
		wantErr                  bool
	}{
		{name: "changes", body: ` {"since":7,"index":9,"count":2,"allocs":[{"id":"a","alloc_modify_index":9}],"jobs":[{"id":"j"}],"ids":[{"id":"a","alloc_modify_index":9},{"id":"b","alloc_modify_index":3}]}`,
			since: 7, index: 9, count: 2, allocs: 1, jobs: 1, ids: 2},
		{name: "old server", body: "\n[{\"id\":\"a\",\"job\":{\"id\":\"j\"}},{\"id\":\"b\"}]", index: 12, count: 2, allocs: 2},
		{name: "empty old server", body: "[]", index: 12},
		{name: "empty", body: "", wantErr: true},
		{name: "garbage", body: "{\"allocs\":", wantErr: true},
		{name: "wrong type", body: `"x"`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAllocChanges(bufio.NewReader(strings.NewReader(tt.body)), 12)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error for %q: %+v", tt.body, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Since != tt.since || got.Index != tt.index || got.Count != tt.count || len(got.Allocs) != tt.allocs || len(got.Jobs) != tt.jobs || len(got.IDs) != tt.ids {
				t.Errorf("got since %d index %d count %d allocs %d jobs %d ids %d", got.Since, got.Index, got.Count, len(got.Allocs), len(got.Jobs), len(got.IDs))
			}
		})
	}
}
