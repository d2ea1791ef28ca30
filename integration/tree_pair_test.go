package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTreeSplitPair dumps and restores a parent and child talking over a
// socket pair each holds one end of, with bytes waiting in both
// directions, and a second pair shut down one way: after restore both
// counters carry on with no value lost or repeated (the programs check
// each value), the shut-down pair still reads EOF at the child and fails
// EPIPE at the parent, and the child is still the parent's.
func TestTreeSplitPair(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "treepair"))
	var rep struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &rep)
	t.Cleanup(func() { unix.Kill(rep.Child, unix.SIGKILL) })
	keys := []string{"parent", "child"}
	requireProgress(t, p, keys...)

	dir := dumpKill(t, p)
	waitGone(t, rep.Child)
	img := show(t, dir)
	if n := len(img.Tree.GetSplitPairs()); n != 2 {
		t.Errorf("the image has %d socket pairs split across members, want 2: %v", n, img.Tree.GetSplitPairs())
	}
	for _, sp := range img.Tree.GetSplitPairs() {
		if sp.Maker.Pid != uint32(rep.Pid) || sp.Peer.Pid != uint32(rep.Child) {
			t.Errorf("split pair %v: want it made by the parent pid %d, the peer the child pid %d", sp, rep.Pid, rep.Child)
		}
		m, c := fdIn(img, sp.Maker.Pid, sp.Maker.Fd).GetUnixSocket(), fdIn(img, sp.Peer.Pid, sp.Peer.Fd).GetUnixSocket()
		t.Logf("pair socket:[%d] (parent, %d bytes waiting, shutdown %d) - socket:[%d] (child, %d bytes waiting, shutdown %d)",
			m.GetInode(), len(m.GetData()), m.GetShutdown(), c.GetInode(), len(c.GetData()), c.GetShutdown())
		// The program keeps bytes waiting both ways on the pair it talks
		// over (treepair.c), and the other pair shut down one way.
		switch {
		case m.GetShutdown() == 0 && (len(m.GetData()) == 0 || len(c.GetData()) == 0):
			t.Errorf("pair socket:[%d]-socket:[%d]: want bytes waiting at both ends", m.GetInode(), c.GetInode())
		case m.GetShutdown() != 0 && (m.GetShutdown() != 2 || c.GetShutdown() != 1):
			t.Errorf("pair socket:[%d]-socket:[%d]: shutdown %d and %d, want 2 (SEND) and 1 (RCV)", m.GetInode(), c.GetInode(), m.GetShutdown(), c.GetShutdown())
		}
	}
	rp := restoreFrom(t, p, dir)
	if got := statField(t, rep.Child, 4); got != fmt.Sprint(rep.Pid) {
		t.Errorf("child %d has parent %s after restore, want %d", rep.Child, got, rep.Pid)
	}
	requireProgress(t, rp, keys...)
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// TestTreeSplitPairPython dumps and restores python's
// multiprocessing.Pipe between a parent and a forked Process (a duplex
// Pipe is a socket pair, each process keeping one end), messages in
// flight: the parent's answers go on, each checked by the program, and
// the child is still its child.
func TestTreeSplitPairPython(t *testing.T) {
	t.Parallel()
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on this machine")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", "mppipe.py"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatal(err)
	}
	p := start(t, py, "-u", script)
	var rep struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &rep)
	t.Cleanup(func() { unix.Kill(rep.Child, unix.SIGKILL) })
	requireProgress(t, p, "pipe")
	dir := dumpKill(t, p)
	waitGone(t, rep.Child)
	if n := len(show(t, dir).Tree.GetSplitPairs()); n == 0 {
		t.Errorf("the image has no socket pair split across members")
	}
	rp := restoreFrom(t, p, dir)
	if got := statField(t, rep.Child, 4); got != fmt.Sprint(rep.Pid) {
		t.Errorf("child %d has parent %s after restore, want %d", rep.Child, got, rep.Pid)
	}
	requireProgress(t, rp, "pipe")
	requireProgress(t, rp, "pipe")
	checkSequence(t, rp, "pipe")
	requireRunning(t, rep.Child)
	if s := rp.stderr(); s != "" {
		t.Errorf("the program complains:\n%s", s)
	}
}

// TestTreeSplitPairLazy is TestTreeSplitPair migrated with dump --lazy /
// restore --lazy-from --pidns (the pair's parent is the init of its own
// PID namespace).
func TestTreeSplitPairLazy(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildC(t, "treepair"))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var rep struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &rep)
	keys := []string{"parent", "child"}
	requireProgress(t, p, keys...)
	rp, _ := migrateLazyPIDNS(t, lazyEnv{}, p)
	if n := len(descendants(t, rp.pid)); n != 1 {
		t.Errorf("the restored parent has %d descendants, want 1", n)
	}
	requireProgress(t, rp, keys...)
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}
