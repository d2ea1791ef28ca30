package integration

import (
	"fmt"
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
