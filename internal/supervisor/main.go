package supervisor

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

// Main runs `supervise --handshake-fd N SPEC` from its arguments (without
// the program name) and returns the exit code: 2 for arguments it does not
// take, 1 when Run fails. Test binaries that stand in for the caravan
// binary as the exec driver's supervisor, and the supervisor built alone,
// call it from main.
func Main(args []string) int {
	if len(args) != 4 || args[0] != "supervise" || args[1] != "--handshake-fd" {
		return 2
	}
	fd, err := strconv.Atoi(args[2])
	if err != nil || fd < 3 {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, args[3], os.NewFile(uintptr(fd), "handshake"), slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		return 1
	}
	return 0
}
