package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan"
	"github.com/caravan-sched/caravan/internal/config"
)

// configFlags lays the flags of a process command (server, agent, dev)
// over the defaults and the config file: defaults, then --config FILE,
// then the flags given, then Finish.
type configFlags struct {
	cmd  *cobra.Command
	file string
	sets []configSetting
}

// configSetting applies one flag to the configuration when it was given.
type configSetting struct {
	flag  string
	path  string // the field's name in the config file, as Validate names it
	apply func(*config.Config) error
}

func newConfigFlags(cmd *cobra.Command) *configFlags {
	o := &configFlags{cmd: cmd}
	cmd.Flags().StringVar(&o.file, "config", "", "HCL or JSON configuration file (flags override it)")
	o.str("log-level", "log_level", "log level: debug, info, warn or error", func(c *config.Config, v string) { c.LogLevel = v })
	return o
}

func (o *configFlags) str(name, path, usage string, set func(*config.Config, string)) {
	v := o.cmd.Flags().String(name, "", usage)
	o.sets = append(o.sets, configSetting{flag: name, path: path, apply: func(c *config.Config) error { set(c, *v); return nil }})
}

func (o *configFlags) integer(name, path, usage string, set func(*config.Config, int)) {
	v := o.cmd.Flags().Int(name, 0, usage)
	o.sets = append(o.sets, configSetting{flag: name, path: path, apply: func(c *config.Config) error { set(c, *v); return nil }})
}

func (o *configFlags) list(name, path, usage string, set func(*config.Config, []string)) {
	v := o.cmd.Flags().StringSlice(name, nil, usage)
	o.sets = append(o.sets, configSetting{flag: name, path: path, apply: func(c *config.Config) error { set(c, *v); return nil }})
}

// meta registers a repeatable key=value flag that adds to a map.
func (o *configFlags) meta(name, path, usage string, get func(*config.Config) *map[string]string) {
	v := o.cmd.Flags().StringArray(name, nil, usage)
	o.sets = append(o.sets, configSetting{flag: name, path: path, apply: func(c *config.Config) error {
		m := get(c)
		if *m == nil {
			*m = map[string]string{}
		}
		for _, kv := range *v {
			k, val, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return fmt.Errorf("--%s %q: use key=value", name, kv)
			}
			(*m)[k] = val
		}
		return nil
	}})
}

// load builds the configuration; adjust (may be nil) runs after the flags,
// before Finish.
func (o *configFlags) load(adjust func(*config.Config)) (*config.Config, error) {
	cfg := config.Default()
	if o.file != "" {
		if err := cfg.LoadFile(o.file); err != nil {
			return nil, err
		}
	}
	for _, s := range o.sets {
		if o.cmd.Flags().Changed(s.flag) {
			if err := s.apply(cfg); err != nil {
				return nil, err
			}
		}
	}
	if adjust != nil {
		adjust(cfg)
	}
	if err := cfg.Finish(); err != nil {
		return nil, o.explain(err)
	}
	return cfg, nil
}

// explain lists a configuration's problems one per line, naming the flag
// that set a bad value.
func (o *configFlags) explain(err error) error {
	var ve *caravan.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var b strings.Builder
	b.WriteString("invalid configuration")
	if o.file != "" {
		fmt.Fprintf(&b, " (file %s and flags)", o.file)
	}
	b.WriteString(":")
	for _, f := range ve.Fields {
		fmt.Fprintf(&b, "\n  %s", f.Path)
		for _, s := range o.sets {
			if s.path == f.Path && o.cmd.Flags().Changed(s.flag) {
				fmt.Fprintf(&b, " (--%s)", s.flag)
			}
		}
		fmt.Fprintf(&b, ": %s", f.Message)
	}
	return &configError{msg: b.String(), err: err}
}

// configError is a configuration's problems, rendered one per line.
type configError struct {
	msg string
	err error
}

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return e.err }

// newLogger makes the process logger the configuration asks for.
func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	switch cfg.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
