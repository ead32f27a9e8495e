package docker

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/go-connections/nat"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// Labels that caravan puts on every container it starts. They win over
// labels of the same name in config.labels.
const (
	LabelAllocID = "caravan.alloc_id"
	LabelTask    = "caravan.task"
	LabelJobID   = "caravan.job_id"
)

// Where the allocation's shared folder and the task's local folder appear
// inside the container.
const (
	ContainerAllocDir = "/alloc"
	ContainerLocalDir = "/local"
)

// minCPUShares is the Engine's floor for cpu shares.
const minCPUShares = 2

// The least output the Engine keeps per container, whatever the task's own
// rotation: enough to resume copying after an agent restart.
const (
	minEngineLogSize  = 1 << 20
	minEngineLogFiles = 2
)

// spec is what ContainerCreate needs for one task.
type spec struct {
	name   string
	config *container.Config
	host   *container.HostConfig
	// dirs are host folders to create before the container mounts them.
	dirs []string
}

// containerName is "caravan-<task>-<alloc id>", with characters the Engine
// refuses in names replaced by '-'.
func containerName(task, allocID string) string {
	var b strings.Builder
	b.WriteString("caravan-")
	for _, r := range task + "-" + allocID {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	return b.String()
}

// command returns the container's entrypoint and cmd. A whole command line
// in config.command (white space and no args) runs under /bin/sh -c, unless
// an entrypoint is set, which then receives command and args verbatim.
// Without a command, args alone replace the image's CMD.
func command(tc *caravan.TaskConfig) (entrypoint, cmd []string) {
	entrypoint = slices.Clone(tc.Entrypoint)
	switch {
	case tc.Command == "":
		cmd = slices.Clone(tc.Args)
	case len(tc.Args) == 0 && len(tc.Entrypoint) == 0 && strings.ContainsAny(tc.Command, " \t\n"):
		cmd = []string{"/bin/sh", "-c", tc.Command}
	default:
		cmd = append([]string{tc.Command}, tc.Args...)
	}
	return entrypoint, cmd
}

// buildSpec turns a task configuration into a container specification.
// Errors match caravan.ErrInvalid and name the field at fault.
func buildSpec(cfg *driver.TaskConfig, logCfg logConfig, bindIP string) (*spec, error) {
	if cfg == nil || cfg.Task == nil {
		return nil, fmt.Errorf("task configuration without a task: %w", caravan.ErrInvalid)
	}
	t := cfg.Task
	if t.Config.Image == "" {
		return nil, caravan.Invalidf("config.image", "the docker driver needs an image")
	}
	if cfg.AllocID == "" || t.Name == "" {
		return nil, fmt.Errorf("task configuration without an allocation id or task name: %w", caravan.ErrInvalid)
	}
	if t.WorkDir != "" && !path.IsAbs(t.WorkDir) {
		return nil, caravan.Invalidf("work_dir", "%q must be an absolute path inside the container", t.WorkDir)
	}
	env, err := envList(cfg.Env)
	if err != nil {
		return nil, err
	}
	exposed, bindings, err := portMap(cfg.Ports, bindIP)
	if err != nil {
		return nil, err
	}
	res, err := resources(cfg)
	if err != nil {
		return nil, err
	}

	labels := make(map[string]string, len(t.Config.Labels)+3)
	for k, v := range t.Config.Labels {
		labels[k] = v
	}
	labels[LabelAllocID] = cfg.AllocID
	labels[LabelTask] = t.Name
	labels[LabelJobID] = cfg.JobID

	entrypoint, cmd := command(&t.Config)
	s := &spec{
		name: containerName(t.Name, cfg.AllocID),
		config: &container.Config{
			Image:        t.Config.Image,
			Entrypoint:   entrypoint,
			Cmd:          cmd,
			Env:          env,
			WorkingDir:   t.WorkDir,
			User:         cfg.User,
			Labels:       labels,
			ExposedPorts: exposed,
		},
		host: &container.HostConfig{
			PortBindings: bindings,
			Resources:    res,
			LogConfig: container.LogConfig{
				// The Engine keeps no more output than our own files do, and
				// json-file can be read back from any point in time.
				Type: "json-file",
				Config: map[string]string{
					"max-size": strconv.FormatInt(max(logCfg.MaxFileSize, minEngineLogSize), 10),
					"max-file": strconv.Itoa(max(logCfg.MaxFiles, minEngineLogFiles)),
				},
			},
		},
	}
	if cfg.AllocDir != "" {
		dir := filepath.Join(cfg.AllocDir, "alloc")
		s.dirs = append(s.dirs, dir)
		s.host.Mounts = append(s.host.Mounts, mount.Mount{Type: mount.TypeBind, Source: dir, Target: ContainerAllocDir})
	}
	if cfg.TaskDir != "" {
		dir := filepath.Join(cfg.TaskDir, "local")
		s.dirs = append(s.dirs, dir)
		s.host.Mounts = append(s.host.Mounts, mount.Mount{Type: mount.TypeBind, Source: dir, Target: ContainerLocalDir})
	}
	return s, nil
}

// envList renders the environment as sorted KEY=value pairs.
func envList(env map[string]string) ([]string, error) {
	out := make([]string, 0, len(env))
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, caravan.Invalidf("env", "%q is not a valid environment variable name", k)
		}
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, nil
}

// portMap publishes each allocated host port on its container port (To,
// default the host port), for tcp and udp.
func portMap(ports []caravan.AllocatedPort, bindIP string) (nat.PortSet, nat.PortMap, error) {
	if len(ports) == 0 {
		return nil, nil, nil
	}
	exposed := nat.PortSet{}
	bindings := nat.PortMap{}
	for i, p := range ports {
		to := p.To
		if to == 0 {
			to = p.Value
		}
		if p.Value < 1 || p.Value > 65535 || to < 1 || to > 65535 {
			return nil, nil, caravan.Invalidf(fmt.Sprintf("ports[%d]", i), "port %q: %d → %d is not a pair of port numbers", p.Label, p.Value, p.To)
		}
		for _, proto := range []string{"tcp", "udp"} {
			cp := nat.Port(strconv.Itoa(to) + "/" + proto)
			exposed[cp] = struct{}{}
			bindings[cp] = append(bindings[cp], nat.PortBinding{HostIP: bindIP, HostPort: strconv.Itoa(p.Value)})
		}
	}
	return exposed, bindings, nil
}

// resources maps memory to a hard limit without swap, MHz to cpu shares and
// cores to a cpuset.
func resources(cfg *driver.TaskConfig) (container.Resources, error) {
	var r container.Resources
	switch {
	case cfg.Memory < 0:
		return r, caravan.Invalidf("resources.memory", "%d MB is negative", cfg.Memory)
	case cfg.Memory > 0:
		r.Memory = int64(cfg.Memory) << 20
		r.MemorySwap = r.Memory // the same value as Memory: no swap
	}
	switch {
	case cfg.CPU < 0:
		return r, caravan.Invalidf("resources.cpu", "%d MHz is negative", cfg.CPU)
	case cfg.CPU > 0:
		r.CPUShares = int64(max(cfg.CPU, minCPUShares))
	}
	if len(cfg.Cores) > 0 {
		ids := make([]string, len(cfg.Cores))
		for i, c := range cfg.Cores {
			if c < 0 {
				return r, caravan.Invalidf("resources.cores", "core %d is negative", c)
			}
			ids[i] = strconv.Itoa(c)
		}
		r.CpusetCpus = strings.Join(ids, ",")
	}
	return r, nil
}
