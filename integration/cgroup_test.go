package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testCgroup makes an empty cgroup for the test in the pids hierarchy
// (cgroup v1) or the unified one, removed at the end; it returns its
// directory and its path in the hierarchy.
func testCgroup(t *testing.T) (dir, path string) {
	t.Helper()
	base := "/sys/fs/cgroup/pids"
	if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
		base = "/sys/fs/cgroup"
		if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err != nil {
			t.Skip("no pids cgroup hierarchy and no cgroup2 at /sys/fs/cgroup")
		}
	}
	path = fmt.Sprintf("/lazycr-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	dir = filepath.Join(base, path)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("make a cgroup: %v", err)
	}
	t.Cleanup(func() { // after the test's processes are gone: rmdir fails EBUSY until then
		deadline := time.Now().Add(goneTimeout)
		for err := os.Remove(dir); err != nil && !os.IsNotExist(err) && time.Now().Before(deadline); err = os.Remove(dir) {
			time.Sleep(5 * time.Millisecond) // poll interval
		}
	})
	return dir, path
}

// inCgroup reports whether /proc/PID/cgroup lists path.
func inCgroup(t *testing.T, pid int, path string) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, ":"+path) {
			return true
		}
	}
	return false
}

// TestCgroupKept: a process a harness put into a cgroup of its own is
// restored in that cgroup (QA3 R8: it came back in lazycr's, its limits
// gone, silently); when the cgroup was removed meanwhile, restore says so,
// naming it, and the process runs in lazycr's.
func TestCgroupKept(t *testing.T) {
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	for _, removed := range []bool{false, true} {
		t.Run(fmt.Sprintf("removed=%v", removed), func(t *testing.T) {
			dir, path := testCgroup(t)
			p := startCmd(t, exec.Command(py, "-u", "-c", clockProg))
			if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.pid)), 0); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the clock loop", func() bool { return clockLines(t, p.outPath) > 2 })
			img := dumpKill(t, p)
			if removed {
				if err := os.Remove(dir); err != nil {
					t.Fatal(err)
				}
			}
			o, e, code := runLazycr(t, "restore", "-D", img)
			if code != 0 {
				t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
			}
			q := adopt(t, p.pid)
			if got := inCgroup(t, q.pid, path); got == removed {
				b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", q.pid))
				t.Errorf("restored pid %d in %s: %v, want %v; it is in:\n%s", q.pid, path, got, !removed, b)
			}
			if said := strings.Contains(e, "was in cgroup ") && strings.Contains(e, path+", which does not exist here"); said != removed {
				t.Errorf("restore names the missing cgroup %s: %v, want %v:\n%s", path, said, removed, e)
			}
			n := clockLines(t, p.outPath)
			waitFor(t, "the loop to go on after the restore", func() bool { return clockLines(t, p.outPath) > n+2 })
		})
	}
}
