package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLazySourceInterruptedBeforeTarget: dump --lazy of a process the user
// had stopped (state T), interrupted before any target came: the error says
// no target came (no meaningless "session 0x0") and that the process stays
// stopped as it was (not "keeps running"), and it does.
func TestLazySourceInterruptedBeforeTarget(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "4")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	if err := syscall.Kill(p.pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(lazycrTimeout)
	for procState(p.pid) != "T" {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: state %s after SIGSTOP, want T", p.pid, procState(p.pid))
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	if err := src.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	src.requireExit(t, 1)
	_, e := src.output()
	for _, want := range []string{"interrupted", "wait for a target to connect", "stays stopped"} {
		if !strings.Contains(e, want) {
			t.Errorf("source stderr does not say %q:\n%s", want, e)
		}
	}
	for _, bad := range []string{"0x0", "keeps running"} {
		if strings.Contains(e, bad) {
			t.Errorf("source stderr says %q:\n%s", bad, e)
		}
	}
	if st := procState(p.pid); st != "T" {
		t.Errorf("pid %d: state %s after the interrupted dump, want T as before", p.pid, st)
	}
	if err := syscall.Kill(p.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	requireProgress(t, p, "verify")
	checkSequence(t, p, "verify")
}
