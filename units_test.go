package caravan

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in      string
		want    MemoryMB
		wantErr bool
	}{
		{"512", 512, false},
		{"512M", 512, false},
		{"512MB", 512, false},
		{"512mib", 512, false},
		{"8G", 8192, false},
		{"1.5G", 1536, false},
		{"1T", 1 << 20, false},
		{"65536K", 64, false},
		{"1K", 1, false}, // rounds up
		{" 2g ", 2048, false},
		{"", 0, true},
		{"G", 0, true},
		{"-1G", 0, true},
		{"abc", 0, true},
		{"NaN", 0, true},
		{"1e30G", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMemory(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseMemory(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseMemory(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestMemoryJSON(t *testing.T) {
	var r Resources
	if err := json.Unmarshal([]byte(`{"memory":"8G","cpu":500}`), &r); err != nil {
		t.Fatal(err)
	}
	if r.Memory != 8192 || r.CPU != 500 {
		t.Errorf("got %+v", r)
	}
	if err := json.Unmarshal([]byte(`{"memory":256}`), &r); err != nil || r.Memory != 256 {
		t.Errorf("number: %v %d", err, r.Memory)
	}
	for _, bad := range []string{`{"memory":-5}`, `{"memory":1.5}`, `{"memory":"lots"}`, `{"memory":true}`} {
		if err := json.Unmarshal([]byte(bad), &r); err == nil {
			t.Errorf("%s: want error", bad)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{`"30s"`, 30 * time.Second, false},
		{`"1h30m"`, 90 * time.Minute, false},
		{`"90"`, 90 * time.Second, false},
		{`45`, 45 * time.Second, false},
		{`1.5`, 1500 * time.Millisecond, false},
		{`null`, 0, false},
		{`"-3s"`, 0, true},
		{`-3`, 0, true},
		{`"soon"`, 0, true},
		{`true`, 0, true},
		{`1e300`, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(tt.in), &d)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, wantErr %v", err, tt.wantErr)
			}
			if d.D() != tt.want {
				t.Errorf("got %v, want %v", d.D(), tt.want)
			}
		})
	}
	b, _ := json.Marshal(Duration(90 * time.Minute))
	if string(b) != `"1h30m0s"` {
		t.Errorf("marshal = %s", b)
	}
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{"512M", "8G", "1.5GiB", "", "-1", "1e9T", "65536K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMemory(s)
		if err == nil && (m < 0 || m > maxMemoryMB) {
			t.Fatalf("ParseMemory(%q) = %d out of range", s, m)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"30s", "1h30m", "90", "", "-1s", "9999999999h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v negative", s, d)
		}
	})
}

// TestUnitsFromEscapedStrings checks that durations and amounts of memory
// written with JSON escapes read as the plain strings do.
func TestUnitsFromEscapedStrings(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Duration
	}{{`"30s"`, Duration(30 * time.Second)}, {`"\u0033\u0030s"`, Duration(30 * time.Second)}, {`"1h\u0033\u0030m"`, Duration(90 * time.Minute)}} {
		var d Duration
		if err := d.UnmarshalJSON([]byte(tt.in)); err != nil || d != tt.want {
			t.Errorf("duration %s: %v, %v", tt.in, d, err)
		}
	}
	var m MemoryMB
	if err := m.UnmarshalJSON([]byte(`"8\u0047"`)); err != nil || m != 8192 {
		t.Errorf("memory: %v, %v", m, err)
	}
	if err := m.UnmarshalJSON([]byte("\"8\xffG\"")); err == nil {
		t.Errorf("memory with invalid UTF-8 read as %v", m)
	}
}
