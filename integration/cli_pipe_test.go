package integration

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

// TestStdoutReaderGone: lazycr whose stdout reader went away (a harness
// that read what it needed and closed the pipe) ends with its own exit
// status, not killed by SIGPIPE (exit 141 in a shell), so a migration
// that succeeded is not reported as failed.
func TestStdoutReaderGone(t *testing.T) {
	needRoot(t)
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // nobody reads: every write to w is EPIPE (or SIGPIPE)
	defer w.Close()
	cmd := exec.Command(lazycrPath, "version")
	cmd.Stdout = w
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("lazycr version with its stdout reader gone: %v (want exit 0: a write nobody reads is not fatal)", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}
