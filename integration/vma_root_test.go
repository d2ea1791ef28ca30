package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// The root directory (chroot(2)): rootcheck chroots into a directory of
// its own, in one scenario enters it and in two has it removed, and keeps
// checking its root and current directory. Before, a removed root failed
// the restore (chroot of "DIR/r (deleted)": no such file) after the dump
// had killed the process, and the current directory, entered after the
// chroot by the dumper's path, was not found inside the new root.

func startRootcheck(t *testing.T, bin, scenario string, startProg func(*testing.T, string, ...string) *proc) *proc {
	t.Helper()
	p := startProg(t, bin, scenario, t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	return p
}

// requireSameRoot checks that pid's /proc/PID/root and cwd read as want's.
func requireSameRoot(t *testing.T, pid int, want [2]string) {
	t.Helper()
	if got := readRoot(t, pid); got != want {
		t.Errorf("pid %d: root and cwd %q, the original had %q", pid, got, want)
	}
}

func readRoot(t *testing.T, pid int) [2]string {
	t.Helper()
	var out [2]string
	for i, l := range []string{"root", "cwd"} {
		s, err := os.Readlink(fmt.Sprintf("/proc/%d/%s", pid, l))
		if err != nil {
			t.Fatal(err)
		}
		out[i] = s
	}
	return out
}

var rootScenarios = []string{"live", "deleted", "escaped"}

func TestRootRestore(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "rootcheck")
	for _, sc := range rootScenarios {
		t.Run(sc, func(t *testing.T) {
			p := startRootcheck(t, bin, sc, start)
			was := readRoot(t, p.pid)
			rp := restoreFrom(t, p, dumpKill(t, p))
			requireProgress(t, rp, "ok")
			checkSequence(t, rp, "ok")
			requireSameRoot(t, rp.pid, was)
		})
	}
}

func TestRootLazy(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "rootcheck")
	env := lazyEnv{}
	for _, sc := range rootScenarios {
		t.Run(sc, func(t *testing.T) {
			p := startRootcheck(t, bin, sc, env.startProg)
			was := readRoot(t, p.pid)
			m := migrateLazy(t, env, p, nil, nil)
			requireProgress(t, m.restored, "ok")
			checkSequence(t, m.restored, "ok")
			requireSameRoot(t, m.restored.pid, was)
		})
	}
}

// TestRootRefused: a removed current directory that lies inside the
// removed root, or is another directory of the root's path, cannot be made
// again: the dump names it and the process keeps running.
func TestRootRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "rootcheck")
	for _, tc := range []struct{ scenario, pattern string }{
		{"inside", `unsupported: the removed current directory /\S+/r/sub \(deleted\) lies inside the removed root directory /\S+/r`},
		{"twins", `unsupported: the removed root directory /\S+/r and the removed current directory are two directories of one path`},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			p := startRootcheck(t, bin, tc.scenario, start)
			dir := filepath.Join(t.TempDir(), "img")
			_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
			requireExit1(t, "dump of "+tc.scenario, errOut, code, tc.pattern)
			requireProgress(t, p, "ok")
		})
	}
}
