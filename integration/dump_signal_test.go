package integration

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSignalDuringDumpDelivered (F14): SIGUSR1 and SIGRTMIN sent to a
// process while `lazycr dump --leave-running` has it frozen are each
// delivered once after the release (they were swallowed before).
func TestSignalDuringDumpDelivered(t *testing.T) {
	t.Parallel()
	signalDuringDump(t, true)
}

// TestSignalDuringKillDumpRefused (F14): the same during a plain dump,
// which would kill the process: the image does not have the signals, so
// the dump fails (exit 1, no image left), and the released process takes
// each once.
func TestSignalDuringKillDumpRefused(t *testing.T) {
	t.Parallel()
	signalDuringDump(t, false)
}

func signalDuringDump(t *testing.T, leaveRunning bool) {
	needRoot(t)
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	p := start(t, buildC(t, "sigcount"), "256")
	var r struct {
		Pid   int `json:"pid"`
		RTMin int `json:"rtmin"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "loop")

	var extra []string
	if leaveRunning {
		extra = append(extra, "--leave-running")
	}
	// Signal once the frozen process's pages are being written: after the
	// dump's injected syscalls that read its state, before the release.
	d := startDumpWriting(t, p.pid, extra...)
	exited, stderr, dir := d.exited, &d.stderr, d.dir
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(p.pid, unix.Signal(r.RTMin)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		switch {
		case leaveRunning && err != nil:
			t.Fatalf("dump: %v\n%s", err, stderr.String())
		case !leaveRunning && (!errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "signal arrived")):
			t.Fatalf("plain dump with a signal during the freeze: %v, want exit 1 naming the signal\n%s", err, stderr.String())
		}
	case <-time.After(lazycrTimeout):
		t.Fatalf("dump still running after %v", lazycrTimeout)
	}
	if !leaveRunning {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("image directory %s left behind (%v)", dir, err)
		}
	}
	requireRunning(t, p.pid)
	waitTick(t, p, "usr1", 1)
	waitTick(t, p, "rt", 1)
	waitTick(t, p, "loop", progress(t, p)["loop"]+2) // then a few more rounds
	if got := progress(t, p); got["usr1"] != 1 || got["rt"] != 1 {
		t.Errorf("deliveries usr1 %d rt %d, want 1 each", got["usr1"], got["rt"])
	}
}
