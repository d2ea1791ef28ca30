package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startRedisUnix starts redis-server listening only on a unix socket in a
// fresh directory and returns it with the socket's path once it accepts.
func startRedisUnix(t *testing.T) (*proc, string) {
	t.Helper()
	needRoot(t)
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found (scripts/test.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "lazycr-redis-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "redis.sock")
	p := start(t, server, "--port", "0", "--unixsocket", path, "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--daemonize", "no")
	deadline := time.Now().Add(reportTimeout)
	for {
		c, err := net.Dial("unix", path)
		if err == nil {
			c.Close()
			return p, path
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("redis-server on %s: %v (exited %v)\n%s", path, err, p.exited(), p.stderr())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// dialRedisUnix connects the test to redis at path.
func dialRedisUnix(t *testing.T, path string) *redisConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	return &redisConn{c: c, r: bufio.NewReader(c)}
}

// restoreReconnect runs `lazycr restore -D dir` without --unix-reconnect,
// which must be refused naming the peer (its path and the pid holding
// it), then with it, and returns the restored pid. The refused restore
// touches nothing (it is refused before anything is built): the socket
// file at peerPath (the process's own listener) is the one the dump left,
// or none, never one it bound.
func restoreReconnect(t *testing.T, dir, peerPath string, peerPid int) int {
	t.Helper()
	var before unix.Stat_t
	beforeErr := unix.Lstat(peerPath, &before)
	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore of a unix socket whose peer was not dumped", errOut, code,
		`unix socket:\[\d+\] was (connected to|accepted on) `+regexp.QuoteMeta(peerPath)+`.*held by pids \[[0-9 ]*\b`+strconv.Itoa(peerPid)+`\b[0-9 ]*\] at dump.*pass --unix-reconnect`)
	if peerPid == os.Getpid() {
		var after unix.Stat_t
		if err := unix.Lstat(peerPath, &after); err == nil && (beforeErr != nil || after.Ino != before.Ino) {
			t.Errorf("after the refused restore %s is inode %d (before it: %d, %v): the rollback left the socket file it bound", peerPath, after.Ino, before.Ino, beforeErr)
		}
	}
	out, errOut, code := runLazycr(t, "restore", "-D", dir, "--unix-reconnect")
	if code != 0 {
		t.Fatalf("lazycr restore -D %s --unix-reconnect: exit %d\nstdout:\n%s\nstderr:\n%s", dir, code, out, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("lazycr restore: stdout %q is not a pid", out)
	}
	return pid
}

// TestUnixReconnectClient: a redis client on a unix socket (the server is
// not dumped) is dumped between two commands and restored with
// --unix-reconnect: its socket connects again to the server's path and
// the client goes on, every SET read back by a GET on the new connection.
// Without the option the restore is refused, naming the server.
func TestUnixReconnectClient(t *testing.T) {
	t.Parallel()
	srv, path := startRedisUnix(t)
	key := fmt.Sprintf("unixclient-%d", os.Getpid())
	p := start(t, buildC(t, "unixclient"), path, key)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "ops")
	// Between two commands: nothing in flight either way.
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(progressTimeout)
	for progress(t, p)["idle"] == 0 {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("pid %d never went idle (exited %v): %s", p.pid, p.exited(), p.stderr())
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	idleAt := progress(t, p)["ops"]
	dir := dumpKill(t, p)
	if out, _, _ := runLazycr(t, "show", dir); !strings.Contains(out, "connected to "+path+" (socket:[") {
		t.Errorf("lazycr show does not name the peer %s:\n%s", path, out)
	}
	rp := adopt(t, restoreReconnect(t, dir, path, srv.pid))
	rp.continueOutput(p, true)
	if err := unix.Kill(rp.pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	requireProgress(t, rp, "ops")
	checkSequence(t, rp, "ops")
	// The server is the same one: the client's value only grew from
	// where it was at the dump.
	rc := dialRedisUnix(t, path)
	if n, err := strconv.Atoi(rc.do(t, "GET", key)); err != nil || uint64(n) < idleAt {
		t.Errorf("GET %s: %d, %v; the client had set %d before the dump", key, n, err, idleAt)
	}
}

// TestUnixReconnectServer: redis-server on a unix socket with a client
// outside (the test) is dumped and restored with --unix-reconnect: the
// client's connection ends when the original is killed, the restored
// server has the client's accepted socket back closed by its peer (it
// drops it), and the client connects again to the same path and finds
// its data. Without the option the restore is refused, naming the
// client's pid.
func TestUnixReconnectServer(t *testing.T) {
	t.Parallel()
	p, path := startRedisUnix(t)
	rc := dialRedisUnix(t, path)
	if got := rc.do(t, "SET", "before", "dump"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	dir := dumpKill(t, p)
	if _, err := rc.readReply(); err == nil {
		t.Fatal("the connection to the killed redis still answers")
	}
	rp := adopt(t, restoreReconnect(t, dir, path, os.Getpid()))
	rc = dialRedisUnix(t, path)
	if got := rc.do(t, "GET", "before"); got != "dump" {
		t.Fatalf("GET before after the restore: %q", got)
	}
	// redis read EOF on the old client's socket and dropped it.
	deadline := time.Now().Add(progressTimeout)
	for {
		got := rc.do(t, "INFO", "clients")
		if strings.Contains(got, "connected_clients:1\r") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old connection is still a client of restored pid %d:\n%s", rp.pid, got)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	var st2 unix.Stat_t
	if err := unix.Stat(path, &st2); err != nil {
		t.Fatal(err)
	}
	if st2.Mode != st.Mode || st2.Uid != st.Uid || st2.Gid != st.Gid {
		t.Errorf("socket file %s: mode %#o owner %d:%d, before the dump %#o %d:%d", path, st2.Mode, st2.Uid, st2.Gid, st.Mode, st.Uid, st.Gid)
	}
}

// TestUnixLazyServerKeepsClient: redis-server on a unix socket with a
// client outside (the test) migrates lazily on the same host (restore
// --new-pid, no --unix-reconnect): the target takes the listener and the
// client's connection over from the frozen original, so the client's
// very connection goes on (no reconnect) and finds its data.
func TestUnixLazyServerKeepsClient(t *testing.T) {
	t.Parallel()
	p, path := startRedisUnix(t)
	rc := dialRedisUnix(t, path)
	if got := rc.do(t, "SET", "before", "migration"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	id := rc.do(t, "CLIENT", "ID")
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr)
	rp := adopt(t, lazyResumedPID(t, dst))
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if _, e := dst.output(); len(regexp.MustCompile(`took unix socket:\[\d+\] \S+ over from the frozen original`).FindAllString(e, -1)) < 2 {
		t.Errorf("the target did not take the listener and the client's connection over:\n%s", e)
	}
	if got := rc.do(t, "GET", "before"); got != "migration" {
		t.Fatalf("GET before on the same connection after the migration to pid %d: %q", rp.pid, got)
	}
	if got := rc.do(t, "CLIENT", "ID"); got != id {
		t.Errorf("CLIENT ID %s after the migration, %s before: not the same connection", got, id)
	}
	if got := rc.do(t, "INFO", "clients"); !strings.Contains(got, "connected_clients:1\r") {
		t.Errorf("INFO clients:\n%s", got)
	}
}

// TestUnixReconnectLazy: the redis client migrates lazily from host B to
// host C (another network namespace, so nothing is taken over) with
// restore --unix-reconnect: its socket connects again to the server's
// path and it goes on.
func TestUnixReconnectLazy(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	_, path := startRedisUnix(t)
	key := fmt.Sprintf("unixclient-lazy-%d", os.Getpid())
	p := env.startProg(t, buildC(t, "unixclient"), path, key)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "ops")
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(progressTimeout)
	for progress(t, p)["idle"] == 0 {
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("pid %d never went idle (exited %v): %s", p.pid, p.exited(), p.stderr())
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	m := migrateLazy(t, env, p, nil, []string{"--unix-reconnect"})
	if _, e := m.target.output(); !strings.Contains(e, "connected again to "+path) {
		t.Errorf("the target did not reconnect to %s:\n%s", path, e)
	}
	if err := unix.Kill(m.restored.pid, unix.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	requireProgress(t, m.restored, "ops")
	checkSequence(t, m.restored, "ops")
}
