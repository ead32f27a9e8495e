package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// raftOptions are the knobs of the Raft layer that tests and dev mode turn.
type raftOptions struct {
	ID            string
	BindAddr      string
	AdvertiseAddr string
	Dir           string
	Bootstrap     bool // bootstrap a one-voter cluster when there is no state
	// Fast shortens election timeouts; for dev mode and tests on loopback.
	Fast              bool
	SnapshotThreshold uint64
	TrailingLogs      uint64
}

// raftNode owns the Raft instance and the stores and transport under it.
type raftNode struct {
	raft      *raft.Raft
	transport *raft.NetworkTransport
	logs      *wal.WAL
	meta      *metadb.BoltMetaDB
	leaderCh  chan bool
}

func openRaft(opt raftOptions, fsm raft.FSM, logger *slog.Logger) (*raftNode, error) {
	hl := newHCLogAdapter(logger, "raft")
	walDir := filepath.Join(opt.Dir, "wal")
	if err := os.MkdirAll(walDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	// raft-wal's Close leaves its meta store open (and its file locked),
	// so we own the meta store and close it ourselves.
	meta := &metadb.BoltMetaDB{}
	logs, err := wal.Open(walDir, wal.WithLogger(hl.Named("wal")), wal.WithMetaStore(meta))
	if err != nil {
		meta.Close()
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(opt.Dir, 2, hl.Named("snapshots"))
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	adv, err := net.ResolveTCPAddr("tcp", opt.AdvertiseAddr)
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("raft advertise address: %w", err)
	}
	transport, err := raft.NewTCPTransportWithLogger(opt.BindAddr, adv, 5, 10*time.Second, hl.Named("transport"))
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("raft transport: %w", err)
	}

	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(opt.ID)
	conf.Logger = hl
	conf.BatchApplyCh = true
	conf.MaxAppendEntries = 256
	if opt.SnapshotThreshold > 0 {
		conf.SnapshotThreshold = opt.SnapshotThreshold
	}
	if opt.TrailingLogs > 0 {
		conf.TrailingLogs = opt.TrailingLogs
	}
	if opt.Fast {
		conf.HeartbeatTimeout = 400 * time.Millisecond
		conf.ElectionTimeout = 400 * time.Millisecond
		conf.LeaderLeaseTimeout = 200 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
	}
	leaderCh := make(chan bool, 16)
	conf.NotifyCh = leaderCh

	if opt.Bootstrap {
		has, err := raft.HasExistingState(logs, logs, snaps)
		if err != nil {
			transport.Close()
			logs.Close()
			meta.Close()
			return nil, fmt.Errorf("check raft state: %w", err)
		}
		if !has {
			cfg := raft.Configuration{Servers: []raft.Server{{
				Suffrage: raft.Voter, ID: conf.LocalID, Address: transport.LocalAddr(),
			}}}
			if err := raft.BootstrapCluster(conf, logs, logs, snaps, transport, cfg); err != nil {
				transport.Close()
				logs.Close()
				meta.Close()
				return nil, fmt.Errorf("bootstrap raft: %w", err)
			}
		}
	}
	r, err := raft.NewRaft(conf, fsm, logs, logs, snaps, transport)
	if err != nil {
		transport.Close()
		logs.Close()
		meta.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	return &raftNode{raft: r, transport: transport, logs: logs, meta: meta, leaderCh: leaderCh}, nil
}

// Close shuts Raft down and closes its stores.
func (n *raftNode) Close() error {
	err := n.raft.Shutdown().Error()
	if cerr := n.transport.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if cerr := n.logs.Close(); cerr != nil && err == nil && !errors.Is(cerr, os.ErrClosed) {
		err = cerr
	}
	if cerr := n.meta.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}
