package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of a lazily migrated process that ends on the target while
// most of its memory is still on the source (QA finding Q13). That is a
// finished migration: the source kills the original (which must never run
// the program's post-checkpoint work a second time), both halves exit 0.

// startLazyExit starts lazy_exit (256 MiB) in mode, freezes it with dump
// --lazy, creates its go file while it is frozen (so only the migrated copy
// sees it) and starts the target. It returns the original, the source, the
// target and the restored pid.
func startLazyExit(t *testing.T, mode string) (*proc, *lazySource, *lazyRun, int) {
	t.Helper()
	gofile := filepath.Join(t.TempDir(), "go")
	p := start(t, buildC(t, "lazy_exit"), "256", mode, gofile)
	var r struct {
		Pid   int    `json:"pid"`
		Pages uint64 `json:"pages"`
	}
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "ready", 1)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	if err := os.WriteFile(gofile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := startLazyTarget(t, nil, src.addr)
	pid := lazyResumedPID(t, dst)
	t.Logf("pid %d resumed as pid %d", p.pid, pid)
	return p, src, dst, pid
}

// countLines counts the lines of p's output equal to line.
func countLines(t *testing.T, p *proc, line string) int {
	t.Helper()
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if l == line {
			n++
		}
	}
	return n
}

var lazyExitedRE = regexp.MustCompile(`pid (\d+) exited \(status (\d+)\) before its last (\d+) pages were needed`)

// TestLazyExitDuringPush: the copy checks a few pages and exits with status
// 7 right after the resume, with most of its 256 MiB still on the source.
// The target says so and exits 0, the source kills the original and exits
// 0, and the program ran its post-checkpoint work once.
func TestLazyExitDuringPush(t *testing.T) {
	orig, src, dst, pid := startLazyExit(t, "quit")
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, orig)
	_, e := dst.output()
	m := lazyExitedRE.FindStringSubmatch(e)
	if m == nil || m[1] != fmt.Sprint(pid) || m[2] != "7" {
		t.Fatalf("target stderr does not say pid %d exited (status 7) before its last pages were needed:\n%s", pid, e)
	}
	t.Logf("target: %s", m[0])
	if o, _ := src.output(); !strings.Contains(o, "the migrated process exited on the target") {
		t.Errorf("source stdout does not say the migrated process exited on the target:\n%s", o)
	}
	if b, _ := os.ReadFile(orig.errPath); len(b) > 0 {
		t.Errorf("the program's stderr:\n%s", b)
	}
	if n := countLines(t, orig, "tick ran 1"); n != 1 {
		t.Errorf("the program ran its post-checkpoint work %d times, want once", n)
	}
}

// TestLazyExitExec: the copy runs another program (execve) right after the
// resume: its old memory is needed by nobody. A finished migration too,
// and the new program runs on (it is not reported as exited).
func TestLazyExitExec(t *testing.T) {
	orig, src, dst, pid := startLazyExit(t, "exec")
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, orig)
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	if strings.Contains(e, "exited (") {
		t.Errorf("target says pid %d exited; it runs another program:\n%s", pid, e)
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || !strings.HasPrefix(string(b), "sleep\x00600") {
		t.Errorf("pid %d runs %q (%v), want sleep 600", pid, b, err)
	}
}

// TestLazyExitParentForked: the daemon pattern. The copy forks and its
// parent exits at once; the child then reads all of its 256 MiB. The child
// is served to the end (every word right), the target exits 0, the source
// kills the original and exits 0, and there is exactly one child.
func TestLazyExitParentForked(t *testing.T) {
	orig, src, dst, _ := startLazyExit(t, "fork")
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, orig)
	childPID := int(progress(t, orig)["child"])
	if childPID <= 0 {
		t.Fatalf("the copy did not report its child")
	}
	child := adopt(t, childPID)
	t.Cleanup(func() { unix.Kill(childPID, unix.SIGKILL) })
	child.continueOutput(orig, true)
	lazyWaitTick(t, child, "verified", 1)
	requireProgress(t, child, "alive")
	if b, _ := os.ReadFile(orig.errPath); len(b) > 0 {
		t.Errorf("the program's stderr:\n%s", b)
	}
	if n := countLines(t, orig, "tick verified 1"); n != 1 {
		t.Errorf("%d copies of the child verified their memory, want one", n)
	}
	_, e := dst.output()
	t.Logf("target:\n%s", e)
}

// TestLazyExitParentForkedHandlerKilled: the daemon pattern, then the
// target lazycr (the lazy-pages handler) is SIGKILLed while the child still
// waits to read its memory, most of which is on the source (the push is
// paused). The child is no longer the restored process's descendant, yet
// the keeper must not let it run on zero pages: it is killed, loudly, and
// never reports its memory (right or wrong).
func TestLazyExitParentForkedHandlerKilled(t *testing.T) {
	gofile := filepath.Join(t.TempDir(), "go")
	orig := start(t, buildC(t, "lazy_exit"), "256", "forkwait", gofile)
	var r struct {
		Pid   int    `json:"pid"`
		Pages uint64 `json:"pages"`
	}
	waitReport(t, orig, &r)
	lazyWaitTick(t, orig, "ready", 1)
	src := startLazySource(t, nil, orig.pid, "127.0.0.1", "--reconnect-timeout", "2s")
	if err := os.WriteFile(gofile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var dst *lazyRun
	var cp *proc
	childPID := 0
	hooked := make(chan struct{})
	startPausingProxy(t, ln, func() (net.Conn, error) { return net.Dial("tcp", src.addr) }, 4<<20, func() {
		defer close(hooked)
		<-ready
		// The copy forks and exits at once; its child waits for go2.
		select {
		case <-cp.done:
		case <-time.After(lazycrTimeout):
			t.Errorf("the copy pid %d did not exit after forking", cp.pid)
			return
		}
		childPID = int(progress(t, orig)["child"])
		if childPID <= 0 {
			t.Errorf("the copy did not report its child")
			return
		}
		t.Cleanup(func() { unix.Kill(childPID, unix.SIGKILL) })
		pidfd, err := unix.PidfdOpen(dst.cmd.Process.Pid, 0)
		if err != nil {
			t.Errorf("pidfd of the target: %v", err)
			return
		}
		defer unix.Close(pidfd)
		if err := dst.cmd.Process.Kill(); err != nil {
			t.Errorf("kill the target: %v", err)
			return
		}
		// Its stderr stays open in the keeper: wait for the target itself.
		if _, err := unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, int(lazycrTimeout.Milliseconds())); err != nil {
			t.Errorf("wait for the target's end: %v", err)
		}
		if err := os.WriteFile(gofile+"2", nil, 0o600); err != nil {
			t.Error(err)
		}
	})
	dst = startLazyTarget(t, nil, ln.Addr().String(), "--reconnect-timeout", "60s")
	cp = adopt(t, lazyResumedPID(t, dst))
	close(ready)
	<-hooked
	if t.Failed() {
		return
	}
	waitGone(t, childPID)
	if code := dst.wait(t, lazycrTimeout); code != -1 {
		t.Errorf("target exit %d, want -1 (killed)", code)
	}
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	if b, _ := os.ReadFile(orig.errPath); len(b) > 0 {
		t.Errorf("the program's stderr (the child read its memory without its handler):\n%s", b)
	}
	if n := countLines(t, orig, "tick verified 1"); n != 0 {
		t.Errorf("the child verified its memory %d times without its handler", n)
	}
	if !strings.Contains(e, fmt.Sprintf("pid %d", childPID)) || !strings.Contains(e, "keeper") {
		t.Errorf("nothing on the target's stderr says the keeper killed the child pid %d:\n%s", childPID, e)
	}
	// The source gives up on the target and keeps the original stopped.
	if code := src.wait(t, lazycrTimeout); code == 0 {
		t.Errorf("source exit 0 although the target never said DONE")
	}
	requireStoppedOriginal(t, orig)
}
