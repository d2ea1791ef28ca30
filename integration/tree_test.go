package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTreeRestore dumps and restores a C process tree (root, two children,
// a grandchild; a child leading its own group, another its own session; a
// pipe between two members with data buffered in it; a file description
// shared by three members) that checks itself: after restore every member
// must have its pid, parent, session and group, the pipe must carry on
// with no value lost, and the shared offset must keep records from
// overwriting each other.
func TestTreeRestore(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "treecheck")
	p := start(t, bin, filepath.Join(t.TempDir(), "records"))
	var r struct {
		Pid int `json:"pid"`
		C1  int `json:"c1"`
		C2  int `json:"c2"`
		G   int `json:"g"`
	}
	waitReport(t, p, &r)
	members := map[int]int{r.C1: r.Pid, r.C2: r.Pid, r.G: r.C1} // pid → parent
	t.Cleanup(func() {
		for pid := range members {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	keys := []string{"root:ok", "c1:ok", "c2:ok", "g:ok", "pipe", "file"}
	requireProgress(t, p, keys...)

	dir := dumpKill(t, p)
	for pid := range members {
		waitGone(t, pid)
	}
	rp := restoreFrom(t, p, dir)
	if rp.pid != r.Pid {
		t.Fatalf("root restored as pid %d, want %d", rp.pid, r.Pid)
	}
	for pid, parent := range members {
		if got := statField(t, pid, 4); got != fmt.Sprint(parent) {
			t.Errorf("pid %d has parent %s after restore, want %d", pid, got, parent)
		}
	}
	requireProgress(t, rp, keys...)
	checkSequence(t, rp, keys...)
	if s := rp.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
}

// statField returns field n (1-based, as proc(5) numbers them; n >= 3)
// of /proc/PID/stat.
func statField(t *testing.T, pid, n int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || n < 3 || n-3 >= len(f) {
		t.Fatalf("pid %d: no stat field %d in %q", pid, n, b)
	}
	return f[n-3]
}

// TestTreeZombie dumps a process whose child has exited (status 3) and is
// not reaped yet: after restore the child is again its zombie, with the
// same pid and exit status, and the parent runs on.
func TestTreeZombie(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "zombie"))
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	deadline := time.Now().Add(reportTimeout)
	for procState(r.Child) != "Z" {
		if time.Now().After(deadline) {
			t.Fatalf("child %d is in state %q, not a zombie", r.Child, procState(r.Child))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	requireProgress(t, p, "main", "chld1")
	dir := dumpKill(t, p)
	waitGone(t, r.Child) // orphaned by the kill: PID 1 reaps it
	rp := restoreFrom(t, p, dir)
	if procState(r.Child) != "Z" || statField(t, r.Child, 4) != fmt.Sprint(r.Pid) {
		t.Fatalf("child %d after restore: state %q, parent %s; want a zombie of %d", r.Child, procState(r.Child), statField(t, r.Child, 4), r.Pid)
	}
	if got := statField(t, r.Child, 52); got != fmt.Sprint(3<<8) {
		t.Errorf("zombie %d has exit code %s, want %d", r.Child, got, 3<<8)
	}
	// The parent counted one SIGCHLD before the dump; the exit that
	// recreates the zombie must not give it a second.
	requireProgress(t, rp, "main", "chld1")
	checkSequence(t, rp, "main", "chld1")
}
