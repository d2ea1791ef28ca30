package integration

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/pageserver"
	"golang.org/x/sys/unix"
)

// requireLockHolder checks from this test process, with F_GETLK (POSIX)
// or F_OFD_GETLK (OFD), who holds the lock locks_hold takes for kind on
// file: for POSIX the process pid itself (F_GETLK reports the holder's
// pid, fcntl(2)), for OFD an open file description (pid -1); flock locks
// are checked by a competitor only (flock(2) has no query).
func requireLockHolder(t *testing.T, kind, file string, pid int) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	probe := func(cmd int, start, n int64, typ int16, wantPid int32, wantStart, wantLen int64) {
		t.Helper()
		fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: n}
		if err := unix.FcntlFlock(f.Fd(), cmd, &fl); err != nil {
			t.Fatalf("fcntl %d on %s: %v", cmd, file, err)
		}
		if fl.Type != typ || fl.Pid != wantPid || fl.Start != wantStart || fl.Len != wantLen {
			t.Errorf("%s lock on %s bytes %d+%d: type %d pid %d bytes %d+%d, want type %d pid %d bytes %d+%d",
				kind, file, start, n, fl.Type, fl.Pid, fl.Start, fl.Len, typ, wantPid, wantStart, wantLen)
		}
	}
	switch kind {
	case "posix":
		probe(unix.F_GETLK, 10, 20, unix.F_WRLCK, int32(pid), 10, 20)
		probe(unix.F_GETLK, 40, 10, unix.F_RDLCK, int32(pid), 40, 10)
	case "ofd":
		probe(unix.F_OFD_GETLK, 0, 0, unix.F_WRLCK, -1, 100, 0)
	}
	c, err := lockCompetitor(t, kind, file)
	c.Close()
	if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EACCES) {
		t.Errorf("a competitor's %s lock on %s: %v, want EWOULDBLOCK/EACCES", kind, file, err)
	}
}

// TestLazyLocks: a process holding an flock (exclusive or shared), POSIX
// (fcntl) write and read locks on byte ranges, or an OFD lock to EOF is
// migrated post-copy (restore --lazy-from --new-pid), on this host and
// between two namespace hosts (sharing the file system: the same file).
// The restored process's own checks pass (it looks, from a second open
// file description, for exactly its locks, POSIX ones under its new pid);
// from outside, F_GETLK names the new pid as the POSIX holder, F_OFD_GETLK
// sees the OFD lock, a competitor is refused and the original is gone.
// Failing before: the lazy dump refused every lock.
func TestLazyLocks(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bin := buildC(t, "locks_hold")
	for _, c := range []struct {
		kind     string
		twoHosts bool
	}{{"flock", false}, {"flocksh", false}, {"posix", false}, {"ofd", false}, {"posix", true}, {"ofd", true}, {"flock", true}} {
		name := c.kind
		if c.twoHosts {
			name += "/twohosts"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var env lazyEnv
			if c.twoHosts {
				env = lazyTwoHosts(t)
			}
			file := filepath.Join(t.TempDir(), "locked-"+c.kind)
			p := env.startProg(t, bin, c.kind, file)
			var r struct {
				Pid int `json:"pid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			requireProgress(t, p, "main")
			requireLockHolder(t, c.kind, file, p.pid)

			m := migrateLazy(t, env, p, nil, nil)
			q := m.restored
			requireProgress(t, q, "main") // its own checks pass
			checkSequence(t, q, "main")
			requireLockHolder(t, c.kind, file, q.pid)
			if !holdsLockOn(q.pid, file) {
				t.Errorf("restored pid %d lists no lock on %s in its fdinfo", q.pid, file)
			}
			if q.exited() {
				t.Fatalf("restored pid %d exited: %v; stderr:\n%s", q.pid, q.waitErr, q.stderr())
			}
		})
	}
}

// TestLazyLocksRollback: the lazy restore fails just before the resume
// (failpoint restore.resume, after the locks were taken on the target):
// the source rolls back and the original runs on holding its locks (its
// own checks pass; a competitor is refused; F_GETLK names it as the
// POSIX holder again, the source having taken back what it released).
func TestLazyLocksRollback(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bin := buildC(t, "locks_hold")
	fp := failpointLazycr(t)
	for _, kind := range []string{"flock", "posix", "ofd"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(t.TempDir(), "locked-"+kind)
			p := start(t, bin, kind, file)
			var r struct {
				Pid int `json:"pid"`
				Fd  int `json:"fd"`
			}
			waitReport(t, p, &r)
			requireProgress(t, p, "main")

			src := startLazySource(t, nil, p.pid, "127.0.0.1")
			cmd := exec.Command(fp, "restore", "--lazy-from", src.addr, "--new-pid")
			cmd.Env = append(os.Environ(), "LAZYCR_TOKEN="+lazyTestToken, "LAZYCR_FAILPOINT=restore.resume")
			dst := startLazyRun(t, "failing target", cmd)
			dst.requireExit(t, 1)
			if _, e := dst.output(); !strings.Contains(e, "failpoint restore.resume") {
				t.Errorf("target did not fail at the failpoint:\n%s", e)
			}
			src.requireExit(t, 1)
			if _, e := src.output(); !strings.Contains(e, "released") {
				t.Errorf("source does not say it released pid %d:\n%s", p.pid, e)
			}
			requireProgress(t, p, "main") // runs on, its checks passing
			checkSequence(t, p, "main")
			requireLockHolder(t, kind, file, p.pid)
		})
	}
}

// TestLazySqliteTransaction: a sqlite3 shell inside a write transaction
// (BEGIN IMMEDIATE; INSERT, not committed; POSIX locks on its database)
// migrates post-copy on this host: a second writer still gets "database
// is locked" after the resume; the restored shell then commits and the row
// is there. Failing before: the lazy dump refused the locks.
func TestLazySqliteTransaction(t *testing.T) {
	t.Parallel()
	needRoot(t)
	sqlite, err := exec.LookPath("sqlite3")
	if err != nil {
		t.Skip("sqlite3 not found (CI installs it)")
	}
	p, pw, db := startSqliteTxn(t, sqlite)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr)
	q := adopt(t, lazyResumedPID(t, dst))
	if out, ok := secondWriter(t, sqlite, db, 7); ok || !strings.Contains(out, "database is locked") {
		t.Fatalf("second writer after the resume: ok=%v %q, want \"database is locked\" (the migrated pid %d lost its locks)", ok, out, q.pid)
	}
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if out, ok := secondWriter(t, sqlite, db, 7); ok || !strings.Contains(out, "database is locked") {
		t.Fatalf("second writer after DONE: ok=%v %q, want \"database is locked\"", ok, out)
	}
	io.WriteString(pw, "COMMIT;\nSELECT 'rows', count(*), sum(x) FROM t;\n")
	pw.Close()
	select {
	case <-q.done:
	case <-time.After(lazycrTimeout):
		t.Fatalf("migrated sqlite3 pid %d did not finish after COMMIT and EOF (state %s)", q.pid, procState(q.pid))
	}
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "rows|1|42" {
		t.Errorf("migrated sqlite3 printed %q after COMMIT, want rows|1|42; stderr: %s", got, p.stderr())
	}
	if out, ok := secondWriter(t, sqlite, db, 7); !ok {
		t.Fatalf("second writer after the commit: %q", out)
	}
	b, err = exec.Command(sqlite, db, "SELECT count(*), sum(x) FROM t;").CombinedOutput()
	if got := strings.TrimSpace(string(b)); err != nil || got != "2|49" {
		t.Errorf("database after both commits: %q (%v), want 2|49", got, err)
	}
	t.Logf("sqlite3 pid %d migrated lazily as pid %s with its transaction", p.pid, strconv.Itoa(q.pid))
}

// TestLazyLocksTakenMeanwhile: a POSIX lock belongs to the process, so the
// source releases the frozen original's when the target asks for the image,
// for the target to take. Here the target is this test (a page-server
// client): the lock is still held while the source only serves, is free
// once the image is fetched, and this test takes a conflicting lock in
// that window. The target then fails (FAIL, as a restore finding the lock
// held does): the source cannot give the original its lock back, keeps it
// stopped (state T) rather than let it run without, and says which lock it
// lacks.
func TestLazyLocksTakenMeanwhile(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bin := buildC(t, "locks_hold")
	file := filepath.Join(t.TempDir(), "locked-posix")
	p := start(t, bin, "posix", file)
	var r struct {
		Pid int `json:"pid"`
		Fd  int `json:"fd"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")

	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	c, err := lockCompetitor(t, "posix", file)
	c.Close()
	if err == nil {
		t.Fatalf("a competitor got pid %d's POSIX lock while the source only serves", p.pid)
	}
	token, err := hex.DecodeString(lazyTestToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lazycrTimeout)
	defer cancel()
	cl, err := pageserver.Dial(ctx, src.addr, pageserver.ClientConfig{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Images(ctx); err != nil {
		t.Fatal(err)
	}
	comp, err := lockCompetitor(t, "posix", file)
	defer comp.Close()
	if err != nil {
		t.Fatalf("take the competing lock once the image is fetched: %v (the source should have released pid %d's POSIX locks)", err, p.pid)
	}
	cl.Fail("this test took the lock")
	src.requireExit(t, 1)
	_, e := src.output()
	for _, want := range []string{"take pid " + strconv.Itoa(p.pid) + "'s fd 3: POSIX (fcntl) READ lock on bytes 40-49 back", "kept stopped (state T)"} {
		if !strings.Contains(e, want) {
			t.Errorf("source output lacks %q:\n%s", want, e)
		}
	}
	if s := procState(p.pid); !strings.HasPrefix(s, "T") {
		t.Errorf("original pid %d is in state %q, want T (kept stopped without its lock)", p.pid, s)
	}
	t.Logf("source: %s", e[strings.LastIndex(e, "\n")+1:])
}

// TestLazyTreeLocks: a tree, the init of its own PID namespace, whose
// root holds an flock on a description it shares with its child and a
// POSIX lock of its own, and whose child holds a POSIX lock on another
// file, migrates post-copy (--pidns). Each process's own checks pass
// after the resume (F_OFD_GETLK sees its POSIX lock under its pid, the
// shared flock keeps a second description out); from here a competitor
// is refused on both files and the original tree is gone.
func TestLazyTreeLocks(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir := t.TempDir()
	f1, f2 := filepath.Join(dir, "shared"), filepath.Join(dir, "child")
	cmd := exec.Command(buildC(t, "locks_tree"), f1, f2)
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "root", "child")

	q, _ := migrateLazyPIDNS(t, lazyEnv{}, p)
	requireProgress(t, q, "root", "child")
	checkSequence(t, q, "root", "child")
	if s := q.stderr(); s != "" {
		t.Errorf("the tree complains:\n%s", s)
	}
	for _, file := range []string{f1, f2} {
		f, err := os.OpenFile(file, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fl := unix.Flock_t{Type: unix.F_WRLCK}
		if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &fl); err != nil {
			t.Fatal(err)
		}
		if fl.Type != unix.F_WRLCK {
			t.Errorf("F_GETLK on %s after the migration: type %d, want a write lock", file, fl.Type)
		}
		if file == f1 {
			if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
				t.Errorf("flock on %s after the migration: %v, want EWOULDBLOCK", file, err)
			}
		}
		f.Close()
	}
}

// TestLazyLocksAbort: the target (this test, a page-server client) fetches
// the image, which makes the source release the original's POSIX locks,
// says RESUMED and then ABORT (it killed its copy). The original, kept
// stopped as the only copy, has its locks back: F_GETLK names it as their
// holder while it is stopped, and once let run (SIGCONT) its own checks
// pass.
func TestLazyLocksAbort(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bin := buildC(t, "locks_hold")
	file := filepath.Join(t.TempDir(), "locked-posix")
	p := start(t, bin, "posix", file)
	var r struct {
		Pid int `json:"pid"`
		Fd  int `json:"fd"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")

	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	token, err := hex.DecodeString(lazyTestToken)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), lazycrTimeout)
	defer cancel()
	cl, err := pageserver.Dial(ctx, src.addr, pageserver.ClientConfig{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.Images(ctx); err != nil {
		t.Fatal(err)
	}
	comp, err := lockCompetitor(t, "posix", file)
	comp.Close() // the competitor's lock goes with its close
	if err != nil {
		t.Fatalf("take the competing lock once the image is fetched: %v (the source should have released pid %d's POSIX locks)", err, p.pid)
	}
	if err := cl.Resumed(); err != nil {
		t.Fatal(err)
	}
	if !cl.Abort("this test aborts", lazycrTimeout) {
		t.Fatal("ABORT not sent")
	}
	src.requireExit(t, 1)
	if _, e := src.output(); !strings.Contains(e, "only copy") || strings.Contains(e, "lacks a file lock") {
		t.Errorf("source does not say the original is the only copy, with its locks:\n%s", e)
	}
	requireStoppedOriginal(t, p)
	requireLockHolder(t, "posix", file, p.pid)
	st, err := os.Stat(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(p.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	progress(t, p)
	requireProgress(t, p, "main")
	checkSequenceFrom(t, p, st.Size(), "main")
}
