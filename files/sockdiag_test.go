package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// diagReply encodes a sock_diag dump reply: one inet_diag_msg per inode
// with an INET_DIAG_SHUTDOWN attribute (after an unrelated attribute), then
// NLMSG_DONE.
func diagReply(socks map[uint64]diagSock) []byte {
	var b []byte
	for ino, ds := range socks {
		msg := make([]byte, nlmsgHdrLen+inetDiagMsgLen+8+8)
		binary.LittleEndian.PutUint32(msg, uint32(len(msg)))
		binary.LittleEndian.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
		binary.LittleEndian.PutUint32(msg[nlmsgHdrLen+56:], ds.rqueue)
		binary.LittleEndian.PutUint32(msg[nlmsgHdrLen+60:], ds.wqueue)
		binary.LittleEndian.PutUint32(msg[nlmsgHdrLen+68:], uint32(ino))
		a := msg[nlmsgHdrLen+inetDiagMsgLen:]
		binary.LittleEndian.PutUint16(a, 8) // INET_DIAG_MARK-like u32 attribute
		binary.LittleEndian.PutUint16(a[2:], 15)
		if ds.md5 {
			binary.LittleEndian.PutUint16(a[2:], inetDiagMD5Sig) // a key (truncated: only its presence counts)
		}
		binary.LittleEndian.PutUint16(a[8:], 5)
		binary.LittleEndian.PutUint16(a[10:], inetDiagShutdown)
		a[12] = ds.shutdown
		b = append(b, msg...)
	}
	done := make([]byte, nlmsgHdrLen+4)
	binary.LittleEndian.PutUint32(done, uint32(len(done)))
	binary.LittleEndian.PutUint16(done[4:], nlmsgDone)
	return append(b, done...)
}

func TestParseDiag(t *testing.T) {
	want := map[uint64]diagSock{7: {}, 9001: {shutdown: 1, rqueue: 768, wqueue: 511}, 0xfffffffe: {shutdown: 3}, 12: {md5: true}}
	got := map[uint64]diagSock{}
	done, err := parseDiag(diagReply(want), got)
	if err != nil || !done {
		t.Fatalf("parseDiag = %v, %v", done, err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("inode %d: %+v, want %+v", k, got[k], v)
		}
	}
	// A TIME_WAIT socket has no inode and no INET_DIAG_SHUTDOWN: skipped.
	tw := diagReply(map[uint64]diagSock{0: {}})
	binary.LittleEndian.PutUint16(tw[nlmsgHdrLen+inetDiagMsgLen+10:], 15)
	if done, err := parseDiag(tw, map[uint64]diagSock{}); err != nil || !done {
		t.Errorf("a socket without inode or shutdown: %v, %v; want it skipped", done, err)
	}
	e := make([]byte, nlmsgHdrLen+4)
	binary.LittleEndian.PutUint32(e, uint32(len(e)))
	binary.LittleEndian.PutUint16(e[4:], nlmsgError)
	enoent := -int32(unix.ENOENT)
	binary.LittleEndian.PutUint32(e[nlmsgHdrLen:], uint32(enoent))
	if _, err := parseDiag(e, got); !errors.Is(err, unix.ENOENT) {
		t.Errorf("NLMSG_ERROR ENOENT: %v", err)
	}
}

// TestDiagShutdowns reads real sockets' shutdown state.
func TestDiagShutdowns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sock_diag of every socket needs root")
	}
	var socks [3]int
	for i := range socks {
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(s)
		if err := unix.Bind(s, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		socks[i] = s
	}
	_ = unix.Shutdown(socks[1], unix.SHUT_RD)   // ENOTCONN, but recorded
	_ = unix.Shutdown(socks[2], unix.SHUT_RDWR) // likewise
	if err := unix.Sendto(socks[0], []byte("queued"), 0, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: localPort(t, socks[0])}); err != nil {
		t.Fatal(err)
	}
	got, err := diagSockets(os.Getpid(), unix.AF_INET, unix.IPPROTO_UDP)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint8{0, 1, 3} {
		var st unix.Stat_t
		if err := unix.Fstat(socks[i], &st); err != nil {
			t.Fatal(err)
		}
		if v, ok := got[st.Ino]; !ok || v.shutdown != want {
			t.Errorf("socket %d (inode %d): shutdown %d (listed %v), want %d", i, st.Ino, v.shutdown, ok, want)
		}
		if v := got[st.Ino]; (v.rqueue > 0) != (i == 0) {
			t.Errorf("socket %d: %d bytes queued, want some only on socket 0 (it sent itself a datagram)", i, v.rqueue)
		}
	}
}

// localPort is the port socket s is bound to.
func localPort(t *testing.T, s int) int {
	t.Helper()
	sa, err := unix.Getsockname(s)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*unix.SockaddrInet4).Port
}

// TestDescribeSocketGetsockoptFails: a failed getsockopt fails the dump
// naming the option; it is never recorded as 0.
func TestDescribeSocketGetsockoptFails(t *testing.T) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	orig := getsockoptInt
	defer func() { getsockoptInt = orig }()
	getsockoptInt = func(fd, level, opt int) (int, error) {
		if level == unix.SOL_SOCKET && opt == unix.SO_MARK {
			return 0, unix.ENOPROTOOPT
		}
		return orig(fd, level, opt)
	}
	got, err := describeSocket(s)
	if got != nil || !errors.Is(err, unix.ENOPROTOOPT) || !strings.Contains(err.Error(), "SO_MARK") {
		t.Fatalf("describeSocket = %v, %v; want nil and an error naming SO_MARK", got, err)
	}
	getsockoptInt = orig
	if got, err := describeSocket(s); err != nil || got == nil {
		t.Fatalf("describeSocket = %v, %v", got, err)
	}
}

// FuzzParseDiag: parseDiag never panics, fills nothing it did not decode
// on a clean reply, and round-trips encoded replies.
func FuzzParseDiag(f *testing.F) {
	f.Add(diagReply(map[uint64]diagSock{1: {shutdown: 2, rqueue: 5}, 3: {}}))
	f.Add(diagReply(nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		out := map[uint64]diagSock{}
		done, err := parseDiag(data, out)
		if err != nil && done {
			t.Fatalf("done and error %v", err)
		}
		if len(data) >= 8 {
			// Round trip: an encoded reply of what the input says.
			want := map[uint64]diagSock{uint64(binary.LittleEndian.Uint32(data)): {shutdown: data[4], rqueue: uint32(data[6]), wqueue: uint32(data[5])},
				uint64(binary.LittleEndian.Uint16(data[5:])): {shutdown: data[7]}}
			delete(want, 0) // no inode: skipped
			got := map[uint64]diagSock{}
			done, err := parseDiag(diagReply(want), got)
			if err != nil || !done || len(got) != len(want) {
				t.Fatalf("round trip of %v: %v, %v, %v", want, got, done, err)
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("round trip of %v: %v", want, got)
				}
			}
		}
	})
}

// TestSockoptsRoundTrip: on every socket kind the dump takes, the option
// table reads without error, and options set on one socket come back on a
// fresh one through setSockopts (compared as recorded).
func TestSockoptsRoundTrip(t *testing.T) {
	type kind struct {
		family, typ, proto int
		listen             bool
		set                []sockopt // set to 7 (or 1 for flags) before the dump
	}
	for _, k := range []kind{
		{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP, false, []sockopt{{unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, "", 0, 0}, {unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, "", 0, 0}, {unix.IPPROTO_UDP, unix.UDP_GRO, "", 0, 0}}},
		{unix.AF_INET6, unix.SOCK_DGRAM, unix.IPPROTO_UDP, false, []sockopt{{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, "", 0, 0}, {unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, "", 0, 0}}},
		{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDPLITE, false, []sockopt{{unix.IPPROTO_IP, unix.IP_RECVTTL, "", 0, 0}}},
		{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_TCP, true, []sockopt{{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "", 0, 0}, {unix.IPPROTO_TCP, unix.TCP_NODELAY, "", 0, 0}}},
		{unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_TCP, true, []sockopt{{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "", 0, 0}}},
		// F11: Go 1.24+ listens with MPTCP.
		{unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, true, []sockopt{{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "", 0, 0}, {unix.IPPROTO_TCP, unix.TCP_NODELAY, "", 0, 0}}},
		{unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, true, nil},
	} {
		t.Run(fmt.Sprintf("%d/%d/%d", k.family, k.typ, k.proto), func(t *testing.T) {
			mk := func() int {
				s, err := unix.Socket(k.family, k.typ|unix.SOCK_CLOEXEC, k.proto)
				if k.proto == unix.IPPROTO_MPTCP && (errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EINVAL)) {
					t.Skipf("no MPTCP here (net.mptcp.enabled=0 or not built): %v", err)
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Close(s) })
				return s
			}
			a := mk()
			for _, o := range k.set {
				v := 7
				if o.name == unix.SO_TIMESTAMPNS || o.name == unix.IPV6_RECVTCLASS || o.name == unix.IP_RECVTTL || o.name == unix.TCP_NODELAY || o.name == unix.UDP_GRO {
					v = 1
				}
				if err := unix.SetsockoptInt(a, o.level, o.name, v); err != nil {
					t.Fatalf("set %d/%d: %v", o.level, o.name, err)
				}
			}
			tv := unix.Timeval{Sec: 1, Usec: 500000}
			if err := unix.SetsockoptTimeval(a, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				t.Fatal(err)
			}
			if err := unix.SetsockoptLinger(a, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 3}); err != nil {
				t.Fatal(err)
			}
			if k.family == unix.AF_INET && k.proto == unix.IPPROTO_UDP {
				// A classic filter (accept 0x7fff bytes of everything), locked.
				prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0x7fff}}
				if err := unix.SetsockoptSockFprog(a, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &prog[0]}); err != nil {
					t.Fatal(err)
				}
				if err := unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1); err != nil {
					t.Fatal(err)
				}
			}
			if k.listen {
				if err := unix.Listen(a, 1); err != nil {
					t.Fatal(err)
				}
			}
			want, err := describeSocket(a)
			if err != nil {
				t.Fatal(err)
			}
			if want.Options.RcvtimeoUs != 1_500_000 || !want.Options.Linger || want.Options.LingerSec != 3 {
				t.Errorf("recorded %+v", want.Options)
			}
			if filtered := k.family == unix.AF_INET && k.proto == unix.IPPROTO_UDP; filtered != (len(want.Options.Filter) == 8 && want.Options.LockFilter) {
				t.Errorf("recorded filter %x lock %v", want.Options.Filter, want.Options.LockFilter)
			}
			b := mk()
			if err := setSockopts(b, 9, want); err != nil {
				t.Fatal(err)
			}
			if k.listen {
				if err := unix.Listen(b, 1); err != nil {
					t.Fatal(err)
				}
			}
			got, err := describeSocket(b)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got.Options, want.Options) {
				t.Errorf("options after restore:\n%v\nwant\n%v", got.Options, want.Options)
			}
		})
	}
}
