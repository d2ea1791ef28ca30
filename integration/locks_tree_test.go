package integration

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestoreTreeLocks: a root holding an flock on a description it shares
// with its child (fork) plus its own POSIX lock on the same file, and a
// child holding a POSIX lock on another file, are dumped and restored as a
// tree; each checks that it holds its locks (failing before: the dump
// refused them). From here, a competitor is refused on both files, and the
// POSIX locks belong to the right pids.
func TestRestoreTreeLocks(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "locks_tree")
	dir := t.TempDir()
	f1, f2 := filepath.Join(dir, "shared"), filepath.Join(dir, "child")
	p := start(t, bin, f1, f2)
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Child, unix.SIGKILL) })
	requireProgress(t, p, "root", "child")

	img := dumpKill(t, p)
	waitGone(t, r.Child)
	q := restoreFrom(t, p, img)
	requireProgress(t, q, "root", "child")
	checkSequence(t, q, "root", "child")
	if s := q.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}

	for _, c := range []struct {
		file string
		pid  int
	}{{f1, r.Pid}, {f2, r.Child}} {
		f, err := os.OpenFile(c.file, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fl := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &fl); err != nil {
			t.Fatal(err)
		}
		if fl.Type != unix.F_WRLCK || int(fl.Pid) != c.pid {
			t.Errorf("F_GETLK on %s after the restore: type %d pid %d, want a write lock of pid %d", c.file, fl.Type, fl.Pid, c.pid)
		}
		if c.file == f1 {
			if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
				t.Errorf("flock on %s after the restore: %v, want EWOULDBLOCK", c.file, err)
			}
		}
		f.Close()
	}
}
