package integration

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTCPLiveProbe: a restored connection that goes live (its lock
// removed) sends its peer a window probe, so that the peer's answer tells
// it at once what the peer has received and its window. A quiet
// connection (nothing unacknowledged or unread on either side) migrates
// lazily from B to C; the client on A, which sends nothing, must then
// receive a segment from the restored socket. Before the fix the only
// probe (from TCP_REPAIR off) went out while the lock still dropped every
// packet: the peer heard nothing, and data whose ACK the lock had dropped
// waited for the restored socket's first retransmission, 3 s later (a
// repaired socket has no RTT estimate: TCP_TIMEOUT_FALLBACK).
func TestTCPLiveProbe(t *testing.T) {
	l := newLazyTCP(t)
	deadline := time.Now().Add(progressTimeout)
	for {
		var tx, rx uint64
		var ok bool
		l.hB.Do(func() error {
			tx, rx, ok = tcpQueuesAt(t, "/proc/thread-self/net/tcp", l.port)
			return nil
		})
		if info := clientTCPInfo(t, l.c); ok && tx == 0 && rx == 0 && info.Unacked == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the connection never went quiet: B's socket has %d bytes to send, %d to read (found %v)", tx, rx, ok)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	before := clientTCPInfo(t, l.c).Segs_in

	terr, _, dstErr, _ := l.migrate(t, "takeover")
	if terr != nil {
		e, _ := os.ReadFile(dstErr)
		t.Fatalf("lazycr restore on C: %v\n%s", terr, e)
	}
	deadline = time.Now().Add(progressTimeout)
	for clientTCPInfo(t, l.c).Segs_in == before {
		if time.Now().After(deadline) {
			t.Fatalf("the client received no segment from the restored connection within %v of the restore (it sends a window probe once live)", progressTimeout)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	echoRoundTrip(t, l.c, "after")
}

// clientTCPInfo is TCP_INFO of the test's end of a connection.
func clientTCPInfo(t *testing.T, c *net.TCPConn) *unix.TCPInfo {
	t.Helper()
	sc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	cerr := sc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err = errors.Join(cerr, err); err != nil {
		t.Fatalf("TCP_INFO of the client: %v", err)
	}
	return info
}
