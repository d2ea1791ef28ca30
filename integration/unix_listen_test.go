package integration

import (
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

// startUnixListen starts testdata/progs/unixlisten.c in a fresh directory
// and waits until it is set up; it returns the process and its path
// listener's socket file.
func startUnixListen(t *testing.T) (*proc, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "lazycr-unix-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := start(t, buildC(t, "unixlisten"), dir)
	var r struct {
		Pid  int    `json:"pid"`
		Path string `json:"path"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wait")
	return p, r.Path
}

// TestUnixListenRestore: listeners on a path (stream) and an abstract
// name (seqpacket) with their backlogs, a connection accepted from each
// (stream bytes unread both ways, a shutdown), a connection waiting in
// each queue, a bound datagram socket with a client connected to it and
// an unbound socket come back from dump -D / restore -D: the program
// checks names, the socket file's mode, SO_PEERCRED, the bytes, the queue
// order and the backlogs itself, then serves.
func TestUnixListenRestore(t *testing.T) {
	t.Parallel()
	p, path := startUnixListen(t)
	dir := dumpKill(t, p)
	out, errOut, code := runLazycr(t, "show", dir)
	if code != 0 {
		t.Fatalf("lazycr show: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"listening on " + path + ", backlog 5, 1 connections waiting", "listening on @lazycr-unixlisten-", "accepted from " + path, "bound to " + filepath.Dir(path) + "/d"} {
		if !strings.Contains(out, want) {
			t.Errorf("lazycr show lacks %q:\n%s", want, out)
		}
	}
	// The killed original left its socket file: restore replaces it.
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatalf("the dumped process's socket file: %v", err)
	}
	rp := restoreFrom(t, p, dir)
	if err := unix.Kill(rp.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, rp)
	checkSequence(t, rp, "wait", "check", "serve")
}

// TestUnixListenLazy: the same sockets migrate lazily on one host
// (restore --new-pid): their names are still the frozen original's, so
// the target takes every named socket, with its listener's connections,
// over from it; the program's checks pass on the very same sockets.
func TestUnixListenLazy(t *testing.T) {
	t.Parallel()
	p, _ := startUnixListen(t)
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	if _, e := m.target.output(); !strings.Contains(e, "over from the frozen original") {
		t.Errorf("the target took no unix socket over:\n%s", e)
	}
	if err := unix.Kill(m.restored.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, m.restored)
	checkSequence(t, m.restored, "wait", "check", "serve")
}

// TestUnixListenPathTaken: a restore whose listener path now names another
// file is refused, naming the path, and leaves the file alone.
func TestUnixListenPathTaken(t *testing.T) {
	t.Parallel()
	p, path := startUnixListen(t)
	dir := dumpKill(t, p)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore over a replaced socket path", errOut, code, regexp.QuoteMeta(path)+`: the path exists .* not the socket file the dump saw: it is a regular file \(mode 0600\), not a socket`)
	if b, err := os.ReadFile(path); err != nil || string(b) != "someone else's" {
		t.Errorf("%s after the refused restore: %q, %v", path, b, err)
	}
}

// startUnixMsg starts testdata/progs/unixmsg.c in a fresh directory and
// waits until its messages are queued.
func startUnixMsg(t *testing.T) *proc {
	t.Helper()
	dir, err := os.MkdirTemp("", "lazycr-unixmsg-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := start(t, buildC(t, "unixmsg"), dir)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wait")
	return p
}

// TestUnixMessagesRestore: datagrams waiting at both ends of a datagram
// pair, seqpacket messages waiting at both ends of an accepted
// connection, and datagrams from an unnamed sender waiting at a bound
// socket come back from dump -D / restore -D: the program reads each
// with its bytes, boundary and sender address, and no more.
func TestUnixMessagesRestore(t *testing.T) {
	t.Parallel()
	p := startUnixMsg(t)
	dir := dumpKill(t, p)
	out, _, _ := runLazycr(t, "show", dir)
	for _, want := range []string{"3 messages waiting", "2 messages waiting", "1 messages waiting"} {
		if !strings.Contains(out, want) {
			t.Errorf("lazycr show lacks %q:\n%s", want, out)
		}
	}
	rp := restoreFrom(t, p, dir)
	if err := unix.Kill(rp.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, rp)
	checkSequence(t, rp, "wait", "check", "serve")
}

// TestUnixMessagesLeaveRunning: reading the queued messages leaves them
// to the process: after dump --leave-running it reads every one itself.
func TestUnixMessagesLeaveRunning(t *testing.T) {
	t.Parallel()
	p := startUnixMsg(t)
	dumpLeaveRunning(t, p.pid)
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, p)
}

// TestUnixRightsRefused: a file descriptor in flight on a unix socket
// (SCM_RIGHTS sent, not received) is refused, naming the fd and the
// socket, and the process keeps running with it still queued.
func TestUnixRightsRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "unixrights"))
	var r struct {
		Pid int `json:"pid"`
		Fd  int `json:"fd"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir, "--leave-running")
	requireExit1(t, "dump with SCM_RIGHTS in flight", errOut, code,
		`fd `+strconv.Itoa(r.Fd)+` \(socket:\[\d+\]\).*unix socket: socket:\[\d+\] has file descriptors or credentials queued`)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed dump left %s behind (stat: %v)", dir, err)
	}
	requireProgress(t, p, "main")
}

// TestUnixTreeSplitRefused: a listener in one member of a tree with a
// connection waiting in its queue from another member is refused, naming
// both sockets, and the tree runs on.
func TestUnixTreeSplitRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "unixtree"))
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Child, unix.SIGKILL) })
	requireProgress(t, p, "main")
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir, "--leave-running")
	requireExit1(t, "dump of a listener whose waiting connection another member holds", errOut, code,
		`socket:\[\d+\].* socket:\[\d+\], which another member of the tree holds`)
	requireProgress(t, p, "main")
	requireRunning(t, r.Child)
}

// TestUnixPythonServer: a Python asyncio unix-socket server on a path,
// with a client connection to itself kept open, is restored; the kept
// connection and fresh ones go on (each answer checked by the program).
func TestUnixPythonServer(t *testing.T) {
	t.Parallel()
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on this machine")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", "unixserve.py"))
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "lazycr-unixpy-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := start(t, py, "-u", script, filepath.Join(dir, "s"))
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "kept", "fresh")
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "kept", "fresh")
	checkSequence(t, rp, "kept", "fresh")
}

// TestUnixListenPathInUse: a restore into another network namespace
// (host C) of a listener whose original still runs (dump
// --leave-running on host B) is refused naming the path and the pid that
// still holds it, and the original's socket file stays.
func TestUnixListenPathInUse(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	dir, err := os.MkdirTemp("", "lazycr-unix-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := env.startProg(t, buildC(t, "unixlisten"), dir)
	var r struct {
		Pid  int    `json:"pid"`
		Path string `json:"path"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wait")
	img := filepath.Join(t.TempDir(), "img")
	if out, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", img, "--leave-running"); code != 0 {
		t.Fatalf("lazycr dump --leave-running: exit %d\n%s\n%s", code, out, errOut)
	}
	var before unix.Stat_t
	if err := unix.Lstat(r.Path, &before); err != nil {
		t.Fatal(err)
	}
	// Into host C on purpose: --netns-change.
	b, err := lazyCmd(t, env.dst, "restore", "-D", img, "--new-pid", "--netns-change").CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	requireExit1(t, "restore in host C while the original holds the path", string(b), code,
		regexp.QuoteMeta(r.Path)+`: the dumped socket:\[\d+\] is still bound to it \(held by pid `+strconv.Itoa(p.pid)+` `)
	var after unix.Stat_t
	if err := unix.Lstat(r.Path, &after); err != nil || after.Ino != before.Ino {
		t.Errorf("the original's socket file %s after the refused restore: inode %d (was %d), %v", r.Path, after.Ino, before.Ino, err)
	}
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, p)
}

// TestUnixListenPendingOutside: a connection from outside the dump (the
// test) waiting in a listener's queue is refused at restore, naming the
// client's pid, unless --unix-reconnect, which drops it: the client sees
// its connection end, and the program's own queue checks pass.
func TestUnixListenPendingOutside(t *testing.T) {
	t.Parallel()
	p, path := startUnixListen(t)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := dumpKill(t, p)
	if err := c.SetReadDeadline(time.Now().Add(progressTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the connection to the killed original still reads")
	}
	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore of a connection from outside waiting on a listener", errOut, code,
		`1 connections from outside the dump waited to be accepted on `+regexp.QuoteMeta(path)+` \(the first from socket:\[\d+\], held by pids \[[0-9 ]*\b`+strconv.Itoa(os.Getpid())+`\b[0-9 ]*\] at dump\): pass --unix-reconnect`)
	rp := restoreFrom(t, p, dir, "--unix-reconnect")
	if err := unix.Kill(rp.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, rp)
	checkSequence(t, rp, "wait", "check", "serve")
}

// TestUnixDeadPeerRestore: sockets whose peer has closed come back so:
// stream clients of servers that sent their last bytes and closed (on an
// abstract name, and on a path since removed), a datagram socket
// connected to one that is gone, one end of a pair whose other end sent a
// byte and closed. The program checks getpeername, the bytes, the EOF,
// and that a send to the gone datagram peer is refused.
func TestUnixDeadPeerRestore(t *testing.T) {
	t.Parallel()
	dir, err := os.MkdirTemp("", "lazycr-unixdead-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := start(t, buildC(t, "unixdead"), dir)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wait")
	img := dumpKill(t, p)
	if out, _, _ := runLazycr(t, "show", img); strings.Count(out, "which has closed") != 4 {
		t.Errorf("lazycr show does not list 4 sockets whose peer closed:\n%s", out)
	}
	rp := restoreFrom(t, p, img)
	if err := unix.Kill(rp.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, rp)
	checkSequence(t, rp, "wait", "check", "serve")
}

// TestUnixTreeListener: a tree whose parent holds a unix listener (the
// child holds nothing of it) is dumped and restored; the parent's
// listener takes its own connections again ("self" advances only on a
// round trip through it). Before, dump/tree.go took every unix socket
// without a member peer for half of a split pair and refused the tree.
func TestUnixTreeListener(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "unixtree"), "alone")
	var r struct {
		Pid   int `json:"pid"`
		Child int `json:"child"`
	}
	waitReport(t, p, &r)
	t.Cleanup(func() { unix.Kill(r.Child, unix.SIGKILL) })
	requireProgress(t, p, "main", "self")
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "main", "self")
	checkSequence(t, rp, "main", "self")
	requireRunning(t, r.Child)
}

// requireCheckedServing waits for a unixmsg-style program's one "check 1"
// tick (it checked every queued message after SIGUSR1), then for its
// "serve" counter to move. "check" ticks once, so it may already be 1 when
// this is called: requireProgress on it would wait for a second tick that
// never comes (TestUnixMessagesLeaveRunning failed so in CI).
func requireCheckedServing(t *testing.T, p *proc) {
	t.Helper()
	waitFor(t, fmt.Sprintf("pid %d to tick check", p.pid), func() bool {
		if p.exited() {
			t.Fatalf("pid %d exited (%v); stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		return progress(t, p)["check"] >= 1
	})
	requireProgress(t, p, "serve")
}
