package integration

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// requireDumpRefused runs a plain `lazycr dump` of pid (which would kill it)
// and checks that it refused with exit 1, its stderr matching every
// pattern, and left no image directory behind.
func requireDumpRefused(t *testing.T, pid int, patterns ...string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir)
	requireExit1(t, fmt.Sprintf("dump of pid %d", pid), errOut, code, patterns...)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused dump left %s behind (stat: %v)", dir, err)
	}
}

// TestDumpRefusesLocks: a process holding a lock lazycr cannot restore
// exactly (a lease: its break protocol involves the other opener) is
// refused, naming the lease, the fd and the file, and keeps running
// untouched. flock, POSIX and OFD locks are restored (locks_restore_test.go).
func TestDumpRefusesLocks(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "safety_locks")
	for _, c := range []struct {
		kind string
		want string // regexp, after "fd N (PATH): "
	}{
		{"lease", `READ lease`},
	} {
		t.Run(c.kind, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "locked-"+c.kind)
			p := start(t, bin, c.kind, file)
			var r struct {
				Pid int `json:"pid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			requireProgress(t, p, "main")
			fdsBefore := procFds(t, p.pid)

			requireDumpRefused(t, p.pid, "unsupported", "file locks or leases that lazycr cannot restore",
				fmt.Sprintf(`fd %d \(%s\): %s`, r.Fd, regexp.QuoteMeta(file), c.want))

			requireProgress(t, p, "main") // running, not stopped, not traced
			checkSequence(t, p, "main")
			if got := procFds(t, p.pid); !equalFds(got, fdsBefore) {
				t.Errorf("fds of pid %d changed across the refused dump: %v, before %v", p.pid, got, fdsBefore)
			}
		})
	}
}

func equalFds(a, b map[int]uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// holdsLockOn reports whether pid holds a lock through an fd open on path.
func holdsLockOn(pid int, path string) bool {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, e := range ents {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err != nil || l != path {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err == nil && bytes.Contains(b, []byte("\nlock:")) {
			return true
		}
	}
	return false
}
