package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestRestoreUnixPair (F12): a stream socket pair comes back as one pair,
// with the bytes each end had waiting, its shutdown states and flags.
func TestRestoreUnixPair(t *testing.T) {
	r := fdsStub(t, nil)
	r.fds = &pb.FdTable{Pid: uint32(r.pid), Fds: []*pb.Fd{
		{Fd: 3, Flags: unix.O_RDWR | unix.O_NONBLOCK, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{
			Inode: 500, Peer: 501, Type: unix.SOCK_STREAM, Data: []byte("to-3")}}},
		{Fd: 4, Flags: unix.O_RDWR, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{
			Inode: 501, Peer: 500, Type: unix.SOCK_STREAM, Data: []byte("to-4"), Shutdown: 1, Passcred: true}}},
	}}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	a, b := takeFd(t, r.pid, 3), takeFd(t, r.pid, 4)
	buf := make([]byte, 16)
	if n, err := unix.Read(a, buf); err != nil || string(buf[:n]) != "to-3" {
		t.Errorf("fd 3 read %q, %v; want to-3", buf[:max(n, 0)], err)
	}
	// fd 4 had RCV_SHUTDOWN, so fd 3 had SEND_SHUTDOWN (the kernel marks
	// the peer): fd 4 still reads what was waiting, then EOF.
	if n, err := unix.Read(b, buf); err != nil || string(buf[:n]) != "to-4" {
		t.Errorf("fd 4 read %q, %v; want to-4", buf[:max(n, 0)], err)
	}
	if _, err := unix.Write(a, []byte("x")); !errors.Is(err, unix.EPIPE) {
		t.Errorf("write on fd 3 after its peer shut down reading: %v, want EPIPE", err)
	}
	if _, err := unix.Write(b, []byte("late")); err != nil {
		t.Fatalf("write on fd 4: %v", err)
	}
	if n, err := unix.Read(a, buf); err != nil || string(buf[:n]) != "late" {
		t.Errorf("fd 3 read %q, %v; want late", buf[:max(n, 0)], err)
	}
	if v, _ := unix.GetsockoptInt(b, unix.SOL_SOCKET, unix.SO_PASSCRED); v != 1 {
		t.Errorf("fd 4 SO_PASSCRED %d, want 1", v)
	}
}

// unixDiagReply encodes a unix sock_diag dump reply.
func unixDiagReply(m map[uint64]unixDiag) []byte {
	var b []byte
	for ino, v := range m {
		msg := make([]byte, nlmsgHdrLen+unixDiagMsgLen+8+8)
		binary.LittleEndian.PutUint32(msg, uint32(len(msg)))
		binary.LittleEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
		o := nlmsgHdrLen
		msg[o] = unix.AF_UNIX
		binary.LittleEndian.PutUint32(msg[o+4:], uint32(ino))
		o += unixDiagMsgLen
		binary.LittleEndian.PutUint16(msg[o:], 8)
		binary.LittleEndian.PutUint16(msg[o+2:], unixDiagPeer)
		binary.LittleEndian.PutUint32(msg[o+4:], uint32(v.peer))
		binary.LittleEndian.PutUint16(msg[o+8:], 5)
		binary.LittleEndian.PutUint16(msg[o+10:], unixDiagShutdown)
		msg[o+12] = v.shutdown
		b = append(b, msg...)
	}
	done := make([]byte, nlmsgHdrLen+4)
	binary.LittleEndian.PutUint32(done, uint32(len(done)))
	binary.LittleEndian.PutUint16(done[4:], nlmsgDone)
	return append(b, done...)
}

// FuzzParseUnixDiag: parseUnixDiag never panics, never reports done with
// an error, and decodes an encoded reply back.
func FuzzParseUnixDiag(f *testing.F) {
	f.Add(unixDiagReply(map[uint64]unixDiag{7: {peer: 8, shutdown: 1}, 8: {peer: 7}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		out := map[uint64]unixDiag{}
		done, err := parseUnixDiag(data, out)
		if err != nil && done {
			t.Fatalf("done and error %v", err)
		}
		if len(data) < 9 {
			return
		}
		want := map[uint64]unixDiag{uint64(binary.LittleEndian.Uint32(data)): {peer: uint64(binary.LittleEndian.Uint32(data[4:])), shutdown: data[8]}}
		got := map[uint64]unixDiag{}
		done, err = parseUnixDiag(unixDiagReply(want), got)
		if err != nil || !done || len(got) != 1 {
			t.Fatalf("round trip of %v: %v, %v, %v", want, got, done, err)
		}
		for k, v := range want {
			if g := got[k]; g.peer != v.peer || g.shutdown != v.shutdown {
				t.Fatalf("round trip of %v: %v", want, got)
			}
		}
	})
}

// TestUnixSocketsLive: sock_diag pairs the two ends of a socketpair of
// this process and reports a shutdown.
func TestUnixSocketsLive(t *testing.T) {
	if err := unix.Access("/proc/self/ns/net", unix.R_OK); err != nil {
		t.Skip(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := unix.Shutdown(fds[0], unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	var st [2]unix.Stat_t
	for i := range fds {
		if err := unix.Fstat(fds[i], &st[i]); err != nil {
			t.Fatal(err)
		}
	}
	m, err := unixSockets(unix.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A bound (abstract) socket is named.
	named, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(named)
	if err := unix.Bind(named, &unix.SockaddrUnix{Name: fmt.Sprintf("@lazycr-unixdiag-%d", unix.Getpid())}); err != nil {
		t.Fatal(err)
	}
	var nst unix.Stat_t
	if err := unix.Fstat(named, &nst); err != nil {
		t.Fatal(err)
	}
	if m, err = unixSockets(unix.Getpid()); err != nil {
		t.Fatal(err)
	}
	if !m[nst.Ino].named {
		t.Errorf("bound socket %d not named: %+v", nst.Ino, m[nst.Ino])
	}
	a, b := m[st[0].Ino], m[st[1].Ino]
	if a.peer != st[1].Ino || b.peer != st[0].Ino || a.shutdown != 2 || b.shutdown != 1 || a.named || b.named {
		t.Errorf("sock_diag: %d -> %+v, %d -> %+v", st[0].Ino, a, st[1].Ino, b)
	}
}
