package files

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// timeWaitPort leaves a server-side TIME_WAIT entry on a fresh port of
// 127.0.0.1 whose listener (and so the connection) had no SO_REUSEADDR,
// then closes the listener: what a server that closed first and was then
// dumped and killed leaves behind. It returns the port.
func timeWaitPort(t *testing.T) uint32 {
	t.Helper()
	lo := [4]byte{127, 0, 0, 1}
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrInet4{Addr: lo}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 4); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(l)
	if err != nil {
		t.Fatal(err)
	}
	port := sa.(*unix.SockaddrInet4).Port
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	if err := unix.Connect(c, &unix.SockaddrInet4{Addr: lo, Port: port}); err != nil {
		t.Fatal(err)
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(a) // the server closes first: its side goes to TIME_WAIT
	buf := make([]byte, 1)
	if n, err := unix.Read(c, buf); n != 0 || err != nil { // EOF: the FIN arrived
		t.Fatalf("client read %d, %v; want EOF", n, err)
	}
	unix.Close(c)
	return uint32(port)
}

// TestRestoreListenerOverTimeWait (F1): a listener without SO_REUSEADDR
// is restored on a port that its closed connections keep in TIME_WAIT,
// and keeps SO_REUSEADDR 0.
func TestRestoreListenerOverTimeWait(t *testing.T) {
	r := fdsStub(t, nil)
	port := timeWaitPort(t)
	// The precondition: a plain bind fails here.
	probe, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = unix.Bind(probe, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(port)})
	unix.Close(probe)
	if err == nil {
		t.Fatal("bind over the TIME_WAIT entry succeeded: the test would prove nothing")
	}
	r.fds = &pb.FdTable{Pid: uint32(r.pid), Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_RDWR, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{
			Family: unix.AF_INET, Type: unix.SOCK_STREAM, Protocol: unix.IPPROTO_TCP,
			LocalAddr: "127.0.0.1", LocalPort: port, Listening: true, Backlog: 16,
			Options: &pb.SocketOptions{}}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	s := takeFd(t, r.pid, 3)
	for opt, want := range map[int]int{unix.SO_ACCEPTCONN: 1, unix.SO_REUSEADDR: 0} {
		if v, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, opt); err != nil || v != want {
			t.Errorf("option %d: %d, %v; want %d", opt, v, err, want)
		}
	}
	if sa, err := unix.Getsockname(s); err != nil || sa.(*unix.SockaddrInet4).Port != int(port) {
		t.Errorf("getsockname %+v, %v", sa, err)
	}
}

// twReply encodes a sock_diag dump reply of TIME_WAIT entries.
func twReply(es []twEntry) []byte {
	var b []byte
	for _, e := range es {
		m := make([]byte, nlmsgHdrLen+inetDiagMsgLen)
		binary.LittleEndian.PutUint32(m, uint32(len(m)))
		binary.LittleEndian.PutUint16(m[4:], unix.SOCK_DIAG_BY_FAMILY)
		m[nlmsgHdrLen] = e.family
		m[nlmsgHdrLen+1] = tcpTimeWait
		copy(m[nlmsgHdrLen+diagSockidOff:], e.id[:])
		b = append(b, m...)
	}
	done := make([]byte, nlmsgHdrLen+4)
	binary.LittleEndian.PutUint32(done, uint32(len(done)))
	binary.LittleEndian.PutUint16(done[4:], nlmsgDone)
	return append(b, done...)
}

// FuzzParseTimeWait: parseTimeWait never panics, never reports done with
// an error, and decodes an encoded reply back to its entries.
func FuzzParseTimeWait(f *testing.F) {
	var id [diagSockidLen]byte
	binary.BigEndian.PutUint16(id[0:], 8080)
	copy(id[4:], []byte{127, 0, 0, 1})
	f.Add(twReply([]twEntry{{family: unix.AF_INET, id: id}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, done, err := parseTimeWait(data, nil)
		if err != nil && done {
			t.Fatalf("done and error %v", err)
		}
		_ = got
		if len(data) < diagSockidLen {
			return
		}
		e := twEntry{family: unix.AF_INET6}
		copy(e.id[:], data)
		e.local = netip.AddrPortFrom(netip.AddrFrom16([16]byte(e.id[4:20])), binary.BigEndian.Uint16(e.id[:]))
		back, done, err := parseTimeWait(twReply([]twEntry{e}), nil)
		if err != nil || !done || len(back) != 1 || back[0] != e {
			t.Fatalf("round trip of %+v: %+v, %v, %v", e, back, done, err)
		}
	})
}
