package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestTreeLazyPIDNS migrates the self-checking tree, the init of its own
// PID namespace, with dump --lazy / restore --lazy-from --pidns: the
// root's memory is served lazily, the members' comes in the skeleton. The
// tree's checks must keep holding (pids, parents, sessions, groups, the
// pipe's data, the shared offset), and the frozen original must be gone.
func TestTreeLazyPIDNS(t *testing.T) {
	t.Parallel()
	cmd := lazyTreeCmd(t)
	p := startCmd(t, cmd)
	var r struct {
		Pid int `json:"pid"`
		C1  int `json:"c1"`
		C2  int `json:"c2"`
		G   int `json:"g"`
	}
	waitReport(t, p, &r)
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "pipe", "file"}
	requireProgress(t, p, keys...)
	orig := descendants(t, p.pid)

	progress(t, p)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	args := []string{"restore", "--lazy-from", src.addr, "--pidns"}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, nil, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) }) // the namespace's init: the rest goes with it
	p.mu.Lock()
	rp.outPath, rp.errPath, rp.off = p.outPath, p.errPath, p.off
	for k, v := range p.ticks {
		rp.ticks[k] = v
	}
	p.mu.Unlock()
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	for _, pid := range orig {
		waitGone(t, pid)
	}
	if n := len(descendants(t, rp.pid)); n != 3 {
		t.Errorf("the restored root has %d descendants, want 3", n)
	}
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// lazyTreeCmd is treecheck as the init of a new PID namespace.
func lazyTreeCmd(t *testing.T) *exec.Cmd {
	cmd := exec.Command(buildC(t, "treecheck"), filepath.Join(t.TempDir(), "records"))
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	return cmd
}
