package integration

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ptyNumbers is held while a test makes a pty (openPty), and by a test
// whose dump frees a pty number its restore must get again: a pty made
// meanwhile by a parallel test would take that number (devpts hands out
// the lowest free one) and the restore would rightly refuse ("is in use
// here"; TestTmuxServerRestored failed so in 3 of 3 runs next to the tty
// tests).
var ptyNumbers sync.Mutex

// TestPtyPairRestored: a pty whose master and slave the tree holds (as
// tmux, script or sshd hold theirs) was refused ("a pseudo-terminal
// master"); it is made again with the same number, settings and window,
// the slave is again the controlling terminal of the child's session with
// the grandchild's group in the foreground, and ping/pong goes on through
// it (ptypair.c checks each from inside).
func TestPtyPairRestored(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "ptypair")
	ptyNumbers.Lock()
	defer ptyNumbers.Unlock()
	p := startTicking(t, start, "ok", 1, bin)
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")
}

// TestTmuxServerRestored: a tmux server (it holds each pane's pty master;
// the pane's shell leads a session on the slave) is dumped and restored:
// the pane's loop goes on on the same /dev/pts/N, which it checks itself
// every round, and the restored server still takes clients (a new pane).
func TestTmuxServerRestored(t *testing.T) {
	needRoot(t)
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("tmux is not installed (scripts/test.sh installs it)")
	}
	t.Parallel()
	ptyNumbers.Lock()
	defer ptyNumbers.Unlock()
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The pane says "tick N /dev/pts/K" every 50 ms, or "bad N" once its
	// terminal's name changed.
	loop := `first=$(tty); i=0; while :; do i=$((i+1)); if [ "$(tty)" = "$first" ]; then echo "tick $i $first"; else echo "bad $i $(tty) was $first"; fi; sleep 0.05; done`
	run("new-session", "-d", "-s", "s", "-x", "100", "-y", "30", "bash", "-c", loop)
	t.Cleanup(func() { exec.Command(tmux, "-S", sock, "kill-server").Run() })
	pid, err := strconv.Atoi(strings.TrimSpace(run("display-message", "-p", "#{pid}")))
	if err != nil {
		t.Fatalf("tmux server pid: %v", err)
	}
	last := func() (n int, line string) {
		t.Helper()
		for l := range strings.Lines(run("capture-pane", "-p", "-t", "s")) {
			l = strings.TrimSpace(l)
			if strings.HasPrefix(l, "bad ") {
				t.Fatalf("the pane's terminal changed: %q", l)
			}
			var k int
			var tty string
			if _, err := fmt.Sscanf(l, "tick %d %s", &k, &tty); err == nil && k > n {
				n, line = k, l
			}
		}
		return n, line
	}
	waitTick := func(after int) string {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			n, l := last()
			if n > after {
				return l
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pane printed no tick after %d in 20s:\n%s", after, run("capture-pane", "-p", "-t", "s"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	before := waitTick(2)
	dir := filepath.Join(t.TempDir(), "img")
	if out, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir); code != 0 {
		t.Fatalf("dump of the tmux server pid %d: exit %d\n%s\n%s", pid, code, out, errOut)
	}
	waitGone(t, pid)
	if out, errOut, code := runLazycr(t, "restore", "-D", dir); code != 0 {
		t.Fatalf("restore of the tmux server: exit %d\n%s\n%s", code, out, errOut)
	}
	n, _ := last()
	after := waitTick(n)
	if bf, af := strings.Fields(before), strings.Fields(after); bf[2] != af[2] {
		t.Errorf("the pane's terminal was %s, is %s", bf[2], af[2])
	}
	run("split-window", "-t", "s", "sleep 1000")
	if panes := strings.Count(run("list-panes", "-t", "s"), "\n"); panes != 2 {
		t.Errorf("after split-window the restored server lists %d panes, want 2", panes)
	}
}

// TestEINTRAfterFreeze: threads blocked in the calls that fail EINTR
// after any stop, even without a handler (epoll_wait, epoll_pwait,
// sigwaitinfo, sigtimedwait, accept/recv/read with SO_RCVTIMEO; signal(7)),
// stay blocked across a dump that leaves the process running and across a
// dump and restore: the freeze made each fail EINTR (eintr.c exited "FAIL
// epoll_wait returned (Interrupted system call)").
func TestEINTRAfterFreeze(t *testing.T) {
	t.Parallel()
	p := startTicking(t, start, "ok", 1, buildC(t, "eintr"))
	if out, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", filepath.Join(t.TempDir(), "img"), "--leave-running"); code != 0 {
		t.Fatalf("dump --leave-running: exit %d\n%s\n%s", code, out, errOut)
	}
	requireProgress(t, p, "ok")
	dir := dumpKill(t, p)
	r := restoreFrom(t, p, dir)
	requireProgress(t, r, "ok")
}
