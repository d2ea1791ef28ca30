package image

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// TestMain fails the run if the tests leave file descriptors open (a
// PagesReader or PagesWriter not closed on some path).
func TestMain(m *testing.M) {
	before := openFds()
	code := m.Run()
	fuzzing := false
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		fuzzing = true // the fuzzing engine keeps its own fds open
	}
	if after := openFds(); code == 0 && !fuzzing && after > before {
		fmt.Fprintf(os.Stderr, "FAIL: %d file descriptors open after the tests, %d before\n", after, before)
		code = 1
	}
	os.Exit(code)
}

func openFds() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}
