package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQA2LazyExecDuringPush: a process migrated post-copy that execs
// another program while most of its 256 MiB are still on the source is a
// finished migration: both lazycr exit 0, the original is killed and the
// copy runs the new program.
//
// Before the fix of QA2 finding Q13 the target saw the old address space
// go away, reported "pid N gone with M pages not installed" and exited 1,
// and the source kept the original stopped.
func TestQA2LazyExecDuringPush(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bin := buildC(t, "qa2_execlazy")
	gofile := filepath.Join(t.TempDir(), "go")
	p := start(t, bin, "256", gofile)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr)
	rp := adopt(t, lazyResumedPID(t, dst))
	if err := os.WriteFile(gofile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	deadline := time.Now().Add(lazycrTimeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", rp.pid))
		if err != nil {
			t.Fatalf("restored pid %d: %v", rp.pid, err)
		}
		if strings.HasPrefix(string(b), "sleep\x00") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restored pid %d runs %q, want the exec'd sleep", rp.pid, b)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	requireRunning(t, rp.pid)
}
