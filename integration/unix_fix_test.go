package integration

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startUnixFix starts testdata/progs/unixfix.c with group in env's source
// host (a fresh directory, short: sun_path holds 107 bytes) and waits
// until it is set up.
func startUnixFix(t *testing.T, env lazyEnv, group string) *proc {
	t.Helper()
	dir, err := os.MkdirTemp("", "lazycr-ufx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := env.startProg(t, buildC(t, "unixfix"), dir, group)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wait")
	return p
}

// requireUnixFixChecks lets the restored program check its sockets and
// serve over them.
func requireUnixFixChecks(t *testing.T, p *proc) {
	t.Helper()
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	requireCheckedServing(t, p)
	checkSequence(t, p, "wait", "check", "serve")
}

// TestUnixSeqpacketLastMessage: a seqpacket socket whose peer sent a last
// message and then shut down writing is dumped (the peek past the message
// is end of stream, not a zero-length message: QA2 Q3) and restored with
// the message and the end of stream after it, in that order.
func TestUnixSeqpacketLastMessage(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "seqlast")
	dir := dumpKill(t, p)
	rp := restoreFrom(t, p, dir)
	requireUnixFixChecks(t, rp)
}

// TestUnixPathLazyNetns: a lazy migration between two network namespaces
// of one host takes a listener on a path (and its connection) over from
// the frozen original, as in one namespace: the path is reached from any
// network namespace (QA2 Q12). The program reads its queued bytes and
// connects to its path anew.
func TestUnixPathLazyNetns(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	p := startUnixFix(t, env, "path")
	m := migrateLazy(t, env, p, nil, nil)
	if _, e := m.target.output(); !strings.Contains(e, "over from the frozen original") {
		t.Errorf("the target took no unix socket over:\n%s", e)
	}
	requireUnixFixChecks(t, m.restored)
}

// TestUnixPathLazyNetnsDumpAgain: the copy a lazy migration between two
// network namespaces made holds the original's listener, which lives in
// the source's network namespace, and a connection within the process
// rebuilt through a temporary listener of the same path (QA2 Q16): a
// plain dump of the copy, run in the target's namespace, reads the
// listener in its own namespace and rebuilds the connection again; the
// restored program reads its queued bytes, finds SO_PEERCRED naming it,
// and connects to its path anew.
func TestUnixPathLazyNetnsDumpAgain(t *testing.T) {
	t.Parallel()
	env := lazyTwoHosts(t)
	p := startUnixFix(t, env, "path")
	m := migrateLazy(t, env, p, nil, nil)
	cp := m.restored
	dir := filepath.Join(t.TempDir(), "img")
	dump := []string{"dump", "--pid", strconv.Itoa(cp.pid), "-D", dir}
	startLazyRun(t, "lazycr "+strings.Join(dump, " ")+" in the target's namespace", lazyCmd(t, env.dst, dump...)).requireExit(t, 0)
	select {
	case <-cp.done:
	case <-time.After(goneTimeout):
		t.Fatalf("pid %d still runs %v after `lazycr dump` (state %s)", cp.pid, goneTimeout, procState(cp.pid))
	}
	waitGone(t, cp.pid)
	progress(t, cp) // consume every tick the copy wrote before it was frozen
	r := startLazyRun(t, "lazycr restore -D "+dir+" in the target's namespace", lazyCmd(t, env.dst, "restore", "-D", dir))
	r.requireExit(t, 0)
	out, _ := r.output()
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || pid <= 0 {
		t.Fatalf("lazycr restore: stdout %q is not a pid", out)
	}
	rp := adopt(t, pid)
	rp.continueOutput(cp, true)
	requireUnixFixChecks(t, rp)
}

// TestUnixDgramZeroLengthRefused: a zero-length datagram waiting at a
// datagram pair (a wake-up token the program may keep queued forever) is
// refused at once, naming it, not as a passing state retried five times
// (QA2 Q17); the process runs on.
func TestUnixDgramZeroLengthRefused(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "dgramzero")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump of a zero-length datagram", errOut, code, `zero-length message queued after 0 others`)
	if strings.Contains(errOut, "passing state") || strings.Contains(errOut, "tries") {
		t.Errorf("dump of a zero-length datagram retried it as a passing state:\n%s", errOut)
	}
	requireProgress(t, p, "wait")
}

// TestUnixDeadPeerServerLives: a client whose server closed its connection
// but lives on, still listening on its path (an HTTP/1.0-style daemon), is
// restored while that server runs: its closed peer is rebuilt under a
// temporary name, since the path is taken (QA2 Q8); the program reads the
// server's bytes, then end of stream.
func TestUnixDeadPeerServerLives(t *testing.T) {
	t.Parallel()
	needRoot(t)
	dir, err := os.MkdirTemp("", "lazycr-ufx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	p := start(t, buildC(t, "unixfix"), dir, "deadpeer")
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wait")
	img := dumpKill(t, p)
	rp := restoreFrom(t, p, img)
	requireUnixFixChecks(t, rp)
	// The server still serves on its path.
	c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatalf("the server's path after the restore: %v", err)
	}
	c.Close()
}

// TestUnixSelfConnectedLazy: a lazy migration on one host (--new-pid)
// takes a listener on a path over from the frozen original, but makes the
// connection accepted from it whose both ends are in the process afresh:
// SO_PEERCRED of either end names the migrated process, not the original
// (QA2 Q4), and the bytes queued on it come along.
func TestUnixSelfConnectedLazy(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "path")
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	if _, e := m.target.output(); !strings.Contains(e, "rebuilt 1 connections accepted from") {
		t.Errorf("the target rebuilt no connection within the process:\n%s", e)
	}
	requireUnixFixChecks(t, m.restored)
}

// TestUnixPathClosedListener: a connection within the process accepted
// from a path listener the process has closed since was refused ("from a
// listener that is closed"); it is now rebuilt through a temporary
// listener of that path, as after a lazy migration on one host (QA2
// Q16): plainly, then lazily on one host. The program reads its queued
// bytes and finds the path at both ends and SO_PEERCRED naming it.
func TestUnixPathClosedListener(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "pathclosed")
	rp := restoreFrom(t, p, dumpKill(t, p))
	m := migrateLazy(t, lazyEnv{}, rp, nil, nil)
	requireUnixFixChecks(t, m.restored)
}

// TestUnixSelfConnectedLazyTwice: a process migrated lazily on one host
// is migrated lazily again (back, say): the listener is taken over again,
// and the connection the first migration rebuilt through a temporary
// listener is rebuilt again (QA2 Q16).
func TestUnixSelfConnectedLazyTwice(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "path")
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	m2 := migrateLazy(t, lazyEnv{}, m.restored, nil, nil)
	requireUnixFixChecks(t, m2.restored)
}

// TestUnixSeqpacketZeroLengthRefused: a zero-length message waiting
// before the end of stream of a seqpacket socket is not taken for the end
// of stream (nothing queued): the dump refuses it, naming it, and the
// process runs on.
func TestUnixSeqpacketZeroLengthRefused(t *testing.T) {
	t.Parallel()
	p := startUnixFix(t, lazyEnv{}, "seqzero")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", filepath.Join(t.TempDir(), "img"))
	requireExit1(t, "dump of a zero-length seqpacket message", errOut, code, `zero-length message queued`)
	requireProgress(t, p, "wait")
}
