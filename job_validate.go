package caravan

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Defaults that Canonicalize fills in.
const (
	DefaultCPU         = 100 // MHz
	DefaultMemoryMB    = 300
	DefaultKillTimeout = Duration(5 * time.Second)
	// DockerPortLabel names the port that TaskConfig.Port asks for.
	DockerPortLabel = "port"
)

// Limits on what a job may hold, so one request cannot exhaust a server.
const (
	MaxTaskGroups    = 100
	MaxTasksPerGroup = 100
	MaxGroupCount    = 1_000_000
	MaxIDLength      = 128
)

// DefaultRestartPolicy returns the restart policy a task group of the job
// type gets when it names none.
func DefaultRestartPolicy(jobType string) *RestartPolicy {
	if jobType == JobTypeBatch {
		return &RestartPolicy{Attempts: 3, Interval: Duration(24 * time.Hour), Delay: Duration(15 * time.Second), Mode: RestartModeFail}
	}
	return &RestartPolicy{Attempts: 2, Interval: Duration(30 * time.Minute), Delay: Duration(15 * time.Second), Mode: RestartModeFail}
}

// DefaultReschedulePolicy returns the reschedule policy a task group of the
// job type gets when it names none. System jobs are never rescheduled.
func DefaultReschedulePolicy(jobType string) *ReschedulePolicy {
	switch jobType {
	case JobTypeBatch:
		return &ReschedulePolicy{Attempts: 1, Interval: Duration(24 * time.Hour), Delay: Duration(5 * time.Second), DelayFunction: DelayConstant}
	case JobTypeSystem:
		return &ReschedulePolicy{}
	}
	return &ReschedulePolicy{Unlimited: true, Delay: Duration(30 * time.Second), DelayFunction: DelayExponential, MaxDelay: Duration(time.Hour)}
}

// Canonicalize fills in defaults: type, priority, node pool, names, counts,
// policies, driver inference, resources. It never fails; Validate reports
// what is still wrong. It is idempotent.
func (j *Job) Canonicalize() {
	if j.Type == "" {
		j.Type = JobTypeService
	}
	if j.Priority == 0 {
		j.Priority = DefaultPriority
	}
	if j.NodePool == "" {
		j.NodePool = DefaultNodePool
	}
	if j.Name == "" {
		j.Name = j.ID
	}
	if j.Update == nil {
		j.Update = &UpdateStrategy{MaxParallel: 1}
	}
	for _, tg := range j.TaskGroups {
		if tg == nil {
			continue
		}
		if tg.Name == "" && len(j.TaskGroups) == 1 {
			tg.Name = defaultName(j)
		}
		if tg.Count == nil {
			one := 1
			tg.Count = &one
		}
		if tg.Restart == nil {
			tg.Restart = DefaultRestartPolicy(j.Type)
		} else if tg.Restart.Mode == "" {
			tg.Restart.Mode = RestartModeFail
		}
		if tg.Reschedule == nil {
			tg.Reschedule = DefaultReschedulePolicy(j.Type)
		} else if tg.Reschedule.DelayFunction == "" {
			tg.Reschedule.DelayFunction = DelayConstant
		}
		for _, t := range tg.Tasks {
			if t == nil {
				continue
			}
			if t.Name == "" && len(tg.Tasks) == 1 {
				t.Name = tg.Name
			}
			t.canonicalize()
		}
	}
}

func defaultName(j *Job) string {
	if j.Name != "" {
		return j.Name
	}
	if j.ID != "" {
		return j.ID
	}
	return "main"
}

func (t *Task) canonicalize() {
	if t.Driver == "" {
		switch {
		case t.Config.Image != "":
			t.Driver = DriverDocker
		case t.Config.Command != "" || t.Config.Script != "":
			t.Driver = DriverExec
		}
	}
	if t.Resources.CPU == 0 && t.Resources.Cores == 0 {
		t.Resources.CPU = DefaultCPU
	}
	if t.Resources.Memory == 0 {
		t.Resources.Memory = DefaultMemoryMB
	}
	if t.KillTimeout == 0 {
		t.KillTimeout = DefaultKillTimeout
	}
	if t.Config.Port > 0 && !t.hasPortLabel(DockerPortLabel) {
		t.Resources.Ports = append(t.Resources.Ports, Port{Label: DockerPortLabel, To: t.Config.Port})
	}
}

func (t *Task) hasPortLabel(label string) bool {
	for _, p := range t.Resources.Ports {
		if p.Label == label {
			return true
		}
	}
	return false
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]*$`)

// ValidID reports whether s may be used as a job, group or task name: a
// letter or digit, then letters, digits, '_', '.' or '-', at most
// MaxIDLength characters.
func ValidID(s string) bool {
	return len(s) <= MaxIDLength && idPattern.MatchString(s)
}

// Validate checks a canonicalized job and returns a *ValidationError naming
// every bad field by its JSON path. An empty ID is allowed: the server
// assigns one.
func (j *Job) Validate() error {
	v := &validator{}
	if j.ID != "" && !ValidID(j.ID) {
		v.addf("id", "%q is not a valid id: use letters, digits, '_', '.' and '-', starting with a letter or digit, at most %d characters", j.ID, MaxIDLength)
	}
	if len(j.Name) > 256 {
		v.addf("name", "longer than 256 characters")
	}
	switch j.Type {
	case JobTypeService, JobTypeBatch, JobTypeSystem:
	default:
		v.addf("type", "unknown job type %q: use service, batch or system", j.Type)
	}
	if j.Priority < MinPriority || j.Priority > MaxPriority {
		v.addf("priority", "%d is out of range [%d, %d]", j.Priority, MinPriority, MaxPriority)
	}
	if j.NodePool != "" && !ValidID(j.NodePool) {
		v.addf("node_pool", "%q is not a valid pool name", j.NodePool)
	}
	for i, dc := range j.Datacenters {
		if dc == "" {
			v.addf(fmt.Sprintf("datacenters[%d]", i), "empty datacenter name")
		}
	}
	switch j.Algorithm {
	case "", AlgorithmBinpack, AlgorithmSpread, AlgorithmFirstFit, AlgorithmMostFreeMemory:
	default:
		v.addf("algorithm", "unknown algorithm %q: use binpack, spread, first-fit or most-free-memory", j.Algorithm)
	}
	validateConstraints(v, "constraints", j.Constraints)
	validateSpreads(v, "spreads", j.Spreads)
	if j.Update != nil && j.Update.MaxParallel < 0 {
		v.addf("update.max_parallel", "must not be negative")
	}
	if len(j.TaskGroups) == 0 {
		v.addf("task_groups", "a job needs at least one task group")
	}
	if len(j.TaskGroups) > MaxTaskGroups {
		v.addf("task_groups", "at most %d task groups", MaxTaskGroups)
	}
	seen := map[string]bool{}
	for i, tg := range j.TaskGroups {
		path := fmt.Sprintf("task_groups[%d]", i)
		if tg == nil {
			v.addf(path, "null task group")
			continue
		}
		if seen[tg.Name] && tg.Name != "" {
			v.addf(path+".name", "duplicate task group name %q", tg.Name)
		}
		seen[tg.Name] = true
		tg.validate(v, path, j.Type)
	}
	return v.err()
}

func (tg *TaskGroup) validate(v *validator, path, jobType string) {
	if tg.Name == "" {
		v.addf(path+".name", "missing: every task group of a job with several needs a name")
	} else if !ValidID(tg.Name) {
		v.addf(path+".name", "%q is not a valid name", tg.Name)
	}
	if c := tg.GroupCount(); c < 0 || c > MaxGroupCount {
		v.addf(path+".count", "%d is out of range [0, %d]", c, MaxGroupCount)
	}
	validateConstraints(v, path+".constraints", tg.Constraints)
	validateSpreads(v, path+".spreads", tg.Spreads)
	if r := tg.Restart; r != nil {
		if r.Attempts < 0 {
			v.addf(path+".restart.attempts", "must not be negative")
		}
		if r.Mode != RestartModeFail && r.Mode != RestartModeDelay {
			v.addf(path+".restart.mode", "unknown mode %q: use fail or delay", r.Mode)
		}
		if r.Attempts > 0 && r.Interval > 0 && r.Delay.D()*time.Duration(r.Attempts) > r.Interval.D() {
			v.addf(path+".restart", "%d attempts with delay %s do not fit in interval %s", r.Attempts, r.Delay, r.Interval)
		}
	}
	if r := tg.Reschedule; r != nil {
		if r.Attempts < 0 {
			v.addf(path+".reschedule.attempts", "must not be negative")
		}
		switch r.DelayFunction {
		case DelayConstant, DelayExponential, DelayFibonacci:
		default:
			v.addf(path+".reschedule.delay_function", "unknown delay function %q: use constant, exponential or fibonacci", r.DelayFunction)
		}
		if r.MaxDelay > 0 && r.MaxDelay < r.Delay {
			v.addf(path+".reschedule.max_delay", "%s is below delay %s", r.MaxDelay, r.Delay)
		}
	}
	if len(tg.Tasks) == 0 {
		v.addf(path+".tasks", "a task group needs at least one task")
	}
	if len(tg.Tasks) > MaxTasksPerGroup {
		v.addf(path+".tasks", "at most %d tasks", MaxTasksPerGroup)
	}
	tasks := map[string]bool{}
	ports := map[string]bool{}
	static := map[int]bool{}
	for i, t := range tg.Tasks {
		tp := fmt.Sprintf("%s.tasks[%d]", path, i)
		if t == nil {
			v.addf(tp, "null task")
			continue
		}
		if tasks[t.Name] && t.Name != "" {
			v.addf(tp+".name", "duplicate task name %q", t.Name)
		}
		tasks[t.Name] = true
		t.validate(v, tp)
		for k, p := range t.Resources.Ports {
			pp := fmt.Sprintf("%s.resources.ports[%d]", tp, k)
			if ports[p.Label] {
				v.addf(pp+".label", "duplicate port label %q in the group", p.Label)
			}
			ports[p.Label] = true
			if p.Value > 0 {
				if static[p.Value] {
					v.addf(pp+".value", "static port %d asked for twice in the group", p.Value)
				}
				static[p.Value] = true
			}
		}
	}
}

func (t *Task) validate(v *validator, path string) {
	if t.Name == "" {
		v.addf(path+".name", "missing: every task of a group with several needs a name")
	} else if !ValidID(t.Name) {
		v.addf(path+".name", "%q is not a valid name", t.Name)
	}
	switch t.Driver {
	case DriverExec:
		if t.Config.Command == "" && t.Config.Script == "" {
			v.addf(path+".config", "the exec driver needs config.command or config.script")
		}
		if t.Config.Command != "" && t.Config.Script != "" {
			v.addf(path+".config", "give config.command or config.script, not both")
		}
		if t.Config.Image != "" {
			v.addf(path+".config.image", "the exec driver runs no image; use driver docker")
		}
	case DriverDocker:
		if t.Config.Image == "" {
			v.addf(path+".config.image", "the docker driver needs an image")
		}
		if t.Config.Script != "" {
			v.addf(path+".config.script", "the docker driver does not take a script; use command and args")
		}
	case "":
		v.addf(path+".driver", "missing, and it cannot be inferred: give config.command (exec) or config.image (docker)")
	default:
		v.addf(path+".driver", "unknown driver %q: use exec or docker", t.Driver)
	}
	if t.Config.Port < 0 || t.Config.Port > 65535 {
		v.addf(path+".config.port", "%d is not a port number", t.Config.Port)
	}
	for k := range t.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			v.addf(path+".env", "invalid variable name %q", k)
		}
	}
	r := t.Resources
	if r.CPU < 0 {
		v.addf(path+".resources.cpu", "must not be negative")
	}
	if r.Cores < 0 {
		v.addf(path+".resources.cores", "must not be negative")
	}
	if r.Cores > 0 && r.CPU > 0 {
		v.addf(path+".resources.cpu", "give cpu or cores, not both")
	}
	if r.Memory <= 0 {
		v.addf(path+".resources.memory", "must be positive")
	}
	for k, p := range r.Ports {
		pp := fmt.Sprintf("%s.resources.ports[%d]", path, k)
		if p.Label == "" {
			v.addf(pp+".label", "missing")
		}
		if p.Value < 0 || p.Value > 65535 {
			v.addf(pp+".value", "%d is not a port number", p.Value)
		}
		if p.To < 0 || p.To > 65535 {
			v.addf(pp+".to", "%d is not a port number", p.To)
		}
	}
	validateConstraints(v, path+".constraints", t.Constraints)
	if t.TimeLimit < 0 {
		v.addf(path+".time_limit", "must not be negative")
	}
	if t.KillTimeout < 0 {
		v.addf(path+".kill_timeout", "must not be negative")
	}
	if strings.ContainsRune(t.Stdout, 0) {
		v.addf(path+".stdout", "contains a NUL byte")
	}
	if strings.ContainsRune(t.Stderr, 0) {
		v.addf(path+".stderr", "contains a NUL byte")
	}
}

func validateConstraints(v *validator, path string, cs []Constraint) {
	for i, c := range cs {
		cp := fmt.Sprintf("%s[%d]", path, i)
		if c.Attribute == "" {
			v.addf(cp+".attribute", "missing")
		}
		switch c.Operator {
		case "", ConstraintEqual, ConstraintNotEqual, ConstraintSetContains:
		case ConstraintLess, ConstraintLessEqual, ConstraintGreater, ConstraintGreaterEqual:
			if c.Value == "" {
				v.addf(cp+".value", "operator %q needs a value", c.Operator)
			}
		case ConstraintRegexp:
			if _, err := regexp.Compile(c.Value); err != nil {
				v.addf(cp+".value", "invalid regexp: %v", err)
			}
		case ConstraintVersion:
			if _, err := ParseVersionConstraint(c.Value); err != nil {
				v.addf(cp+".value", "%v", err)
			}
		case ConstraintIsSet, ConstraintIsNotSet:
		default:
			v.addf(cp+".operator", "unknown operator %q: use =, !=, <, <=, >, >=, regexp, set_contains, version, is_set or is_not_set", c.Operator)
		}
	}
}

func validateSpreads(v *validator, path string, ss []Spread) {
	for i, s := range ss {
		sp := fmt.Sprintf("%s[%d]", path, i)
		if s.Attribute == "" {
			v.addf(sp+".attribute", "missing")
		}
		if s.Weight < 0 || s.Weight > 100 {
			v.addf(sp+".weight", "%d is out of range [0, 100]", s.Weight)
		}
	}
}
