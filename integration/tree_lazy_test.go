package integration

import (
	"os/exec"
	"path/filepath"
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
	rp, _ := migrateLazyPIDNS(t, lazyEnv{}, p)
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
