package exec

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"testing"

	"github.com/caravan-sched/caravan/internal/supervisor"
)

// superviseEnv makes the test binary act as `caravan supervise`, so the
// driver's tests need no build of the whole caravan binary.
const superviseEnv = "CARAVAN_TEST_SUPERVISE"

func TestMain(m *testing.M) {
	if os.Getenv(superviseEnv) == "1" {
		os.Exit(runSupervisor(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// runSupervisor is main for `<test binary> supervise --handshake-fd N SPEC`.
func runSupervisor(args []string) int {
	if len(args) != 4 || args[0] != "supervise" || args[1] != "--handshake-fd" {
		return 2
	}
	fd, err := strconv.Atoi(args[2])
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := supervisor.Run(ctx, args[3], os.NewFile(uintptr(fd), "handshake"), logger); err != nil {
		return 1
	}
	return 0
}
