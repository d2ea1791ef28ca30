package integration

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// secondWriter runs a second sqlite3 inserting into db and returns its
// combined output and whether it succeeded.
func secondWriter(t *testing.T, sqlite, db string, v int) (string, bool) {
	t.Helper()
	b, err := exec.Command(sqlite, db, fmt.Sprintf("INSERT INTO t VALUES(%d);", v)).CombinedOutput()
	return string(b), err == nil
}

// startSqliteTxn starts a sqlite3 shell on a new database, its stdin a
// pipe whose write end it returns, and leaves it inside a write
// transaction (BEGIN IMMEDIATE; INSERT 42), holding its locks; a second
// writer is refused.
func startSqliteTxn(t *testing.T, sqlite string) (p *proc, pw *os.File, db string) {
	t.Helper()
	db = filepath.Join(t.TempDir(), "test.db")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pw.Close() })
	// Stdin is the pipe's read end itself (no copying goroutine, and
	// nothing closes pw when sqlite3 is killed by the dump).
	cmd := exec.Command(sqlite, db)
	cmd.Stdin = pr
	p = startCmd(t, cmd)
	pr.Close()
	// The shell touches ready once it has run the INSERT (a lock line
	// alone could be CREATE TABLE's own transaction), then holds the
	// transaction's RESERVED lock: a lock line in the database fd's fdinfo.
	ready := filepath.Join(filepath.Dir(db), "ready")
	io.WriteString(pw, "CREATE TABLE t(x);\nBEGIN IMMEDIATE;\nINSERT INTO t VALUES(42);\n.system touch "+ready+"\n")
	deadline := time.Now().Add(reportTimeout)
	for _, err := os.Stat(ready); err != nil || !holdsLockOn(p.pid, db); _, err = os.Stat(ready) {
		if time.Now().After(deadline) {
			t.Fatalf("sqlite3 pid %d holds no lock on %s within %v; stderr: %s", p.pid, db, reportTimeout, p.stderr())
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	if out, ok := secondWriter(t, sqlite, db, 7); ok || !strings.Contains(out, "database is locked") {
		t.Fatalf("second writer before the dump: ok=%v %q, want \"database is locked\"", ok, out)
	}

	return p, pw, db
}

// TestRestoreSqliteTransaction: a sqlite3 shell inside a write transaction
// (BEGIN IMMEDIATE; INSERT, not committed) holds POSIX locks on its
// database. It is dumped (-D) and restored (-D) with its locks: a second
// writer still gets "database is locked" after the restore, then the
// restored shell commits (its stdin, a pipe this test holds, reconnected)
// and the row is there, with the second writer's row refused, not lost or
// interleaved. Failing before: the dump refused the locks.
func TestRestoreSqliteTransaction(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sqlite, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("sqlite3 not found (CI installs it)")
	}
	p, pw, db := startSqliteTxn(t, sqlite)
	dir := dumpKill(t, p)
	out, errOut, code := runLazycr(t, "show", dir)
	if code != 0 || !strings.Contains(out, "POSIX (fcntl)") {
		t.Errorf("lazycr show (exit %d) lists no POSIX lock:\n%s%s", code, out, errOut)
	}
	q := restoreAdopt(t, dir)
	pid := q.pid

	if out, ok := secondWriter(t, sqlite, db, 7); ok || !strings.Contains(out, "database is locked") {
		t.Fatalf("second writer after the restore: ok=%v %q, want \"database is locked\" (the restored pid %d lost its locks)", ok, out, pid)
	}
	io.WriteString(pw, "COMMIT;\nSELECT 'rows', count(*), sum(x) FROM t;\n")
	pw.Close()
	select {
	case <-q.done:
	case <-time.After(lazycrTimeout):
		t.Fatalf("restored sqlite3 pid %d did not finish after COMMIT and EOF (state %s)", pid, procState(pid))
	}
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "rows|1|42" {
		errb, _ := os.ReadFile(p.errPath)
		t.Errorf("restored sqlite3 printed %q after COMMIT, want rows|1|42; stderr: %s", got, errb)
	}
	// The committed row is in the file, and the database is writable again.
	if out, ok := secondWriter(t, sqlite, db, 7); !ok {
		t.Fatalf("second writer after the commit: %q", out)
	}
	b, err = exec.Command(sqlite, db, "SELECT count(*), sum(x) FROM t;").CombinedOutput()
	if got := strings.TrimSpace(string(b)); err != nil || got != "2|49" {
		t.Errorf("database after both commits: %q (%v), want 2|49", got, err)
	}
}

// TestRestoreSqliteRefusesWrittenDatabase: between the dump (which released
// the shell's locks with the process) and the restore, a second writer
// commits (rolling back the killed shell's hot journal). The restore must
// refuse, naming the file, rather than let the restored shell commit over
// it; the second writer's row stays and the uncommitted 42 is gone.
func TestRestoreSqliteRefusesWrittenDatabase(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sqlite, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("sqlite3 not found (CI installs it)")
	}
	p, _, db := startSqliteTxn(t, sqlite)
	dir := dumpKill(t, p)
	if out, ok := secondWriter(t, sqlite, db, 7); !ok {
		t.Fatalf("second writer after the dump: %q", out)
	}
	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore after another writer committed", errOut, code, "file changed since the dump", regexp.QuoteMeta(db))
	t.Logf("restore refused: %s", errOut)
	b, err := exec.Command(sqlite, db, "SELECT count(*), sum(x) FROM t;").CombinedOutput()
	if got := strings.TrimSpace(string(b)); err != nil || got != "1|7" {
		t.Errorf("database after the refused restore: %q (%v), want 1|7", got, err)
	}
}
