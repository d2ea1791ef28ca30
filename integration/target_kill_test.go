package integration

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestTargetKilledMidPush: the target lazycr (the lazy-pages handler) is
// SIGKILLed while most of the process's memory is still on the source. The
// kernel drops a userfaultfd's ranges when its last reference closes, and
// later faults there read zero pages: the copy must never run on them. It
// must be dead, with a log line saying why, and never report a wrong page.
func TestTargetKilledMidPush(t *testing.T) {
	t.Parallel()
	var killedAt time.Time
	orig, _, dst, cp := interruptMidFetch(t, func(dst *lazyRun, pid int) {
		killedAt = time.Now()
		if err := dst.cmd.Process.Kill(); err != nil {
			t.Errorf("kill the target: %v", err)
		}
		<-dst.done
	})
	if code := dst.wait(t, lazycrTimeout); code != -1 {
		t.Errorf("target exit %d, want -1 (killed)", code)
	}
	select {
	case <-cp.done:
		t.Logf("the copy pid %d died %v after its handler", cp.pid, time.Since(killedAt).Round(time.Millisecond))
	case <-time.After(goneTimeout):
		t.Fatalf("the copy pid %d still runs (state %s) without its handler", cp.pid, procState(cp.pid))
	}
	if b, _ := os.ReadFile(orig.errPath); strings.Contains(string(b), "verify FAIL") {
		t.Fatalf("the copy read wrong memory after its handler died:\n%s", b)
	}
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	if b, _ := os.ReadFile(orig.errPath); len(b) > 0 {
		t.Logf("the program's stderr:\n%s", b)
	}
	if !strings.Contains(e, "handler") || !strings.Contains(e, "killing pid") {
		t.Errorf("nothing on the target's stderr says the copy was killed because its handler died:\n%s", e)
	}
}
