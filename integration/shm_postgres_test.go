package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// pgTimeout bounds each step of the postgres test (initdb, start, a
// query): a slow machine, not a sleep.
const pgTimeout = 60 * time.Second

// TestShmPostgres checkpoints and restores PostgreSQL (its postmaster and
// background processes: a System V segment, a big MAP_SHARED anonymous
// region, a /dev/shm dynamic shared memory file): initdb in a temporary
// directory, start it as user postgres listening on 127.0.0.1 only, insert
// 100000 rows, dump -D, remove the System V segment the killed server
// leaves (as on a fresh target), restore -D; the restored server must
// answer SELECT count(*) with 100000 and take more rows.
func TestShmPostgres(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Skip("postgres is not installed (/usr/lib/postgresql/*/bin/postgres)")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	asPostgres := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setsid: true}

	// t.TempDir's parents are root's alone: postgres needs a directory
	// it can reach.
	top, err := os.MkdirTemp("", "lazycr-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(top, uid, gid); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(top, "data")
	ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
	defer cancel()
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
	initdb.SysProcAttr = asPostgres
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	logf, err := os.Create(filepath.Join(top, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	srv := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off")
	srv.SysProcAttr = asPostgres
	srv.Stdout, srv.Stderr = logf, logf
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { srv.Wait(); close(exited) }()
	pid := srv.Process.Pid
	var pids []int // the tree, for the cleanup
	var sysv []int32
	t.Cleanup(func() {
		// A fast shutdown (SIGINT) removes the server's System V
		// segment and /dev/shm files; whatever is left is killed and
		// its segments removed.
		unix.Kill(pid, unix.SIGINT)
		deadline := time.Now().Add(pgTimeout)
		for _, p := range append(pids, pid) {
			for pgAlive(p) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond) // poll interval
			}
			unix.Kill(p, unix.SIGKILL)
		}
		for _, id := range append(sysv, segmentsOf(pid)...) {
			unix.SysvShmCtl(int(id), unix.IPC_RMID, nil)
		}
	})
	psql := func(sql string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), pgTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, filepath.Join(bin, "psql"), "-h", "127.0.0.1", "-p", strconv.Itoa(port),
			"-U", "postgres", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql).CombinedOutput()
		// The last line: the result of the last statement.
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if err != nil {
			return string(out), err
		}
		return lines[len(lines)-1], nil
	}
	deadline := time.Now().Add(pgTimeout)
	for {
		if _, err := psql("SELECT 1"); err == nil {
			break
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("postgres exited: %v\n%s", srv.ProcessState, b)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("postgres does not answer within %v\n%s", pgTimeout, b)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	if out, err := psql("CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 100000); SELECT count(*) FROM t"); err != nil || out != "100000" {
		t.Fatalf("insert rows: %v\n%s", err, out)
	}

	// The backend that served psql exits after it: wait for that, a
	// process exiting while the tree is frozen makes the dump fail.
	deadline = time.Now().Add(pgTimeout)
	for clientBackends(pid) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the client backends of postgres pid %d do not exit within %v", pid, pgTimeout)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	dir := filepath.Join(t.TempDir(), "img")
	out, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(pid), "-D", dir, "--stats")
	if code != 0 {
		t.Fatalf("lazycr dump: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("dump:\n%s", out)
	img := show(t, dir)
	kinds := map[pb.ShmKind]int{}
	for _, o := range img.Tree.Shm {
		kinds[o.Kind]++
		if o.Kind == pb.ShmKind_SHM_KIND_SYSV {
			sysv = append(sysv, o.SysvId)
		}
	}
	if kinds[pb.ShmKind_SHM_KIND_SYSV] != 1 || kinds[pb.ShmKind_SHM_KIND_ANON] != 1 {
		t.Errorf("image: shared memory objects by kind %v, want one System V segment and one anonymous region", kinds)
	}
	for _, p := range img.Tree.Processes {
		pids = append(pids, int(p.Pid))
	}
	<-exited
	for _, p := range pids {
		waitGone(t, p)
	}
	// The killed server's segment stays (nobody removed it): a fresh
	// target would not have it.
	for _, id := range sysv {
		if _, err := unix.SysvShmCtl(int(id), unix.IPC_RMID, nil); err != nil {
			t.Fatalf("remove System V segment %d: %v", id, err)
		}
	}

	out, errOut, code = runLazycr(t, "restore", "-D", dir, "--stats")
	if code != 0 {
		t.Fatalf("lazycr restore: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("restore:\n%s", out)
	if got, err := psql("SELECT count(*) FROM t"); err != nil || got != "100000" {
		b, _ := os.ReadFile(logf.Name())
		t.Fatalf("after restore: SELECT count(*): %v %q, want 100000\n%s", err, got, b)
	}
	if got, err := psql("INSERT INTO t SELECT generate_series(1, 10); SELECT count(*) FROM t"); err != nil || got != "100010" {
		t.Fatalf("after restore: insert: %v %q, want 100010", err, got)
	}
	gone := false
	for _, p := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p)); err != nil {
			t.Errorf("postgres process %d is gone after restore", p)
			gone = true
		}
	}
	if gone {
		b, _ := os.ReadFile(logf.Name())
		t.Logf("postgres log:\n%s", b)
	}
	// The segment is postgres's own again: owner and creator.
	for _, id := range sysv {
		var d unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(int(id), unix.IPC_STAT, &d); err != nil {
			t.Errorf("System V segment %d after restore: %v", id, err)
			continue
		}
		if d.Perm.Uid != uint32(uid) || d.Perm.Cuid != uint32(uid) || d.Perm.Gid != uint32(gid) || d.Perm.Cgid != uint32(gid) {
			t.Errorf("System V segment %d after restore: owner %d:%d creator %d:%d, want %d:%d for both", id, d.Perm.Uid, d.Perm.Gid, d.Perm.Cuid, d.Perm.Cgid, uid, gid)
		}
	}
}

// clientBackends counts the children of postmaster pid that serve a
// client ("postgres: USER DB HOST(PORT) ..." in their cmdline) or are
// exiting (an empty cmdline).
func clientBackends(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range strings.Fields(string(b)) {
		cmd, _ := os.ReadFile("/proc/" + c + "/cmdline")
		// An exiting backend has no memory any more: its cmdline reads
		// empty. Dumped, it is a zombie the restored postmaster reaps.
		if strings.Contains(string(cmd), "127.0.0.1(") || len(cmd) == 0 {
			n++
		}
	}
	return n
}

// segmentsOf lists the System V shm segments that pid created
// (/proc/sysvipc/shm, column cpid).
func segmentsOf(pid int) []int32 {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return nil
	}
	var ids []int32
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == strconv.Itoa(pid) {
			if id, err := strconv.Atoi(f[1]); err == nil {
				ids = append(ids, int32(id))
			}
		}
	}
	return ids
}

// pgAlive reports whether pid is a process that has not exited.
func pgAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && statState(string(b)) != "Z"
}
