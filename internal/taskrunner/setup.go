package taskrunner

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/driver"
)

// Folder names inside an allocation's directory.
const (
	// SharedDir is the folder the group's tasks share; logs live in
	// SharedDir/LogsDir.
	SharedDir = "alloc"
	LogsDir   = "logs"
)

// LogDir returns where the rotated logs of an allocation's tasks are.
func LogDir(allocDir string) string { return filepath.Join(allocDir, SharedDir, LogsDir) }

// setup builds the task's directory (local/ and tmp/, owned by the task's
// user) and its driver configuration. It is idempotent.
func (r *Runner) setup() error {
	t, alloc := r.cfg.Task, r.cfg.Alloc
	if t.Name == SharedDir {
		return fmt.Errorf("task name %q collides with the allocation's shared folder; rename the task", t.Name)
	}
	userName, uid, gid, err := r.resolveUser()
	if err != nil {
		return err
	}
	taskDir := filepath.Join(r.cfg.AllocDir, t.Name)
	if err := os.MkdirAll(taskDir, 0o755); err != nil {
		return fmt.Errorf("create task directory: %w", err)
	}
	for _, sub := range []string{"local", "tmp"} {
		dir := filepath.Join(taskDir, sub)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create task directory: %w", err)
		}
		if err := ownDir(dir, uid, gid); err != nil {
			return err
		}
	}
	logDir := LogDir(r.cfg.AllocDir)
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	jobName := alloc.JobID
	if alloc.Job.Name != "" {
		jobName = alloc.Job.Name
	}
	base := taskDir
	if t.Driver != caravan.DriverDocker && filepath.IsAbs(t.WorkDir) {
		base = t.WorkDir
	}
	vars := OutputVars{JobID: alloc.JobID, JobName: jobName, NodeName: r.cfg.Node.Name, ArrayIndex: alloc.Index}
	var cores []int
	if tg := groupOf(alloc); tg != nil {
		cores = alloc.Resources.TaskCores(tg, t.Name)
	}
	r.tc = &driver.TaskConfig{
		ID:          r.id,
		AllocID:     alloc.ID,
		JobID:       alloc.JobID,
		JobName:     jobName,
		TaskGroup:   alloc.TaskGroup,
		Task:        t,
		Env:         Env(alloc, t, r.cfg.Node, r.cfg.AllocDir, taskDir),
		AllocDir:    r.cfg.AllocDir,
		TaskDir:     taskDir,
		User:        userName,
		CPU:         t.Resources.CPU,
		Memory:      t.Resources.Memory,
		Cores:       cores,
		Ports:       TaskPorts(alloc, t),
		TimeLimit:   t.TimeLimit.D(),
		KillTimeout: r.killTimeout(),
		Logs: driver.LogConfig{
			Dir:         logDir,
			MaxFileSize: r.cfg.LogMaxFileSize,
			MaxFiles:    r.cfg.LogMaxFiles,
			StdoutPath:  ExpandOutputPath(t.Stdout, vars, base),
			StderrPath:  ExpandOutputPath(t.Stderr, vars, base),
		},
	}
	return nil
}

// resolveUser names the user the task runs as. Exec tasks run as the
// job's user or the agent's task user, looked up here; uid and gid are -1
// when not known (docker: the image decides unless the job names a user).
// Root is refused unless the agent allows it.
func (r *Runner) resolveUser() (name string, uid, gid int, err error) {
	t := r.cfg.Task
	if t.Driver == caravan.DriverDocker {
		if isRootName(t.User) && !r.cfg.AllowRoot {
			return "", -1, -1, fmt.Errorf("the task asks to run as %q and this agent does not allow root tasks (agent allow_root)", t.User)
		}
		return t.User, -1, -1, nil
	}
	name = t.User
	if name == "" {
		name = r.cfg.TaskUser
	}
	if name == "" {
		name = "nobody"
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u2, err2 := user.LookupId(name); err2 == nil {
			u, err = u2, nil
		}
	}
	if err != nil {
		return "", -1, -1, fmt.Errorf("task user %q: %w", name, err)
	}
	uid, err = strconv.Atoi(u.Uid)
	if err != nil {
		return "", -1, -1, fmt.Errorf("task user %q has a non-numeric uid %q", name, u.Uid)
	}
	gid, err = strconv.Atoi(u.Gid)
	if err != nil {
		return "", -1, -1, fmt.Errorf("task user %q has a non-numeric gid %q", name, u.Gid)
	}
	if uid == 0 && !r.cfg.AllowRoot {
		return "", -1, -1, fmt.Errorf("the task would run as root (user %q) and this agent does not allow root tasks (agent allow_root)", name)
	}
	return u.Username, uid, gid, nil
}

func isRootName(s string) bool {
	name, _, _ := strings.Cut(s, ":")
	return name == "root" || name == "0"
}

// ownDir gives dir to the task's user. Without a known user (docker) or
// without the right to chown, it is made writable for everyone, with the
// sticky bit, as /tmp is.
func ownDir(dir string, uid, gid int) error {
	if uid >= 0 && os.Geteuid() == 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			return fmt.Errorf("give task directory to uid %d: %w", uid, err)
		}
		return nil
	}
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		return fmt.Errorf("open task directory: %w", err)
	}
	return nil
}
