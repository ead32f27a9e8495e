package server

import "fmt"

// Snapshot makes Raft take a snapshot of the state now and compact its
// log, as it does by itself every raft_snapshot_threshold entries. A
// restart then restores the snapshot and applies only the entries after
// it.
func (s *Server) Snapshot() error {
	if err := s.raft.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("raft snapshot: %w", err)
	}
	return nil
}
