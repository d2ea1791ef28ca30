package integration

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/netlock"
)

// Established TCP connections across `dump -D` / `restore -D` on one host
// (files/tcp.go, netlock held locks). The test holds the other end of the
// connection and checks, byte for byte, that the stream it wrote comes back
// echoed in order with nothing lost or repeated, with data queued in both
// directions at the moment of the dump.

// tcpReport is tcpecho's first line.
type tcpReport struct {
	Pid  int `json:"pid"`
	Port int `json:"port"`
}

// streamByte is byte off of the test's stream: not periodic over small
// windows, so a lost, repeated or reordered chunk shows.
func streamByte(off int64) byte {
	x := uint64(off) * 0x9e3779b97f4a7c15
	return byte(x>>56) ^ byte(off)
}

// tcpQueues reads the send and receive queue sizes of the established
// socket with local port port from the test's network namespace's
// tcp{,6} table (proc(5)). It reads /proc/thread-self/net, on a locked
// thread, not /proc/net (/proc/self/net: the main thread's namespace):
// a hosts.Host.Do whose goroutine ran on the main thread leaves that
// thread, wedged by the runtime, in the host's namespace.
func tcpQueues(t *testing.T, v6 bool, port int) (tx, rx uint64, ok bool) {
	t.Helper()
	path := "/proc/thread-self/net/tcp"
	if v6 {
		path = "/proc/thread-self/net/tcp6"
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return tcpQueuesAt(t, path, port)
}

func loopbackAddr(v6 bool) string {
	if v6 {
		return "[::1]"
	}
	return "127.0.0.1"
}

// tcpPeer connects the test to tcpecho: as the client of a server-mode
// tcpecho, or as the server a client-mode tcpecho connects to. It returns
// the process, the test's end, and the port of the process's socket.
func tcpPeer(t *testing.T, bin string, v6 bool, mode string) (*proc, *net.TCPConn, int) {
	t.Helper()
	fam := "4"
	if v6 {
		fam = "6"
	}
	var rep tcpReport
	if strings.HasPrefix(mode, "server") {
		p := start(t, bin, fam, mode)
		waitReport(t, p, &rep)
		addr := loopbackAddr(v6)
		if mode == "server-dual" {
			addr = "127.0.0.1" // an IPv4 peer of an IPv6 socket
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("%s:%d", addr, rep.Port), reportTimeout)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		waitTick(t, p, "conn", 1)
		// The accepted socket has the listener's port; find it by the
		// test's own port as its peer is not what /proc/net/tcp filters on:
		// the server side's local port is rep.Port too (listener is 0A).
		return p, c.(*net.TCPConn), rep.Port
	}
	l, err := net.Listen("tcp", loopbackAddr(v6)+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := start(t, bin, fam, mode, strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	l.(*net.TCPListener).SetDeadline(time.Now().Add(reportTimeout))
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	waitReport(t, p, &rep)
	waitTick(t, p, "conn", 1)
	return p, c.(*net.TCPConn), rep.Port
}

// TestTCPEstablishedDumpRestore: IPv4 and IPv6, the process on the server
// and on the client side (and, on the server side, with the connection at
// a lower fd than its listener, and an IPv6 socket talking IPv4 through a
// v4-mapped address). The test writes a 16 MiB stream without reading
// until the process's socket has bytes in both its queues, dumps it (the
// process is killed), restores it, then reads the echo and compares it.
func TestTCPEstablishedDumpRestore(t *testing.T) {
	bin := buildC(t, "tcpecho")
	for _, v6 := range []bool{false, true} {
		modes := []string{"server", "client", "server-lowfd"}
		if v6 {
			modes = append(modes, "server-dual")
		}
		for _, mode := range modes {
			name := "ipv4"
			if v6 {
				name = "ipv6"
			}
			t.Run(name+"/"+mode, func(t *testing.T) { testTCPEcho(t, bin, v6, mode) })
		}
	}
}

func testTCPEcho(t *testing.T, bin string, v6 bool, mode string) {
	p, c, port := tcpPeer(t, bin, v6, mode)
	const total = 16 << 20
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	var wrote int64
	go func() {
		buf := make([]byte, 32<<10)
		var off int64
		for off < total {
			for i := range buf {
				buf[i] = streamByte(off + int64(i))
			}
			n, err := c.Write(buf)
			off += int64(n)
			if err != nil {
				written <- err
				return
			}
		}
		wrote = off
		written <- c.CloseWrite()
	}()
	// Until the process's socket holds unread and unsent bytes: the test
	// does not read, so the echo blocks and both queues fill.
	deadline := time.Now().Add(progressTimeout)
	for {
		tx, rx, ok := tcpQueues(t, v6, port)
		if ok && tx > 0 && rx > 0 {
			t.Logf("at dump: socket of pid %d has %d bytes to send, %d to read", p.pid, tx, rx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the socket of pid %d never had both queues filled (tx %d rx %d found %v)", p.pid, tx, rx, ok)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	dir := dumpKill(t, p)
	img := show(t, dir)
	var inq, outq int
	for _, f := range img.fds(t, p.pid).Fds {
		if st := f.GetInetSocket().GetTcp(); st != nil {
			inq, outq = len(st.Inq), len(st.Outq)
		}
	}
	if inq == 0 || outq == 0 {
		t.Fatalf("image holds %d unread and %d unsent bytes: want both", inq, outq)
	}
	lock := img.fds(t, p.pid).TcpLock
	if lock == "" || !heldLockExists(t, lock) {
		t.Fatalf("after the dump the held lock %q is not installed", lock)
	}
	r := restoreFrom(t, p, dir)
	if heldLockExists(t, lock) {
		t.Errorf("held lock %s still there after the restore", lock)
	}

	// Read the whole echo and compare it with the stream.
	br := bufio.NewReaderSize(c, 64<<10)
	buf := make([]byte, 64<<10)
	var off int64
	for off < total {
		n, err := br.Read(buf)
		for i := 0; i < n; i++ {
			if buf[i] != streamByte(off+int64(i)) {
				t.Fatalf("echo byte %d is %#x, want %#x (a lost, repeated or reordered byte)", off+int64(i), buf[i], streamByte(off+int64(i)))
			}
		}
		off += int64(n)
		if err != nil {
			t.Fatalf("read echo after %d of %d bytes: %v (restored pid %d: %s)", off, total, err, r.pid, procState(r.pid))
		}
	}
	if err := <-written; err != nil {
		t.Fatalf("write stream: %v", err)
	}
	if wrote != total {
		t.Fatalf("wrote %d bytes", wrote)
	}
	// The process sees the end of the stream and exits; nothing more
	// comes back.
	if n, err := br.Read(buf); err != io.EOF {
		t.Fatalf("after the echo: %d bytes, %v; want EOF", n, err)
	}
}

// heldLocks lists the held lock tables of the test's network namespace.
func heldLocks(t *testing.T) []string {
	t.Helper()
	ns, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	held, err := netlock.ListHeld(ns)
	if err != nil {
		t.Fatal(err)
	}
	return held
}

func heldLockExists(t *testing.T, name string) bool {
	for _, h := range heldLocks(t) {
		if h == name {
			return true
		}
	}
	return false
}

// TestTCPUnlockHeld: the held lock of an image that is not restored stays
// (its peer's packets are dropped: the connection hangs, it is not reset)
// until `lazycr unlock` removes it; then the peer's next segment meets no
// socket and the connection is reset.
func TestTCPUnlockHeld(t *testing.T) {
	bin := buildC(t, "tcpecho")
	p, c, _ := tcpPeer(t, bin, false, "server")
	echoRoundTrip(t, c, "before")
	dir := dumpKill(t, p)
	lock := show(t, dir).fds(t, p.pid).TcpLock
	out, errOut, code := runLazycr(t, "unlock")
	if code != 0 || !strings.Contains(out, lock+"\n") {
		t.Fatalf("lazycr unlock: exit %d, stdout %q (want %s listed)\n%s", code, out, lock, errOut)
	}
	// Held: the write is dropped, no reset comes back, and the peer
	// retransmits; once it has, its connection must still be established.
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(lazycrTimeout)
	for {
		ti := tcpInfoOf(t, c)
		if ti.State != 1 {
			t.Fatalf("peer in TCP state %d while the lock is held, want ESTABLISHED", ti.State)
		}
		if ti.Total_retrans > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the peer never retransmitted its dropped write")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	if _, errOut, code := runLazycr(t, "unlock", lock); code != 0 {
		t.Fatalf("lazycr unlock %s: exit %d\n%s", lock, code, errOut)
	}
	if heldLockExists(t, lock) {
		t.Fatalf("%s still there after lazycr unlock", lock)
	}
	// The peer's retransmission now meets no socket: reset.
	c.SetReadDeadline(time.Now().Add(lazycrTimeout))
	if n, err := c.Read(make([]byte, 8)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after unlock: %d bytes, %v; want ECONNRESET", n, err)
	}
}

// tcpInfoOf reads TCP_INFO of the test's end of a connection.
func tcpInfoOf(t *testing.T, c *net.TCPConn) *unix.TCPInfo {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ti *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) { ti, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return ti
}
