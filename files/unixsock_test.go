package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
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
	attr := func(b []byte, typ uint16, p []byte) []byte {
		b = binary.LittleEndian.AppendUint16(b, uint16(4+len(p)))
		b = binary.LittleEndian.AppendUint16(b, typ)
		b = append(b, p...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	var b []byte
	for ino, v := range m {
		msg := make([]byte, nlmsgHdrLen+unixDiagMsgLen)
		binary.LittleEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
		o := nlmsgHdrLen
		msg[o], msg[o+1], msg[o+2] = unix.AF_UNIX, v.typ, v.state
		binary.LittleEndian.PutUint32(msg[o+4:], uint32(ino))
		if v.named {
			name := []byte(v.name)
			if len(name) > 0 && name[0] != 0 {
				name = append(name, 0) // a path keeps its NUL
			}
			msg = attr(msg, unixDiagName, name)
		}
		if v.vfsIno != 0 {
			msg = attr(msg, unixDiagVFS, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, uint32(v.vfsIno)), v.vfsDev))
		}
		msg = attr(msg, unixDiagPeer, binary.LittleEndian.AppendUint32(nil, uint32(v.peer)))
		if v.icons != nil {
			var p []byte
			for _, c := range v.icons {
				p = binary.LittleEndian.AppendUint32(p, uint32(c))
			}
			msg = attr(msg, unixDiagIcons, p)
		}
		msg = attr(msg, unixDiagRqlen, binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, v.rqueue), v.wqueue))
		msg = attr(msg, unixDiagShutdown, []byte{v.shutdown})
		binary.LittleEndian.PutUint32(msg, uint32(len(msg)))
		b = append(b, msg...)
	}
	done := make([]byte, nlmsgHdrLen+4)
	binary.LittleEndian.PutUint32(done, uint32(len(done)))
	binary.LittleEndian.PutUint16(done[4:], nlmsgDone)
	return append(b, done...)
}

// FuzzParseUnixDiag: parseUnixDiag never panics, never reports done with
// an error, and decodes an encoded reply back (names, abstract or path,
// the file, pending connections and queue lengths included).
func FuzzParseUnixDiag(f *testing.F) {
	f.Add(unixDiagReply(map[uint64]unixDiag{7: {peer: 8, shutdown: 1}, 8: {peer: 7}}))
	f.Add(unixDiagReply(map[uint64]unixDiag{9: {typ: 1, state: tcpListen, named: true, name: "/run/x.sock", vfsIno: 5, vfsDev: 0xfe00000, icons: []uint64{11, 12}, wqueue: 128}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		out := map[uint64]unixDiag{}
		done, err := parseUnixDiag(data, out)
		if err != nil && done {
			t.Fatalf("done and error %v", err)
		}
		if len(data) < 20 {
			return
		}
		le32 := func(i int) uint32 { return binary.LittleEndian.Uint32(data[i:]) }
		v := unixDiag{typ: data[12], state: data[13], peer: uint64(le32(4)), shutdown: data[8], rqueue: le32(14), wqueue: le32(16)}
		if n := int(data[9] % 16); n > 0 && len(data) >= 20+n {
			v.named, v.name = true, string(data[20:20+n])
			if data[20] != 0 {
				v.name, _, _ = strings.Cut(v.name, "\x00")
				if v.name == "" {
					v.named = false
				}
			}
		}
		if data[10]&1 != 0 && le32(0) != 0 {
			v.vfsIno, v.vfsDev = uint64(le32(0)), le32(8)
		}
		if data[11]%4 > 0 {
			v.icons = []uint64{uint64(le32(0)), uint64(le32(4))}[:data[11]%4/2+1]
		}
		want := map[uint64]unixDiag{uint64(le32(0)): v}
		got := map[uint64]unixDiag{}
		done, err = parseUnixDiag(unixDiagReply(want), got)
		if err != nil || !done || len(got) != 1 {
			t.Fatalf("round trip of %+v: %+v, %v, %v", want, got, done, err)
		}
		for k, w := range want {
			if g := got[k]; !reflect.DeepEqual(g, w) {
				t.Fatalf("round trip of %+v: %+v", w, g)
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

// TestUnixName: paths as they are, abstract names with @ (quoted when not
// printable), as unix(7) writes them.
func TestUnixName(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
	}{
		{"", "(unnamed)"},
		{"/run/redis.sock", "/run/redis.sock"},
		{"\x00lazycr-1", "@lazycr-1"},
		{"\x00a\x00b", `@"a\x00b"`},
		{"\x00", "@"},
	} {
		if got := unixName([]byte(c.in)); got != c.want {
			t.Errorf("unixName(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestSameKernelDev: UNIX_DIAG_VFS's kernel dev_t against stat(2)'s
// st_dev (measured here: /tmp on 254:0 is 0xfe00000 and 0xfe00).
func TestSameKernelDev(t *testing.T) {
	if !sameKernelDev(0xfe00, 0xfe00000) || !sameKernelDev(unix.Mkdev(8, 300), 8<<20|300) {
		t.Error("equal devices compare different")
	}
	if sameKernelDev(0xfe00, 0xfe00001) || sameKernelDev(unix.Mkdev(8, 1), 9<<20|1) {
		t.Error("different devices compare equal")
	}
}

// TestUnixPathDiff: the refusal of a replaced socket path names what
// differs (QA2 Q10: it named the same, reused, inode number twice).
func TestUnixPathDiff(t *testing.T) {
	saw := &pb.UnixPath{Dev: unix.Mkdev(8, 1), Inode: 10003935, Mode: unix.S_IFSOCK | 0o755}
	for _, c := range []struct {
		st   unix.Stat_t
		want string
	}{
		{unix.Stat_t{Dev: unix.Mkdev(8, 1), Ino: 10003935, Mode: unix.S_IFREG | 0o644},
			"it is a regular file (mode 0644), not a socket; only its inode number 10003935 is the same (reused after the socket file was removed)"},
		{unix.Stat_t{Dev: unix.Mkdev(0, 45), Ino: 77, Mode: unix.S_IFSOCK | 0o755},
			"it is on device 0:45, the dump saw 8:1; it is inode 77, the dump saw inode 10003935"},
		{unix.Stat_t{Dev: unix.Mkdev(8, 1), Ino: 12, Mode: unix.S_IFDIR | 0o700},
			"it is a directory (mode 0700), not a socket; it is inode 12, the dump saw inode 10003935"},
	} {
		if got := unixPathDiff(&c.st, saw); got != c.want {
			t.Errorf("unixPathDiff(%+v):\n got %s\nwant %s", c.st, got, c.want)
		}
	}
	if got := unixPathDiff(&unix.Stat_t{Dev: unix.Mkdev(8, 1), Ino: 5, Mode: unix.S_IFREG | 0o600}, nil); !strings.Contains(got, "a regular file (mode 0600) on device 8:1, inode 5") {
		t.Errorf("no recorded file: %s", got)
	}
}
