package caravan

import "testing"

func TestVersionConstraint(t *testing.T) {
	tests := []struct {
		constraint, version string
		want                bool
	}{
		{">= 1.2, < 2.0", "1.2.0", true},
		{">= 1.2, < 2.0", "1.10", true},
		{">= 1.2, < 2.0", "2.0", false},
		{"= 5.10", "5.10.0", true},
		{"!= 5.10", "5.10.1", true},
		{"> 6.1", "6.1.0-rc1", false},
		{"< 6.1", "6.1.0-rc1", true},
		{"~> 1.2", "1.9", true},
		{"~> 1.2", "2.0", false},
		{"~> 1.2.3", "1.2.9", true},
		{"~> 1.2.3", "1.3.0", false},
		{"6.18.44", "v6.18.44", true},
	}
	for _, tt := range tests {
		t.Run(tt.constraint+" "+tt.version, func(t *testing.T) {
			vc, err := ParseVersionConstraint(tt.constraint)
			if err != nil {
				t.Fatal(err)
			}
			v, err := ParseVersion(tt.version)
			if err != nil {
				t.Fatal(err)
			}
			if got := vc.Check(v); got != tt.want {
				t.Errorf("Check = %v, want %v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"", ">=", "1..2", ">= x", "1.2,"} {
		if _, err := ParseVersionConstraint(bad); err == nil {
			t.Errorf("ParseVersionConstraint(%q): want error", bad)
		}
	}
}

func FuzzVersionConstraint(f *testing.F) {
	f.Add(">= 1.2, < 2.0", "1.5")
	f.Add("~> 1", "1.0")
	f.Fuzz(func(t *testing.T, c, v string) {
		vc, err := ParseVersionConstraint(c)
		if err != nil {
			return
		}
		ver, err := ParseVersion(v)
		if err != nil {
			return
		}
		vc.Check(ver)
	})
}
