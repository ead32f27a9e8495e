package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/caravan-sched/caravan/internal/agent"
	"github.com/caravan-sched/caravan/internal/config"
	"github.com/caravan-sched/caravan/internal/httpapi"
	"github.com/caravan-sched/caravan/internal/server"
)

// devStartTimeout bounds how long dev waits for its server to elect itself
// leader before it starts the agent anyway.
const devStartTimeout = 30 * time.Second

// newDevCommand is `caravan dev`: a server and an agent in one process.
func newDevCommand(env *Env) *cobra.Command {
	var agentPort int
	cmd := &cobra.Command{
		Use:   "dev [--http-port N] [--agent-port N] [--data-dir DIR] [--bind ADDR]",
		Short: "Run a server and an agent in one process: a cluster of one machine",
		Long: `Run a server and an agent in one process, with data in a local folder:
the zero-setup way to try caravan. Ctrl-C stops both; tasks started by this
agent are stopped too.

Several dev instances can run side by side with different ports and data
dirs.`,
		Args: cobra.NoArgs,
	}
	o := newConfigFlags(cmd)
	addServerFlags(o)
	addAgentFlags(o)
	cmd.Flags().IntVar(&agentPort, "agent-port", 0, "port of the agent API (default http-port + 1)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := o.load(func(c *config.Config) {
			c.Server.FastRaft = true
			c.Server.Join = nil
			c.Agent.HTTPPort = c.Server.HTTPPort + 1
			if cmd.Flags().Changed("agent-port") {
				c.Agent.HTTPPort = agentPort
			}
			if abs, err := filepath.Abs(c.DataDir); err == nil {
				c.DataDir = abs
			}
		})
		if err != nil {
			return err
		}
		return runDev(cmd.Context(), env, cfg)
	}
	return cmd
}

// runDev runs the server, then the agent once the server leads. On the way
// out the agent stops first (stopping its tasks and reporting them), then
// the server.
func runDev(ctx context.Context, env *Env, cfg *config.Config) error {
	// Tasks run as an unprivileged user and must reach their directories
	// below the data dir.
	if _, err := os.Stat(cfg.DataDir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fmt.Errorf("create data dir: %w", err)
		}
	}
	logger := newLogger(cfg, env.Stderr)
	srv, err := server.New(cfg, logger)
	if err != nil {
		return err
	}
	srv.SetHandler(httpapi.New(srv, logger))

	acfg := agent.FromConfig(cfg)
	acfg.DataDir = filepath.Join(cfg.DataDir, "agent")
	acfg.Servers = []string{cfg.AdvertiseHTTP()}
	acfg.StopTasksOnShutdown = true
	ag, err := agent.New(acfg, logger)
	if err != nil {
		return err
	}

	serverCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	serverDone := make(chan error, 1)
	go func() { serverDone <- srv.Run(serverCtx) }()
	stopAll := func(agentErr error) error {
		stopServer()
		return errors.Join(agentErr, <-serverDone)
	}

	apiAddr := "http://" + cfg.AdvertiseHTTP()
	if err := waitForLeader(ctx, srv, serverDone); err != nil {
		if errors.Is(err, errServerEnded) {
			return err
		}
		return stopAll(err)
	}

	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	agentDone := make(chan error, 1)
	go func() { agentDone <- ag.Run(agentCtx) }()
	select {
	case <-ag.Ready():
		writeDevBanner(env.Stdout, cfg, apiAddr, ag.HTTPAddr())
	case err := <-agentDone:
		return stopAll(fmt.Errorf("agent: %w", err))
	case err := <-serverDone:
		stopAgent()
		<-agentDone
		return fmt.Errorf("server stopped: %w", err)
	}

	select {
	case err := <-agentDone:
		if err != nil {
			err = fmt.Errorf("agent: %w", err)
		}
		return stopAll(err)
	case err := <-serverDone:
		stopAgent()
		aerr := <-agentDone
		if err == nil && ctx.Err() == nil {
			err = errors.New("the server stopped")
		}
		return errors.Join(err, aerr)
	}
}

// errServerEnded means the server's Run returned while dev waited for it.
var errServerEnded = errors.New("the server stopped while starting")

// waitForLeader waits until the server leads, the server ends, ctx ends
// or devStartTimeout passes (then it goes on anyway).
func waitForLeader(ctx context.Context, srv *server.Server, serverDone <-chan error) error {
	deadline := time.NewTimer(devStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !srv.IsLeader() {
		select {
		case err := <-serverDone:
			if err == nil {
				err = ctx.Err()
			}
			return fmt.Errorf("%w: %w", errServerEnded, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil
		case <-tick.C:
		}
	}
	return nil
}

func writeDevBanner(w io.Writer, cfg *config.Config, apiAddr, agentAddr string) {
	addrHint := ""
	if cfg.Server.HTTPPort != 8500 || cfg.Advertise != "127.0.0.1" {
		addrHint = fmt.Sprintf("  export %s=%s    # this server is not on the default address\n", addressEnv, apiAddr)
	}
	fmt.Fprintf(w, `caravan dev: a server and an agent in this process.

  API:         %s
  Agent API:   http://%s (node %q)
  Raft:        %s
  Data:        %s

Submit a job and watch it:
%s  caravan job run job.hcl
  caravan job status
  caravan node status

Press Ctrl-C to stop.
`, apiAddr, agentAddr, cfg.Agent.NodeName, net.JoinHostPort(cfg.Advertise, strconv.Itoa(cfg.Server.RaftPort)), cfg.DataDir, addrHint)
}
