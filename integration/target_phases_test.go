package integration

import (
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// targetPhases are points after the resume at which the target lazycr is
// hit, in bytes from the source (of 64 MiB of lazy pages plus a skeleton
// of about 100 KiB).
var targetPhases = []struct {
	name    string
	pauseAt int64
}{
	{"resumed", 1 << 20},
	{"midpush", 32 << 20},
	{"beforedone", 63 << 20},
}

// TestTargetHit: SIGKILL or one SIGINT to the target at each phase after
// the resume. Afterwards exactly one copy lives, with all its memory: after
// SIGINT the restored copy (the transfer finished, the original is gone);
// after SIGKILL the original, kept stopped by the source (the keeper killed
// the copy rather than let it run on zero pages).
func TestTargetHit(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		for _, ph := range targetPhases {
			// One after the other: each moves 64 MiB on a shared machine.
			t.Run(fmt.Sprintf("%s/%s", sig, ph.name), func(t *testing.T) {
				kmsg := kernelLogFromNow(t)
				orig, src, dst, cp := lazyPausedAt(t, "2s", ph.pauseAt, func(dst *lazyRun, pid int) {
					if err := dst.cmd.Process.Signal(sig); err != nil {
						t.Errorf("signal the target: %v", err)
						return
					}
					if sig == syscall.SIGKILL {
						<-dst.done
						return
					}
					if _, err := dst.lineOn(lazycrTimeout, func(l string) bool { return strings.Contains(l, "still being fetched") }); err != nil {
						t.Errorf("the still-being-fetched notice: %v", err)
					}
				})
				if sig == syscall.SIGINT {
					dst.requireExit(t, 0)
					src.requireExit(t, 0)
					requireLazySourceGone(t, orig)
					lazyRequireRounds(t, cp, "verify", 2)
					checkSequence(t, cp, "verify")
					return
				}
				if code := dst.wait(t, lazycrTimeout); code != -1 {
					t.Errorf("target exit %d, want -1 (killed)", code)
				}
				select {
				case <-cp.done:
				case <-time.After(goneTimeout):
					t.Fatalf("the copy pid %d still runs (state %s) without its handler", cp.pid, procState(cp.pid))
				}
				if b, _ := os.ReadFile(orig.errPath); strings.Contains(string(b), "verify FAIL") {
					t.Fatalf("the copy read wrong memory after its handler died:\n%s", b)
				}
				if l := kernelLogLine(t, kmsg, fmt.Sprintf("[%d]: segfault", cp.pid)); l != "" {
					t.Fatalf("the copy crashed on its memory after its handler died: %s", l)
				}
				if _, e := dst.output(); !strings.Contains(e, "killing pid") {
					t.Errorf("nothing on the target's stderr says the copy was killed:\n%s", e)
				}
				if code := src.wait(t, lazycrTimeout); code == 0 {
					t.Errorf("source exit 0 although the target never said DONE")
				}
				requireStoppedOriginal(t, orig)
				// Let it go: it verifies its memory on. Not checkSequence:
				// the killed copy wrote to the same file and may have
				// reported rounds the original now does again.
				if err := syscall.Kill(orig.pid, syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
				requireProgress(t, orig, "verify")
				if b, _ := os.ReadFile(orig.errPath); strings.Contains(string(b), "verify FAIL") {
					t.Fatalf("the original's memory is wrong:\n%s", b)
				}
			})
		}
	}
}

// TestTargetInterruptBeforeResume: SIGINT to the target while it fetches
// the skeleton. Nothing runs here yet, so the restore is rolled back: the
// target exits 1 without a pid and the source releases the original,
// which runs on as before.
func TestTargetInterruptBeforeResume(t *testing.T) {
	t.Parallel()
	orig := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, orig, &r)
	lazyWaitTick(t, orig, "verify", 1)
	progress(t, orig)
	src := startLazySource(t, nil, orig.pid, "127.0.0.1", "--reconnect-timeout", "2s")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var dst *lazyRun
	started := make(chan struct{})
	startPausingProxy(t, ln, func() (net.Conn, error) { return net.Dial("tcp", src.addr) }, lazyCutBeforeResume, func() {
		<-started
		if err := dst.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Errorf("interrupt the target: %v", err)
		}
		<-dst.done
	})
	dst = startLazyTarget(t, nil, ln.Addr().String())
	close(started)
	if code := dst.wait(t, lazycrTimeout); code != 1 {
		o, e := dst.output()
		t.Errorf("target exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, o, e)
	}
	if o, _ := dst.output(); o != "" {
		t.Errorf("target printed %q on stdout: it resumed a process", o)
	}
	requireLazyReleased(t, src, orig)
}
