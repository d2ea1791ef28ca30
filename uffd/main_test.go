package uffd

import (
	"testing"

	"github.com/lazycr/lazycr/internal/leakcheck"
)

// TestMain fails the run if a test leaks a goroutine or an fd.
func TestMain(m *testing.M) {
	runChildIfRequested()
	leakcheck.Main(m)
}
