package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockCompetitor takes, from this test process, a lock that conflicts with
// the one locks_hold holds for kind on file, without blocking. It returns
// the open file (whose close releases the lock) and the error of the lock
// call (nil: the competitor got the lock).
func lockCompetitor(t *testing.T, kind, file string) (*os.File, error) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := f.Fd()
	switch kind {
	case "flock", "flocksh":
		err = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
	case "posix":
		// Bytes 45-49: inside the read-locked range 40-49.
		err = unix.FcntlFlock(fd, unix.F_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 45, Len: 5})
	case "ofd":
		err = unix.FcntlFlock(fd, unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 4096, Len: 1})
	default:
		t.Fatalf("unknown kind %s", kind)
	}
	return f, err
}

// TestRestoreLocks: a process holding an flock (exclusive or shared), POSIX
// (fcntl) write and read locks on byte ranges, or an OFD lock to EOF is
// dumped (-D) and restored (-D); it checks itself, from a second open file
// description it keeps, that it holds exactly those locks (failing before:
// the dump refused every lock, and earlier still dropped them). Between
// dump and restore, when this test holds a conflicting lock, the restore
// refuses, naming the lock and the holder; once released, the restore
// succeeds and this test, as a competitor, is refused. A lazy migration
// carries the locks: locks_lazy_test.go.
func TestRestoreLocks(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "locks_hold")
	for _, c := range []struct {
		kind string
		want string // the lock the refused restore names, regexp
		who  string // its holder, regexp
	}{
		{"flock", `flock WRITE lock`, fmt.Sprintf(`pid %d: flock WRITE lock`, os.Getpid())},
		{"flocksh", `flock READ lock`, fmt.Sprintf(`pid %d: flock WRITE lock`, os.Getpid())},
		{"posix", `POSIX \(fcntl\) READ lock on bytes 40-49`, fmt.Sprintf(`pid %d: POSIX \(fcntl\) WRITE lock on bytes 45-49`, os.Getpid())},
		{"ofd", `OFD \(open file description\) WRITE lock on bytes 100 to EOF`, `OFD lock, no pid\): OFD \(open file description\) WRITE lock on bytes 4096-4096`},
	} {
		t.Run(c.kind, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "locked-"+c.kind)
			p := start(t, bin, c.kind, file)
			var r struct {
				Pid int `json:"pid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			requireProgress(t, p, "main")
			if f, err := lockCompetitor(t, c.kind, file); err == nil {
				f.Close()
				t.Fatalf("a competitor got the lock of pid %d before the dump", p.pid)
			} else {
				f.Close()
			}

			dir := dumpKill(t, p)
			out, _, code := runLazycr(t, "show", dir)
			if code != 0 || !regexp.MustCompile(`holds [^\n]*`+c.want).MatchString(out) {
				t.Errorf("lazycr show (exit %d) does not list the lock %q:\n%s", code, c.want, out)
			}

			// Someone takes a conflicting lock while the process is
			// down: the restore refuses rather than run it without.
			comp, err := lockCompetitor(t, c.kind, file)
			if err != nil {
				comp.Close()
				t.Fatalf("take the competing lock after the dump: %v (the dump should have released pid %d's)", err, p.pid)
			}
			_, errOut, code := runLazycr(t, "restore", "-D", dir)
			requireExit1(t, "restore with the lock taken", errOut, code,
				"lock held by another process", fmt.Sprintf(`fd %d \(%s\): take %s`, r.Fd, regexp.QuoteMeta(file), c.want), c.who)
			waitGone(t, p.pid) // the failed restore's process is gone
			comp.Close()

			q := restoreFrom(t, p, dir)
			requireProgress(t, q, "main") // its own checks pass
			checkSequence(t, q, "main")
			f, err := lockCompetitor(t, c.kind, file)
			f.Close()
			if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EACCES) {
				t.Errorf("a competitor's lock after the restore: %v, want EWOULDBLOCK/EACCES", err)
			}
			if q.exited() {
				t.Fatalf("restored pid %d exited: %v", q.pid, q.waitErr)
			}
			t.Logf("pid %s restored with its %s locks", strconv.Itoa(q.pid), c.kind)
		})
	}
}

// waitInSyscall waits until pid's thread is blocked in syscall nr
// (/proc/PID/syscall starts with the number, proc(5)).
func waitInSyscall(t *testing.T, pid, nr int) {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		if strings.HasPrefix(string(b), strconv.Itoa(nr)+" ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is not in syscall %d within %v (/proc/PID/syscall %q)", pid, nr, reportTimeout, b)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// TestRestoreLockWaiter: a process waiting for a lock this test holds
// (fcntl F_SETLKW, flock LOCK_EX) is dumped and restored while it waits;
// the restored process waits again (the interrupted call is restarted),
// holds nothing meanwhile, and gets the lock once this test lets go.
func TestRestoreLockWaiter(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "locks_hold")
	for _, c := range []struct {
		kind string
		nr   int
	}{{"setlkw", unix.SYS_FCNTL}, {"flockw", unix.SYS_FLOCK}} {
		t.Run(c.kind, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "wanted-"+c.kind)
			f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if c.kind == "setlkw" {
				err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &unix.Flock_t{Type: unix.F_WRLCK})
			} else {
				err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
			}
			if err != nil {
				t.Fatal(err)
			}
			p := start(t, bin, c.kind, file)
			var r struct {
				Pid int `json:"pid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			waitInSyscall(t, p.pid, c.nr)

			dir := dumpKill(t, p)
			q := restoreFrom(t, p, dir)
			waitInSyscall(t, q.pid, c.nr)
			if n := progress(t, q)["main"]; n != 0 {
				t.Fatalf("restored pid %d ticked %d times while this test holds the lock it waits for", q.pid, n)
			}
			f.Close() // lets it in
			requireProgress(t, q, "main")
			checkSequence(t, q, "main")
			if s := q.stderr(); s != "" {
				t.Errorf("pid %d complains:\n%s", q.pid, s)
			}
		})
	}
}
