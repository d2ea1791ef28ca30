package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
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

// TestDumpRefusesLocks: a process holding a flock, POSIX (fcntl) or OFD lock
// or a lease is refused, naming the lock, its range, the fd and the file,
// and keeps running untouched. The locks used to be dropped silently: the
// restored process ran on without them.
func TestDumpRefusesLocks(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "safety_locks")
	for _, c := range []struct {
		kind string
		want string // regexp, after "fd N (PATH): "
	}{
		{"flock", `flock WRITE lock`},
		{"posix", `POSIX \(fcntl\) WRITE lock on bytes 10-29`},
		{"ofd", `OFD \(open file description\) WRITE lock on bytes 100 to EOF`},
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

			requireDumpRefused(t, p.pid, "unsupported", "file locks",
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

// TestDumpRefusesSqliteTransaction: a sqlite3 shell inside a write
// transaction holds POSIX locks on its database. Dropping them would let
// another writer commit, and the restored COMMIT would overwrite that row.
// dump refuses, naming the database; the transaction then commits as if
// nothing happened.
func TestDumpRefusesSqliteTransaction(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sqlite, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("sqlite3 not found (CI installs it)")
	}
	db := filepath.Join(t.TempDir(), "test.db")
	cmd := exec.Command(sqlite, db)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	pid := cmd.Process.Pid
	io.WriteString(stdin, "CREATE TABLE t(x);\nBEGIN IMMEDIATE;\nINSERT INTO t VALUES(42);\n")
	// Wait until sqlite holds its RESERVED lock: a lock line in the
	// fdinfo of the database's fd.
	deadline := time.Now().Add(reportTimeout)
	for !holdsLockOn(pid, db) {
		if time.Now().After(deadline) {
			t.Fatalf("sqlite3 pid %d holds no lock on %s within %v; stderr: %s", pid, db, reportTimeout, errOut.String())
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}

	requireDumpRefused(t, pid, "unsupported", "file locks",
		`fd [0-9]+ \(`+regexp.QuoteMeta(db)+`\): POSIX \(fcntl\) (READ|WRITE) lock on bytes [0-9]+`)

	io.WriteString(stdin, "COMMIT;\nSELECT 'rows', count(*), sum(x) FROM t;\n")
	stdin.Close()
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("sqlite3: %v; stderr: %s", err, errOut.String())
		}
	case <-time.After(lazycrTimeout):
		t.Fatalf("sqlite3 pid %d did not finish after the refused dump", pid)
	}
	if got := strings.TrimSpace(out.String()); got != "rows|1|42" {
		t.Errorf("sqlite3 printed %q after COMMIT, want rows|1|42; stderr: %s", got, errOut.String())
	}
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
