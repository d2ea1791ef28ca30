package migrate

import (
	"testing"

	"github.com/lazycr/lazycr/internal/leakcheck"
)

// TestMain fails the run if a test leaks a goroutine or a file descriptor.
func TestMain(m *testing.M) {
	runFaultingChildIfRequested()
	leakcheck.Main(m)
}
