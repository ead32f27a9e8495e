package exec

import (
	"os"
	"testing"

	"github.com/caravan-sched/caravan/internal/supervisor"
)

// superviseEnv makes the test binary act as `caravan supervise`, so the
// driver's tests need no build of the whole caravan binary.
const superviseEnv = "CARAVAN_TEST_SUPERVISE"

func TestMain(m *testing.M) {
	if os.Getenv(superviseEnv) == "1" {
		os.Exit(supervisor.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}
