package server

import (
	"testing"

	"github.com/caravan-sched/caravan/internal/testenv"
)

// TestMain fails the package when a server's goroutines outlive its test.
func TestMain(m *testing.M) { testenv.MainWithLeakCheck(m) }
