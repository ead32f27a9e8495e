package cli

import (
	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/internal/agent"
	"github.com/caravan-sched/caravan/internal/config"
)

// newAgentCommand is `caravan agent [flags]`: a node agent until
// interrupted.
func newAgentCommand(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent --servers ADDR[,ADDR] [flags]",
		Short: "Run a node agent that runs the allocations the servers place on this machine",
		Long: `Run a node agent until interrupted: it registers this machine with the
servers, runs the allocations placed on it and reports their state. Tasks
keep running when the agent stops; a new agent on the same data dir takes
them over.

Settings come from the defaults, then the --config file, then the flags.`,
		Args: cobra.NoArgs,
	}
	o := newConfigFlags(cmd)
	addAgentFlags(o)
	o.str("data-dir", "data_dir", "directory for the agent's state and task directories (default ./caravan-data)", func(c *config.Config, v string) { c.DataDir = v })
	o.str("bind", "bind", "IP address the agent API listens on (default 127.0.0.1)", func(c *config.Config, v string) { c.Bind = v })
	o.list("servers", "agent.servers", "HTTP addresses (host:port) of servers, comma-separated (default 127.0.0.1:8500)", func(c *config.Config, v []string) { c.Agent.Servers = v })
	o.integer("http-port", "agent.http_port", "port of the agent API (default 8501)", func(c *config.Config, v int) { c.Agent.HTTPPort = v })
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := o.load(nil)
		if err != nil {
			return err
		}
		a, err := agent.New(agent.FromConfig(cfg), newLogger(cfg, env.Stderr))
		if err != nil {
			return err
		}
		return a.Run(cmd.Context())
	}
	return cmd
}

// addAgentFlags registers the node flags that agent and dev share.
func addAgentFlags(o *configFlags) {
	o.str("node-name", "agent.node_name", "this node's name (default the host name)", func(c *config.Config, v string) { c.Agent.NodeName = v })
	o.str("datacenter", "agent.datacenter", "this node's datacenter (default dc1)", func(c *config.Config, v string) { c.Agent.Datacenter = v })
	o.str("node-pool", "agent.node_pool", "this node's pool (default \"default\")", func(c *config.Config, v string) { c.Agent.NodePool = v })
	o.meta("meta", "agent.meta", "node metadata key=value; repeat for more", func(c *config.Config) *map[string]string { return &c.Agent.Meta })
}
