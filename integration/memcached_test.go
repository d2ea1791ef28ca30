package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mcConn is a memcached text-protocol client on one connection (the
// test's; never reconnected).
type mcConn struct {
	c net.Conn
	r *bufio.Reader
}

func (m *mcConn) line() (string, error) {
	l, err := m.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read memcached reply: %w", err)
	}
	return strings.TrimSuffix(l, "\r\n"), nil
}

// set stores key=val and checks memcached's STORED.
func (m *mcConn) set(t *testing.T, key, val string) {
	t.Helper()
	if _, err := fmt.Fprintf(m.c, "set %s 0 0 %d\r\n%s\r\n", key, len(val), val); err != nil {
		t.Fatalf("send set %s: %v", key, err)
	}
	if l, err := m.line(); err != nil || l != "STORED" {
		t.Fatalf("set %s: %q %v", key, l, err)
	}
}

// getReply reads the reply to one `get key`: the value, or ok false for a
// miss.
func (m *mcConn) getReply(key string) (val string, ok bool, err error) {
	l, err := m.line()
	if err != nil {
		return "", false, err
	}
	if l == "END" {
		return "", false, nil
	}
	f := strings.Fields(l)
	if len(f) != 4 || f[0] != "VALUE" || f[1] != key {
		return "", false, fmt.Errorf("get %s: reply %q", key, l)
	}
	n, err := strconv.Atoi(f[3])
	if err != nil || n < 0 {
		return "", false, fmt.Errorf("get %s: bad length in %q", key, l)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(m.r, b); err != nil {
		return "", false, fmt.Errorf("get %s: read value: %w", key, err)
	}
	if end, err := m.line(); err != nil || end != "END" {
		return "", false, fmt.Errorf("get %s: %q after the value (%v)", key, end, err)
	}
	return string(b[:n]), true, nil
}

func (m *mcConn) get(t *testing.T, key string) (string, bool) {
	t.Helper()
	if _, err := fmt.Fprintf(m.c, "get %s\r\n", key); err != nil {
		t.Fatalf("send get %s: %v", key, err)
	}
	v, ok, err := m.getReply(key)
	if err != nil {
		t.Fatal(err)
	}
	return v, ok
}

// mcValue is the value the test stores under key i.
func mcValue(i int) string {
	return fmt.Sprintf("v%d:%s", i, strings.Repeat(strconv.Itoa(i%10), 200+i%97))
}

// startMemcached runs a multi-threaded memcached on a free port of
// 127.0.0.1 (as the init of a new PID namespace with pidns) and returns
// it with its port.
func startMemcached(t *testing.T, pidns bool) (*proc, int) {
	t.Helper()
	server, err := exec.LookPath("memcached")
	if err != nil {
		t.Skip("memcached not found (scripts/test.sh installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // memcached takes the port next: a free one, never a fixed one
	adjust := func(*exec.Cmd) {}
	if pidns {
		adjust = func(c *exec.Cmd) { c.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID} }
	}
	p := startWith(t, adjust, server, "-u", "root", "-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-t", "4", "-m", "64")
	return p, port
}

// dialWait connects to 127.0.0.1:port, polling until p listens.
func dialWait(t *testing.T, p *proc, port int) net.Conn {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			return c
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("server pid %d on port %d: %v (exited %v)\n%s", p.pid, port, err, p.exited(), p.stderr())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// TestMemcachedDumpRestore: memcached (4 worker threads) with one
// connected client (the test) is dumped with `dump -D` while a pipeline of
// gets is in flight and restored with `restore -D`; the same connection
// then delivers every reply in order with the values set before, and sets
// and gets keep working on it.
func TestMemcachedDumpRestore(t *testing.T) {
	needRoot(t)
	p, port := startMemcached(t, false)
	c := dialWait(t, p, port)
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	m := &mcConn{c: c, r: bufio.NewReaderSize(c, 1<<20)}
	const keys = 2000
	for i := 0; i < keys; i++ {
		m.set(t, "key:"+strconv.Itoa(i), mcValue(i))
	}
	if v, ok := m.get(t, "key:7"); !ok || v != mcValue(7) {
		t.Fatalf("get key:7 before dump: %q %v", v, ok)
	}
	totalBefore, currBefore := m.stat(t, "total_connections"), m.stat(t, "curr_connections")

	// A pipeline the test does not read yet: replies pile up in
	// memcached's socket (and the test's), requests in flight. The
	// test's receive buffer is fixed small (SO_RCVBUF turns autotuning
	// off, tcp(7)) so that memcached's socket keeps replies queued until
	// the dump (TestTCPRedisDumpRestore says why).
	if err := c.(*net.TCPConn).SetReadBuffer(128 << 10); err != nil {
		t.Fatal(err)
	}
	const n = 20000
	sent := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(c)
		for i := 0; i < n; i++ {
			if _, err := fmt.Fprintf(w, "get key:%d\r\n", i%keys); err != nil {
				sent <- fmt.Errorf("send get %d: %w", i, err)
				return
			}
		}
		if err := w.Flush(); err != nil {
			sent <- fmt.Errorf("send the pipeline: %w", err)
			return
		}
		sent <- nil
	}()
	waitRepliesQueued(t, port, "memcached")
	r := restoreAdopt(t, dumpKill(t, p))

	for i := 0; i < n; i++ {
		key := "key:" + strconv.Itoa(i%keys)
		v, ok, err := m.getReply(key)
		if err != nil || !ok || v != mcValue(i%keys) {
			t.Fatalf("reply %d of the pipeline: %.40q found %v, %v (restored pid %d, state %s)", i, v, ok, err, r.pid, procState(r.pid))
		}
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < keys; i += 97 {
		if v, ok := m.get(t, "key:"+strconv.Itoa(i)); !ok || v != mcValue(i) {
			t.Fatalf("get key:%d after restore: %.40q %v", i, v, ok)
		}
	}
	m.set(t, "after", "restore")
	if v, ok := m.get(t, "after"); !ok || v != "restore" {
		t.Fatalf("get after: %q %v", v, ok)
	}
	if got := m.stat(t, "total_connections"); got != totalBefore {
		t.Errorf("total_connections %s after restore, %s before: a connection was made", got, totalBefore)
	}
	if got := m.stat(t, "curr_connections"); got != currBefore {
		t.Errorf("curr_connections %s after restore, %s before", got, currBefore)
	}
}

// stat returns one value of memcached's `stats`.
func (m *mcConn) stat(t *testing.T, name string) string {
	t.Helper()
	if _, err := fmt.Fprintf(m.c, "stats\r\n"); err != nil {
		t.Fatal(err)
	}
	val := ""
	for {
		l, err := m.line()
		if err != nil {
			t.Fatal(err)
		}
		if l == "END" {
			break
		}
		if v, ok := strings.CutPrefix(l, "STAT "+name+" "); ok {
			val = v
		}
	}
	if val == "" {
		t.Fatalf("stats has no %s", name)
	}
	return val
}

// TestMemcachedLazySameHost: a listening memcached with no client
// connected migrates lazily to a new pid on the same host (source and
// target in this network namespace). The frozen original holds the port
// until the target says DONE, so the target takes the listening socket
// itself over (files/inet.go); afterwards a new client finds the values
// set before, on the same port.
func TestMemcachedLazySameHost(t *testing.T) {
	needRoot(t)
	p, port := startMemcached(t, false)
	c := dialWait(t, p, port)
	m := &mcConn{c: c, r: bufio.NewReader(c)}
	const keys = 500
	for i := 0; i < keys; i++ {
		m.set(t, "key:"+strconv.Itoa(i), mcValue(i))
	}
	c.Close()
	deadline := time.Now().Add(progressTimeout)
	for { // memcached has closed its end: no client is connected at the freeze
		if !hasTCPConn(t, port) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client's connection to memcached does not go away")
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr)
	r := adopt(t, lazyResumedPID(t, dst))
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if _, e := dst.output(); !strings.Contains(e, "took the listening socket") {
		t.Errorf("the target did not take the listening socket over:\n%s", e)
	} else {
		t.Logf("target:\n%s", e)
	}

	c = dialWait(t, r, port)
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	m = &mcConn{c: c, r: bufio.NewReader(c)}
	for i := 0; i < keys; i++ {
		if v, ok := m.get(t, "key:"+strconv.Itoa(i)); !ok || v != mcValue(i) {
			t.Fatalf("get key:%d after the migration: %.40q %v", i, v, ok)
		}
	}
	m.set(t, "after", "migration")
	if v, ok := m.get(t, "after"); !ok || v != "migration" {
		t.Fatalf("get after: %q %v", v, ok)
	}
}

// hasTCPConn reports whether /proc/net/tcp has a socket on local port
// port that is not listening (through /proc/thread-self, as acceptQueue).
func hasTCPConn(t *testing.T, port int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] == "0A" {
			continue
		}
		_, lp, _ := strings.Cut(f[1], ":")
		if p, err := strconv.ParseUint(lp, 16, 16); err == nil && int(p) == port {
			return true
		}
	}
	return false
}

// TestMemcachedLazySameHostRollback: memcached, the init of its own PID
// namespace, migrates lazily with --pidns on one host; the target takes
// the listening socket over and then fails (failpoint restore.state), so the migration
// is rolled back: the original, released, still listens and serves on the
// same port. A second migration, into a new PID namespace, then succeeds.
func TestMemcachedLazySameHostRollback(t *testing.T) {
	needRoot(t)
	fp := failpointLazycr(t)
	p, port := startMemcached(t, true)
	c := dialWait(t, p, port)
	m := &mcConn{c: c, r: bufio.NewReader(c)}
	const keys = 200
	for i := 0; i < keys; i++ {
		m.set(t, "key:"+strconv.Itoa(i), mcValue(i))
	}
	c.Close()
	deadline := time.Now().Add(progressTimeout)
	for hasTCPConn(t, port) {
		if time.Now().After(deadline) {
			t.Fatal("the client's connection to memcached does not go away")
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	check := func(what string, srv *proc) {
		t.Helper()
		c := dialWait(t, srv, port)
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(lazycrTimeout)); err != nil {
			t.Fatal(err)
		}
		m := &mcConn{c: c, r: bufio.NewReader(c)}
		for i := 0; i < keys; i++ {
			if v, ok := m.get(t, "key:"+strconv.Itoa(i)); !ok || v != mcValue(i) {
				t.Fatalf("get key:%d %s: %.40q %v", i, what, v, ok)
			}
		}
	}

	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "2s")
	cmd := lazyCmd(t, nil, "restore", "--lazy-from", src.addr, "--pidns")
	cmd.Path, cmd.Args[0] = fp, fp
	cmd.Env = append(cmd.Env, "LAZYCR_FAILPOINT=restore.state")
	dst := startLazyRun(t, "target with failpoint restore.state", cmd)
	if code := dst.wait(t, lazycrTimeout); code != 1 {
		o, e := dst.output()
		t.Fatalf("target exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, o, e)
	}
	if _, e := dst.output(); !strings.Contains(e, "took the listening socket") || !strings.Contains(e, "failpoint restore.state") {
		t.Errorf("the target did not fail after taking the listening socket over:\n%s", e)
	}
	src.requireExit(t, 1)
	if _, e := src.output(); !strings.Contains(e, "released") {
		t.Errorf("source stderr does not say the process was released:\n%s", e)
	}
	if p.exited() {
		t.Fatalf("memcached pid %d exited after the rollback: %v", p.pid, p.waitErr)
	}
	check("from the original after the rollback", p)

	src = startLazySource(t, nil, p.pid, "127.0.0.1")
	ok := startLazyRun(t, "target into a new PID namespace", lazyCmd(t, nil, "restore", "--lazy-from", src.addr, "--pidns"))
	r := adopt(t, lazyResumedPID(t, ok))
	ok.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	check("after the migration into a new PID namespace", r)
}
