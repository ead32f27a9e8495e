package caravan

import "testing"

func TestSuggest(t *testing.T) {
	names := []string{"task_groups", "count", "datacenters"}
	tests := []struct{ key, want string }{
		{"task_group", ` (did you mean "task_groups"?)`},
		{"COUNT", ` (did you mean "count"?)`},
		{"cuont", ` (did you mean "count"?)`},
		{"datacentre", ` (did you mean "datacenters"?)`},
		{"image", ""},
		{"co", ""}, // too short for a hint
		{"", ""},
	}
	for _, tt := range tests {
		if got := Suggest(names, tt.key); got != tt.want {
			t.Errorf("Suggest(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}
