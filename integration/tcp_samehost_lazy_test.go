package integration

import (
	"strings"
	"testing"
)

// TestTCPSameHostLazyRefused: a lazy migration on one host (--new-pid) of
// a process with a loopback TCP connection both ends of which are its own
// cannot rebuild the connection while the frozen original holds its
// 4-tuple: the target refuses it before building anything, saying why and
// what to do instead (QA2 Q2; migrate's checkConnectionsFree), and the
// original is released and runs on with its connection, both ends of
// which still carry their bytes.
func TestTCPSameHostLazyRefused(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "tcpself")
	progress(t, p)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr)
	dst.requireExit(t, 1)
	_, e := dst.output()
	for _, want := range []string{"the connection still exists in this network namespace", "a lazy migration cannot move an established connection within one network namespace", "use dump -D"} {
		if !strings.Contains(e, want) {
			t.Errorf("target stderr lacks %q:\n%s", want, e)
		}
	}
	src.requireExit(t, 1)
	if _, se := src.output(); !strings.Contains(se, "released") {
		t.Errorf("source stderr does not say the process was released:\n%s", se)
	}
	requireProgress(t, p, "wait")
	requireUnixFixChecks(t, p)
}
