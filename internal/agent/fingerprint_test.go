package agent

import (
	"context"
	"testing"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
	"github.com/caravan-sched/caravan/internal/taskrunner/fakedriver"
)

func TestCPUSpeed(t *testing.T) {
	tests := []struct {
		name   string
		facts  hostFacts
		mhz    int
		source string
	}{
		{
			name: "cpuinfo MHz, highest core wins",
			facts: hostFacts{cpuinfo: "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\ncpu MHz\t\t: 2199.998\n\n" +
				"processor\t: 1\ncpu MHz\t\t: 2400.4\n"},
			mhz: 2400, source: "cpuinfo",
		},
		{
			name:  "cpufreq when cpuinfo has no MHz (arm, some VMs)",
			facts: hostFacts{cpuinfo: "processor\t: 0\nBogoMIPS\t: 50.00\n", maxFreqKHz: "3000000"},
			mhz:   3000, source: "cpufreq",
		},
		{
			name:  "model name speed",
			facts: hostFacts{cpuinfo: "model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz\n"},
			mhz:   2500, source: "model name",
		},
		{
			name:  "nothing known",
			facts: hostFacts{cpuinfo: "processor\t: 0\n"},
			mhz:   fallbackMHz, source: "default",
		},
		{
			name:  "garbage",
			facts: hostFacts{cpuinfo: "cpu MHz : lots\nmodel name : x @ fastGHz\n", maxFreqKHz: "-5"},
			mhz:   fallbackMHz, source: "default",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mhz, _, source := cpuSpeed(tc.facts)
			if mhz != tc.mhz || source != tc.source {
				t.Errorf("cpuSpeed = %d from %s, want %d from %s", mhz, source, tc.mhz, tc.source)
			}
		})
	}
}

func TestMemTotal(t *testing.T) {
	tests := map[string]caravan.MemoryMB{
		"MemTotal:       16318480 kB\nMemFree: 1 kB\n": 15936,
		"MemFree: 1 kB\n":      0,
		"MemTotal: lots kB\n":  0,
		"MemTotal:\n":          0,
		"MemTotal: -2048 kB\n": 0,
	}
	for in, want := range tests {
		if got := memTotalMB(in); got != want {
			t.Errorf("memTotalMB(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestBuildNode(t *testing.T) {
	w := fakedriver.NewWorld()
	cfg := Config{NodeName: "n1", Datacenter: "dc2", NodePool: "gpu", Meta: map[string]string{"rack": "a"}, ReservedCPU: 500, ReservedMemory: 1024}
	facts := hostFacts{
		hostname: "host", kernelVersion: "6.1.0", cpuinfo: "cpu MHz : 2000\n",
		meminfo: "MemTotal: 8388608 kB\n", osRelease: "ID=debian\nVERSION_ID=\"12\"\n",
		cores: []int{0, 1, 2, 3}, cgroupVersion: "v1",
	}
	n := buildNode(context.Background(), cfg, facts, []driver.Driver{fakedriver.New("exec", w)})
	n.ID, n.SecretID = caravan.NewID(), caravan.NewID()
	n.Canonicalize()
	if err := n.Validate(); err != nil {
		t.Fatalf("node does not validate: %v", err)
	}
	checks := map[string][2]any{
		"cpu":          {n.Resources.CPU, 8000},
		"memory":       {n.Resources.Memory, caravan.MemoryMB(8192)},
		"cores":        {len(n.Resources.Cores), 4},
		"reserved cpu": {n.Reserved.CPU, 500},
		"os.name":      {n.Attributes["os.name"], "debian"},
		"os.version":   {n.Attributes["os.version"], "12"},
		"kernel":       {n.Attributes["kernel.version"], "6.1.0"},
		"cgroup":       {n.Attributes["cgroup.version"], "v1"},
		"driver":       {n.Attributes["driver.exec"], "1"},
		"pool":         {n.NodePool, "gpu"},
		"name":         {n.Name, "n1"},
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", what, c[0], c[1])
		}
	}
}
