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
)

// TestRestorePrecheckKeepsTCPLock (QA2 Q1): redis-server with a TCP
// client and a unix-socket client (both the test's, not dumped) is
// dumped; the restore without --unix-reconnect is refused for the unix
// client, and the held network lock of the TCP connection must survive
// that refusal: the TCP client writes during the gap, and after the retry
// with --unix-reconnect it gets its reply on the same connection, not a
// reset.
func TestRestorePrecheckKeepsTCPLock(t *testing.T) {
	t.Parallel()
	needRoot(t)
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found (scripts/test.sh installs it)")
	}
	dir, err := os.MkdirTemp("", "lazycr-rpc-") // short: sun_path holds 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "redis.sock")
	port := freePort(t)
	p := start(t, server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--unixsocket", sock, "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no", "--daemonize", "no")
	var c net.Conn
	deadline := time.Now().Add(reportTimeout)
	for {
		if c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			break
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d: %v (exited %v)\n%s", port, err, p.exited(), p.stderr())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	tcp := &redisConn{c: c.(*net.TCPConn), r: bufio.NewReader(c)}
	if got := tcp.do(t, "INCR", "streamed"); got != "1" {
		t.Fatalf("INCR over TCP: %q", got)
	}
	ux := dialRedisUnix(t, sock)
	if got := ux.do(t, "SET", "unix", "client"); got != "OK" {
		t.Fatalf("SET over the unix socket: %q", got)
	}

	img := dumpKill(t, p)
	_, errOut, code := runLazycr(t, "restore", "-D", img)
	requireExit1(t, "restore without --unix-reconnect", errOut, code, `accepted on `+sock+`.*pass --unix-reconnect`)
	if strings.Contains(errOut, "held network lock is removed") {
		t.Errorf("the refused restore removed the held network lock:\n%s", errOut)
	}
	// In the gap: the TCP client writes. With the lock held the segment
	// is dropped (and retransmitted); without it, it meets no socket and
	// is reset.
	if err := tcp.write("INCR", "streamed"); err != nil {
		t.Fatalf("write during the gap: %v", err)
	}
	out, errOut, code := runLazycr(t, "restore", "-D", img, "--unix-reconnect")
	if code != 0 {
		t.Fatalf("lazycr restore --unix-reconnect: exit %d\n%s%s", code, out, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("lazycr restore: stdout %q is not a pid", out)
	}
	adopt(t, pid)
	if got, err := tcp.readReply(); err != nil || got != "2" {
		t.Fatalf("the INCR written during the gap: reply %q, %v; want 2 on the same connection", got, err)
	}
	if got := tcp.do(t, "INCR", "streamed"); got != "3" {
		t.Fatalf("INCR after the restore: %q", got)
	}
}

// TestRestoreFailBeforeTCPKeepsLock (QA2 Q1): a restore that fails in the
// fd step before it made any of the image's TCP connections (here: the
// file at its stdout was moved away, found only when fd 1 is opened)
// leaves the held network lock: once the file is back, the retry
// restores the connection and the peer's echo goes on.
func TestRestoreFailBeforeTCPKeepsLock(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "tcpecho")
	p, c, _ := tcpPeer(t, bin, false, "server")
	echoRoundTrip(t, c, "before the dump")
	dir := dumpKill(t, p)
	if got := lazycrTables(t, p.pid); len(got) != 1 {
		t.Fatalf("held locks after the dump: %v; want one", got)
	}
	moved := p.outPath + ".moved"
	if err := os.Rename(p.outPath, moved); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore with its stdout file moved away", errOut, code, `fd 1\b.*`+regexp.QuoteMeta(p.outPath))
	if got := lazycrTables(t, p.pid); len(got) != 1 {
		t.Fatalf("held locks after a restore that failed before the TCP connections: %v; want the dump's\n%s", got, errOut)
	}
	if err := os.Rename(moved, p.outPath); err != nil {
		t.Fatal(err)
	}
	rp := restoreFrom(t, p, dir)
	echoRoundTrip(t, c, "after the retry")
	if got := lazycrTables(t, rp.pid); len(got) != 0 {
		t.Errorf("held locks after the restore: %v", got)
	}
}
