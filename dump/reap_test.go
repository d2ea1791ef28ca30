package dump

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestDumpOwnChildNotWaited: a process dumped by its own parent (a program
// using this package) must not make Dump wait for the caller to reap it:
// the tracer thread, one of the caller's, reaps it when it kills it. The
// test fails if Dump sits out its reap timeout.
func TestDumpOwnChildNotWaited(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("dumping a process needs root (ptrace)")
	}
	cmd := exec.Command("/bin/sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		if cmd.Wait() != nil {
			// The tracer, a thread of this process, may have reaped it
			// (wait4 on the killed tracee): free the handle.
			cmd.Process.Release()
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := Dump(context.Background(), Options{
			PID: cmd.Process.Pid, Dir: filepath.Join(t.TempDir(), "img"), Mode: ModeKill,
			ReapTimeout: time.Hour, Log: zerolog.New(zerolog.NewTestWriter(t)),
		})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute): // a deadline far below ReapTimeout, not a measurement
		t.Fatal("Dump of our own child waits for us to reap it")
	}
}
