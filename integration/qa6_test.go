package integration

import (
	"strings"
	"syscall"
	"testing"
)

// TestQA6OriginalKilledBeforeTarget: the frozen original is killed on the
// source (kill -9 by someone else) before any target came. The source
// notices, ends at once and says the process died; it used to serve the
// dead process until a target came, then failed it and said "pid N
// released, it keeps running".
func TestQA6OriginalKilledBeforeTarget(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "4")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	if err := syscall.Kill(p.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	src.requireExit(t, 1)
	_, e := src.output()
	if !strings.Contains(e, "died on this host") || strings.Contains(e, "keeps running") {
		t.Errorf("source stderr does not say the original died (or says it keeps running):\n%s", e)
	}
}
