package cgroup

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// killPause is how long Kill waits between looks at the group.
const killPause = 10 * time.Millisecond

// Kill sends SIGKILL to every process in the group, double-forked daemons
// included, and waits until the group is empty or ctx ends. On v2 it writes
// cgroup.kill where the kernel has it; elsewhere it freezes the group (so
// nothing can fork or exit meanwhile), signals every process, thaws it, and
// repeats while processes remain. A group that is gone is empty.
func (g *Group) Kill(ctx context.Context) error {
	const maxRounds = 6000 // a minute of killPause; ctx usually ends first
	for round := range maxRounds {
		pids, err := g.Pids()
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		// Signal at once, then again every 10 rounds while something is
		// left (a process that was forking when we looked).
		if round%10 == 0 {
			if err := g.killOnce(); err != nil {
				return fmt.Errorf("kill cgroup %s: %w", g.name, err)
			}
		}
		t := time.NewTimer(killPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("kill cgroup %s: %d processes left: %w", g.name, len(pids), ctx.Err())
		case <-t.C:
		}
	}
	return fmt.Errorf("kill cgroup %s: processes left after %d rounds", g.name, maxRounds)
}

// killOnce sends SIGKILL to everything in the group once.
func (g *Group) killOnce() error {
	done, err := g.b.killAll()
	if done || err != nil {
		return err
	}
	// A freeze that fails or times out still lets us signal what is there;
	// the next round catches the rest.
	_ = g.b.freeze(true)
	pids, err := g.b.pids()
	if err == nil {
		for _, pid := range pids {
			if e := syscall.Kill(pid, syscall.SIGKILL); e != nil && !errors.Is(e, syscall.ESRCH) {
				err = fmt.Errorf("signal %d: %w", pid, e)
			}
		}
	}
	if thawErr := g.b.freeze(false); thawErr != nil {
		return fmt.Errorf("thaw: %w", thawErr)
	}
	return err
}
