package taskrunner

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caravan-sched/caravan"
)

// NodeInfo is what a task learns about the node it runs on.
type NodeInfo struct {
	ID         string
	Name       string
	Datacenter string
	// Address is the IP at which other machines reach the node's ports;
	// it makes CARAVAN_ADDR_<LABEL>.
	Address string
	// MHzPerCore turns exclusive cores into CARAVAN_CPU_LIMIT.
	MHzPerCore int
}

// Paths inside a docker container, where the docker driver mounts the
// allocation's shared folder and the task's local folder.
const (
	containerAllocDir = "/alloc"
	containerTaskDir  = "/local"
)

// defaultPath is the PATH of exec tasks whose job sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Env returns the complete environment of a task: the job's env, with
// caravan's own variables on top (a job cannot fake its allocation id).
//
// Ports: CARAVAN_PORT_<LABEL> is the port the task binds (inside a
// container, the container port), CARAVAN_HOST_PORT_<LABEL> the node's
// port and CARAVAN_ADDR_<LABEL> the node's address and port. Every port of
// the allocation is listed, so the group's tasks find each other. Labels
// and meta keys are upper-cased, with characters other than letters,
// digits and '_' turned into '_'.
func Env(alloc *caravan.Allocation, task *caravan.Task, node NodeInfo, allocDir, taskDir string) map[string]string {
	env := make(map[string]string, len(task.Env)+24)
	docker := task.Driver == caravan.DriverDocker
	for k, v := range task.Env {
		env[k] = v
	}
	if !docker {
		if _, ok := env["PATH"]; !ok {
			env["PATH"] = defaultPath
		}
	}
	job := alloc.Job
	jobName := alloc.JobID
	if job != nil && job.Name != "" {
		jobName = job.Name
	}
	sharedDir, privateDir := filepath.Join(allocDir, "alloc"), taskDir
	if docker {
		sharedDir, privateDir = containerAllocDir, containerTaskDir
	} else {
		env["TMPDIR"] = filepath.Join(taskDir, "tmp")
	}
	set := map[string]string{
		"CARAVAN_JOB_ID":       alloc.JobID,
		"CARAVAN_JOB_NAME":     jobName,
		"CARAVAN_ALLOC_ID":     alloc.ID,
		"CARAVAN_ALLOC_INDEX":  strconv.Itoa(alloc.Index),
		"CARAVAN_ALLOC_NAME":   alloc.Name,
		"CARAVAN_GROUP_NAME":   alloc.TaskGroup,
		"CARAVAN_TASK_NAME":    task.Name,
		"CARAVAN_TASK_DIR":     privateDir,
		"CARAVAN_ALLOC_DIR":    sharedDir,
		"CARAVAN_MEMORY_LIMIT": strconv.FormatInt(int64(task.Resources.Memory), 10),
		"CARAVAN_NODE_ID":      node.ID,
		"CARAVAN_NODE_NAME":    node.Name,
		"CARAVAN_DC":           node.Datacenter,
	}
	for k, v := range set {
		env[k] = v
	}
	cpu := task.Resources.CPU
	if tg := groupOf(alloc); tg != nil {
		if cores := alloc.Resources.TaskCores(tg, task.Name); len(cores) > 0 {
			env["CARAVAN_CPU_CORES"] = joinInts(cores)
			if cpu == 0 {
				cpu = len(cores) * node.MHzPerCore
			}
		}
	}
	env["CARAVAN_CPU_LIMIT"] = strconv.Itoa(cpu)
	for _, p := range alloc.Resources.Ports {
		label := envKey(p.Label)
		port := p.Value
		if docker && p.To > 0 {
			port = p.To
		}
		env["CARAVAN_PORT_"+label] = strconv.Itoa(port)
		env["CARAVAN_HOST_PORT_"+label] = strconv.Itoa(p.Value)
		if node.Address != "" {
			env["CARAVAN_ADDR_"+label] = net.JoinHostPort(node.Address, strconv.Itoa(p.Value))
		}
	}
	// Meta: job, then group, then task; the most specific wins.
	var metas []map[string]string
	if job != nil {
		metas = append(metas, job.Meta)
	}
	if tg := groupOf(alloc); tg != nil {
		metas = append(metas, tg.Meta)
	}
	metas = append(metas, task.Meta)
	for _, m := range metas {
		for k, v := range m {
			env["CARAVAN_META_"+envKey(k)] = v
		}
	}
	return env
}

// TaskPorts returns the allocation's ports that the task asked for, by
// label: the ports its driver publishes.
func TaskPorts(alloc *caravan.Allocation, task *caravan.Task) []caravan.AllocatedPort {
	var out []caravan.AllocatedPort
	for _, want := range task.Resources.Ports {
		for _, p := range alloc.Resources.Ports {
			if p.Label == want.Label {
				if p.To == 0 {
					p.To = want.To
				}
				out = append(out, p)
				break
			}
		}
	}
	return out
}

func groupOf(alloc *caravan.Allocation) *caravan.TaskGroup {
	if alloc.Job == nil {
		return nil
	}
	return alloc.Job.LookupTaskGroup(alloc.TaskGroup)
}

// envKey upper-cases s and replaces what may not appear in a portable
// variable name with '_'.
func envKey(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

func joinInts(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}

// OutputVars are the values that output path patterns expand.
type OutputVars struct {
	JobID, JobName, NodeName string
	// ArrayIndex is the allocation index for now.
	ArrayIndex int
}

// ExpandOutputPath expands a job's stdout or stderr pattern: %j job id, %a
// array index, %x job name, %n node name, %% a percent sign. Any other
// %-sequence is kept as written. A relative result is taken from base.
// An empty pattern stays empty.
func ExpandOutputPath(pattern string, v OutputVars, base string) string {
	if pattern == "" {
		return ""
	}
	var b strings.Builder
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		if c != '%' || i == len(pattern)-1 {
			b.WriteByte(c)
			continue
		}
		i++
		switch pattern[i] {
		case 'j':
			b.WriteString(v.JobID)
		case 'a':
			b.WriteString(strconv.Itoa(v.ArrayIndex))
		case 'x':
			b.WriteString(v.JobName)
		case 'n':
			b.WriteString(v.NodeName)
		case '%':
			b.WriteByte('%')
		default:
			b.WriteByte('%')
			b.WriteByte(pattern[i])
		}
	}
	p := b.String()
	if !filepath.IsAbs(p) {
		p = filepath.Join(base, p)
	}
	return filepath.Clean(p)
}
