package exec

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/caravan-sched/caravan/internal/driver"
)

// Start errors.
var (
	// ErrUnknownUser means the task's user does not exist on this node.
	ErrUnknownUser = errors.New("unknown user")
	// ErrRootRefused means the task asked for root and the driver does not
	// allow it.
	ErrRootRefused = errors.New("tasks may not run as root on this node")
	// ErrProgramNotFound means the task's program (or script interpreter)
	// does not exist or is not executable.
	ErrProgramNotFound = errors.New("program not found")
	// ErrInvalidTask means the task config cannot be run.
	ErrInvalidTask = errors.New("invalid exec task")
)

// defaultPath is the search path of tasks whose environment has no PATH.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// scriptName is the file in TaskDir/local/ that holds config.script.
const scriptName = "caravan_script"

// taskUser is who runs a task.
type taskUser struct {
	name     string
	uid, gid uint32
}

// resolveUser finds the task's user: the config's, the task's, or the
// driver's default. A numeric id without a passwd entry runs with the same
// number as group.
func (d *Driver) resolveUser(cfg *driver.TaskConfig) (taskUser, error) {
	name := cfg.User
	if name == "" {
		name = cfg.Task.User
	}
	if name == "" {
		name = d.cfg.DefaultUser
	}
	u, err := user.Lookup(name)
	if err != nil {
		u, err = user.LookupId(name)
	}
	var tu taskUser
	switch {
	case err == nil:
		uid, uerr := strconv.ParseUint(u.Uid, 10, 32)
		gid, gerr := strconv.ParseUint(u.Gid, 10, 32)
		if uerr != nil || gerr != nil {
			return taskUser{}, fmt.Errorf("user %q has a non-numeric id: %w", name, ErrUnknownUser)
		}
		tu = taskUser{name: name, uid: uint32(uid), gid: uint32(gid)}
	default:
		id, perr := strconv.ParseUint(name, 10, 32)
		if perr != nil {
			return taskUser{}, fmt.Errorf("user %q: %w", name, ErrUnknownUser)
		}
		tu = taskUser{name: name, uid: uint32(id), gid: uint32(id)}
	}
	if tu.uid == 0 && !d.cfg.AllowRoot {
		return taskUser{}, fmt.Errorf("user %q: %w", name, ErrRootRefused)
	}
	return tu, nil
}

// command is what the supervisor executes.
type command struct {
	path string
	args []string
}

// buildCommand turns the task config into a program and its arguments:
// command plus args; a whole command line (white space, no args) under
// /bin/sh -c; or config.script, written to TaskDir/local/ and run by its
// shebang line (or /bin/sh). It checks that the program exists and that u
// may execute it.
func buildCommand(cfg *driver.TaskConfig, u taskUser, workDir string) (command, error) {
	c := cfg.Task.Config
	pathEnv := cfg.Env["PATH"]
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	switch {
	case c.Script != "":
		return writeScript(cfg, u)
	case c.Command == "":
		return command{}, fmt.Errorf("config.command or config.script is needed: %w", ErrInvalidTask)
	case len(c.Args) == 0 && strings.ContainsAny(c.Command, " \t\n"):
		if first := firstWord(c.Command); first != "" {
			if _, err := lookPath(first, pathEnv, workDir, u); err != nil {
				return command{}, err
			}
		}
		return command{path: "/bin/sh", args: []string{"/bin/sh", "-c", c.Command}}, nil
	}
	prog, err := lookPath(c.Command, pathEnv, workDir, u)
	if err != nil {
		return command{}, err
	}
	return command{path: prog, args: append([]string{c.Command}, c.Args...)}, nil
}

// writeScript writes config.script into TaskDir/local/ for the task user.
func writeScript(cfg *driver.TaskConfig, u taskUser) (command, error) {
	script := cfg.Task.Config.Script
	path := filepath.Join(cfg.TaskDir, "local", scriptName)
	if err := writeUserFile(path, []byte(script), 0o750, u); err != nil {
		return command{}, fmt.Errorf("write script: %w", err)
	}
	args := append([]string{path}, cfg.Task.Config.Args...)
	line, ok := strings.CutPrefix(script, "#!")
	if !ok {
		return command{path: "/bin/sh", args: append([]string{"/bin/sh"}, args...)}, nil
	}
	line, _, _ = strings.Cut(line, "\n")
	interp := strings.Fields(line)
	if len(interp) == 0 || !filepath.IsAbs(interp[0]) {
		return command{}, fmt.Errorf("script: the #! line names no absolute interpreter path: %w", ErrInvalidTask)
	}
	if err := checkExecutable(interp[0], u); err != nil {
		return command{}, fmt.Errorf("script interpreter: %w", err)
	}
	return command{path: path, args: args}, nil
}

// writeUserFile writes a new file owned by u into a directory u may write
// to. Whatever is at path (a symlink a previous run left, say) is removed
// first and never followed: the driver runs as root.
func writeUserFile(path string, data []byte, mode os.FileMode, u taskUser) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Chown(int(u.uid), int(u.gid))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// shellWords are shell keywords and builtins: a command line that starts
// with one needs no program.
func shellWord(w string) bool {
	return slices.Contains([]string{
		"!", ".", ":", "[", "{", "}", "alias", "bg", "break", "case", "cd", "command", "continue",
		"do", "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false",
		"fc", "fg", "fi", "for", "getopts", "hash", "if", "jobs", "kill", "local", "printf",
		"pwd", "read", "readonly", "return", "set", "shift", "test", "then", "time", "times",
		"trap", "true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
	}, w)
}

// firstWord returns the program a simple shell command line starts with,
// or "" when the line starts with anything else (a keyword, a builtin, an
// assignment, a redirection, quoting, a subshell).
func firstWord(line string) string {
	fields := strings.Fields(line)
	if len(fields) == 0 {
		return ""
	}
	w := fields[0]
	if shellWord(w) {
		return ""
	}
	for _, r := range w {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./+-", r)
		if !ok {
			return ""
		}
	}
	return w
}

// lookPath finds file as execve would for the task: a name with a slash is
// taken as is (relative to workDir), others are searched in pathEnv.
func lookPath(file, pathEnv, workDir string, u taskUser) (string, error) {
	if strings.Contains(file, "/") {
		p := file
		if !filepath.IsAbs(p) {
			p = filepath.Join(workDir, p)
		}
		if err := checkExecutable(p, u); err != nil {
			return "", err
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(workDir, dir)
		}
		p := filepath.Join(dir, file)
		if checkExecutable(p, u) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q is not in the task's PATH (%s): %w", file, pathEnv, ErrProgramNotFound)
}

// checkExecutable checks that path is a regular file u may execute.
func checkExecutable(path string, u taskUser) error {
	info, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, ErrProgramNotFound)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file: %w", path, ErrProgramNotFound)
	}
	if !permits(info, u, 1) {
		return fmt.Errorf("%s is not executable by %s: %w", path, u.name, ErrProgramNotFound)
	}
	return nil
}

// permits reports whether u has the permission bit (4 read, 2 write, 1
// execute or search) on a file, by owner, group or other. Root may do
// anything but execute a file that no one may execute.
func permits(info os.FileInfo, u taskUser, bit os.FileMode) bool {
	mode := info.Mode().Perm()
	if u.uid == 0 {
		return bit != 1 || info.IsDir() || mode&0o111 != 0
	}
	uid, gid, ok := fileOwner(info)
	switch {
	case !ok:
		return mode&(bit|bit<<3|bit<<6) != 0
	case uid == u.uid:
		return mode&(bit<<6) != 0
	case gid == u.gid:
		return mode&(bit<<3) != 0
	}
	return mode&bit != 0
}

// checkSearchable checks that u may reach dir: search permission on it and
// on every directory above it.
func checkSearchable(dir string, u taskUser) error {
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		if !info.IsDir() {
			return fmt.Errorf("%s is not a directory", d)
		}
		if !permits(info, u, 1) {
			return fmt.Errorf("user %s may not enter %s", u.name, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// prepareDirs makes the task directory (with local/ and tmp/) and the
// allocation's shared alloc/ directory the task user's, and returns the
// task's working directory.
func prepareDirs(cfg *driver.TaskConfig, u taskUser) (string, error) {
	if cfg.TaskDir == "" || !filepath.IsAbs(cfg.TaskDir) {
		return "", fmt.Errorf("task dir %q: not an absolute path: %w", cfg.TaskDir, ErrInvalidTask)
	}
	dirs := []string{cfg.TaskDir, filepath.Join(cfg.TaskDir, "local"), filepath.Join(cfg.TaskDir, "tmp")}
	if cfg.AllocDir != "" {
		dirs = append(dirs, filepath.Join(cfg.AllocDir, "alloc"))
	}
	for _, dir := range dirs {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", fmt.Errorf("prepare task dir: %w", err)
		}
		// A task may have replaced its directories with symlinks on an
		// earlier run: never follow one as root.
		info, err := os.Lstat(dir)
		if err != nil {
			return "", fmt.Errorf("prepare task dir: %w", err)
		}
		if !info.IsDir() {
			return "", fmt.Errorf("prepare task dir: %s is not a directory: %w", dir, ErrInvalidTask)
		}
		if err := os.Lchown(dir, int(u.uid), int(u.gid)); err != nil {
			return "", fmt.Errorf("prepare task dir: %w", err)
		}
	}
	workDir := cfg.Task.WorkDir
	switch {
	case workDir == "":
		workDir = cfg.TaskDir
	case !filepath.IsAbs(workDir):
		workDir = filepath.Join(cfg.TaskDir, workDir)
	}
	if err := checkSearchable(workDir, u); err != nil {
		return "", fmt.Errorf("work dir: %v: %w", err, ErrInvalidTask)
	}
	return workDir, nil
}
