package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisConn is a RESP client on one connection (the test's; never
// reconnected).
type redisConn struct {
	c net.Conn
	r *bufio.Reader
}

// send writes one command without waiting for its reply.
func (rc *redisConn) send(t *testing.T, args ...string) {
	t.Helper()
	if err := rc.write(args...); err != nil {
		t.Fatal(err)
	}
}

func (rc *redisConn) write(args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := rc.c.Write([]byte(b.String())); err != nil {
		return fmt.Errorf("send %v: %w", args, err)
	}
	return nil
}

// reply reads one reply: a simple string, an error (fails the test), an
// integer or a bulk string, as text.
func (rc *redisConn) reply(t *testing.T) string {
	t.Helper()
	r, err := rc.readReply()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// readReply is reply for any goroutine: errors come back.
func (rc *redisConn) readReply() (string, error) {
	line, err := rc.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read reply: %w", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("empty reply line")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis error: %s", line)
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < -1 {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n == -1 {
			return "(nil)", nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(rc.r, b); err != nil {
			return "", fmt.Errorf("read bulk: %w", err)
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func (rc *redisConn) do(t *testing.T, args ...string) string {
	t.Helper()
	rc.send(t, args...)
	return rc.reply(t)
}

// TestTCPRedisDumpRestore: redis-server with one connected client (the
// test) is dumped with `dump -D` while a pipeline of GETs is in flight and
// restored with `restore -D`; the same connection then delivers every
// reply in order, DEBUG DIGEST is unchanged, and writes work.
func TestTCPRedisDumpRestore(t *testing.T) {
	needRoot(t)
	server, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not found (scripts/test.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // redis takes the port next: a free one, never a fixed one
	dir := t.TempDir()
	p := start(t, server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--enable-debug-command", "yes", "--protected-mode", "no", "--daemonize", "no")
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
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	rc := &redisConn{c: c.(*net.TCPConn), r: bufio.NewReaderSize(c, 1<<20)}
	if got := rc.do(t, "DEBUG", "POPULATE", "20000", "key", "300"); got != "OK" {
		t.Fatalf("DEBUG POPULATE: %q", got)
	}
	want := rc.do(t, "DEBUG", "DIGEST")
	val := rc.do(t, "GET", "key:7")
	if len(val) != 300 {
		t.Fatalf("GET key:7: %d bytes", len(val))
	}

	// A pipeline the test does not read yet: replies pile up in redis's
	// socket (and the test's), requests in flight. The test's receive
	// buffer is fixed small (SO_RCVBUF turns autotuning off, tcp(7)), so
	// the ~6 MB of replies cannot all sit in it (net.ipv4.tcp_rmem's max
	// is 32 MiB here): redis's socket must keep some queued, however fast
	// it and the test ran, until the dump.
	if err := c.(*net.TCPConn).SetReadBuffer(128 << 10); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	sent := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if err := rc.write("GET", "key:"+strconv.Itoa(i)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	waitRepliesQueued(t, port, "redis")
	r := restoreAdopt(t, dumpKill(t, p))

	for i := 0; i < n; i++ {
		got := rc.reply(t)
		v := "value:" + strconv.Itoa(i) // DEBUG POPULATE's value, padded to 300 bytes
		if len(got) != 300 || !strings.HasPrefix(got, v) || got[len(v)] >= '0' && got[len(v)] <= '9' {
			t.Fatalf("reply %d of the pipeline: %.40q (restored pid %d, state %s)", i, got, r.pid, procState(r.pid))
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if got := rc.do(t, "DEBUG", "DIGEST"); got != want {
		t.Fatalf("DEBUG DIGEST after restore %s, before %s", got, want)
	}
	if got := rc.do(t, "SET", "after", "restore"); got != "OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := rc.do(t, "GET", "after"); got != "restore" {
		t.Fatalf("GET after: %q", got)
	}
	if got := rc.do(t, "INFO", "clients"); !strings.Contains(got, "connected_clients:1") {
		t.Errorf("INFO clients:\n%s", got)
	}
}
