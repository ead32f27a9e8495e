package agent

import (
	"bufio"
	"context"
	"maps"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/cgroup"
	"github.com/caravan-sched/caravan/internal/driver"
)

// fallbackMHz is the speed assumed for a CPU that reports none anywhere.
const fallbackMHz = 1000

// hostFacts are what fingerprinting reads from the machine. Tests build
// them by hand.
type hostFacts struct {
	hostname      string
	kernelVersion string
	cpuinfo       string // /proc/cpuinfo
	maxFreqKHz    string // /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq
	meminfo       string // /proc/meminfo
	osRelease     string // /etc/os-release
	cores         []int  // CPUs this process may run on
	cgroupVersion string
}

// readHost gathers the facts of this machine; what cannot be read stays
// empty.
func readHost() hostFacts {
	f := hostFacts{}
	f.hostname, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		f.kernelVersion = unix.ByteSliceToString(u.Release[:])
	}
	f.cpuinfo = readSmall("/proc/cpuinfo")
	f.maxFreqKHz = strings.TrimSpace(readSmall("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"))
	f.meminfo = readSmall("/proc/meminfo")
	f.osRelease = readSmall("/etc/os-release")
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		for i := 0; i < len(set)*64 && len(f.cores) < set.Count(); i++ {
			if set.IsSet(i) {
				f.cores = append(f.cores, i)
			}
		}
	}
	if len(f.cores) == 0 {
		for i := 0; i < runtime.NumCPU(); i++ {
			f.cores = append(f.cores, i)
		}
	}
	if v, err := cgroup.Detect(cgroup.DefaultRoot); err == nil {
		f.cgroupVersion = v.String()
	}
	return f
}

func readSmall(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 4<<20 {
		return ""
	}
	return string(b)
}

// cpuSpeed returns the CPU speed in MHz and the model name: "cpu MHz" of
// /proc/cpuinfo (the highest), else cpufreq's maximum, else the speed in
// the model name ("@ 2.40GHz"), else fallbackMHz. VMs often lack the first
// two.
func cpuSpeed(f hostFacts) (mhz int, model, source string) {
	var best float64
	sc := bufio.NewScanner(strings.NewReader(f.cpuinfo))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "cpu MHz":
			if v, err := strconv.ParseFloat(val, 64); err == nil && v > best {
				best = v
			}
		case "model name":
			if model == "" {
				model = val
			}
		}
	}
	if best > 0 {
		return int(best + 0.5), model, "cpuinfo"
	}
	if khz, err := strconv.Atoi(f.maxFreqKHz); err == nil && khz > 0 {
		return khz / 1000, model, "cpufreq"
	}
	if _, after, ok := strings.Cut(model, "@"); ok {
		s := strings.TrimSpace(strings.ToUpper(after))
		mult := 0.0
		switch {
		case strings.HasSuffix(s, "GHZ"):
			mult, s = 1000, strings.TrimSuffix(s, "GHZ")
		case strings.HasSuffix(s, "MHZ"):
			mult, s = 1, strings.TrimSuffix(s, "MHZ")
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(s), 64); err == nil && v > 0 && mult > 0 {
			return int(v*mult + 0.5), model, "model name"
		}
	}
	return fallbackMHz, model, "default"
}

// memTotalMB reads MemTotal from /proc/meminfo.
func memTotalMB(meminfo string) caravan.MemoryMB {
	sc := bufio.NewScanner(strings.NewReader(meminfo))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0
		}
		return caravan.MemoryMB(kb / 1024)
	}
	return 0
}

// osRelease returns ID and VERSION_ID of /etc/os-release.
func osRelease(s string) (id, version string) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "ID":
			id = v
		case "VERSION_ID":
			version = v
		}
	}
	return id, version
}

// buildNode describes this node from the host's facts, the configuration
// and the drivers' fingerprints.
func buildNode(ctx context.Context, cfg Config, f hostFacts, drivers []driver.Driver) *caravan.Node {
	mhz, model, source := cpuSpeed(f)
	mem := memTotalMB(f.meminfo)
	attrs := map[string]string{
		"os":                 runtime.GOOS,
		"arch":               runtime.GOARCH,
		"cpu.arch":           runtime.GOARCH,
		"kernel.name":        runtime.GOOS,
		"cpu.numcores":       strconv.Itoa(len(f.cores)),
		"cpu.frequency":      strconv.Itoa(mhz),
		"cpu.frequency_from": source,
		"cpu.totalcompute":   strconv.Itoa(mhz * len(f.cores)),
		"memory.totalbytes":  strconv.FormatInt(mem.Bytes(), 10),
		"unique.hostname":    f.hostname,
	}
	if f.kernelVersion != "" {
		attrs["kernel.version"] = f.kernelVersion
	}
	if model != "" {
		attrs["cpu.modelname"] = model
	}
	if id, v := osRelease(f.osRelease); id != "" {
		attrs["os.name"] = id
		if v != "" {
			attrs["os.version"] = v
		}
	}
	if f.cgroupVersion != "" {
		attrs["cgroup.version"] = f.cgroupVersion
	}
	name := cfg.NodeName
	if name == "" {
		name = f.hostname
	}
	n := &caravan.Node{
		Name:       name,
		Datacenter: cfg.Datacenter,
		NodePool:   cfg.NodePool,
		Attributes: attrs,
		Meta:       cfg.Meta,
		Resources: caravan.NodeResources{
			CPU:    mhz * len(f.cores),
			Memory: mem,
			Cores:  f.cores,
		},
		Reserved: caravan.NodeReserved{CPU: cfg.ReservedCPU, Memory: cfg.ReservedMemory},
		Status:   caravan.NodeStatusReady,
	}
	applyDrivers(n, fingerprintDrivers(ctx, drivers))
	return n
}

// fingerprintDrivers asks every driver whether it can run tasks here.
func fingerprintDrivers(ctx context.Context, drivers []driver.Driver) map[string]caravan.DriverInfo {
	infos := make(map[string]caravan.DriverInfo, len(drivers))
	for _, d := range drivers {
		infos[d.Name()] = d.Fingerprint(ctx)
	}
	return infos
}

// applyDrivers sets the node's drivers and the attributes that come from
// them: driver.<name>=1 for a healthy driver, and the driver's own
// attributes under driver.<name>. (docker's "version" must not shadow the
// node's own keys).
func applyDrivers(n *caravan.Node, infos map[string]caravan.DriverInfo) {
	for k := range n.Attributes {
		if strings.HasPrefix(k, "driver.") {
			delete(n.Attributes, k)
		}
	}
	for name, info := range infos {
		if info.Detected && info.Healthy {
			n.Attributes["driver."+name] = "1"
		}
		for k, v := range info.Attributes {
			if !strings.HasPrefix(k, "driver.") {
				k = "driver." + name + "." + k
			}
			n.Attributes[k] = v
		}
	}
	n.Drivers = infos
}

// driversChanged reports whether the drivers' detection or health differ.
func driversChanged(old, cur map[string]caravan.DriverInfo) bool {
	if len(old) != len(cur) {
		return true
	}
	for name, o := range old {
		c, ok := cur[name]
		if !ok || o.Detected != c.Detected || o.Healthy != c.Healthy || !maps.Equal(o.Attributes, c.Attributes) {
			return true
		}
	}
	return false
}
