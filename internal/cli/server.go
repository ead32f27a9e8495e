package cli

import (
	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/httpapi"
	"github.com/caravan-sched/caravan/internal/server"
)

// newServerCommand is `caravan server [flags]`, which runs a server until
// interrupted, and the parent of `caravan server members`.
func newServerCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "server [--config FILE] [flags]",
		Short: "Run a caravan server (or, with a subcommand, ask the servers)",
		Long: `Run a caravan server until interrupted: the HTTP API and web UI, and a
member of the Raft cluster that keeps the state. Without --join and without
Raft state in the data dir, it starts a new cluster of one.

Settings come from the defaults, then the --config file, then the flags.`,
		Args: cobra.NoArgs,
	}
	o := newConfigFlags(cmd)
	addServerFlags(o)
	o.list("join", "server.join", "HTTP address (host:port) of a server to join; repeat or separate with commas", func(c *config.Config, v []string) { c.Server.Join = v })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := o.load(nil)
		if err != nil {
			return err
		}
		logger := newLogger(cfg, env.Stderr)
		srv, err := server.New(cfg, logger)
		if err != nil {
			return err
		}
		srv.SetHandler(httpapi.New(srv, logger))
		return srv.Run(cmd.Context())
	}
	cmd.AddCommand(newServerMembersCommand(env))
	return cmd
}

// addServerFlags registers the flags that server and dev share.
func addServerFlags(o *configFlags) {
	o.str("data-dir", "data_dir", "directory for Raft data, snapshots and agent state (default ./caravan-data)", func(c *config.Config, v string) { c.DataDir = v })
	o.str("bind", "bind", "IP address to listen on (default 127.0.0.1)", func(c *config.Config, v string) { c.Bind = v })
	o.str("name", "name", "this server's name in the cluster (default the host name)", func(c *config.Config, v string) { c.Name = v })
	o.integer("http-port", "server.http_port", "port of the HTTP API and web UI (default 8500)", func(c *config.Config, v int) { c.Server.HTTPPort = v })
	o.integer("raft-port", "server.raft_port", "port of Raft traffic between servers (default http-port - 200)", func(c *config.Config, v int) { c.Server.RaftPort = v })
}
