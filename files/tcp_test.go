package files

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/netlock"
	"github.com/lazycr/lazycr/proc"
)

// inNewNetns runs f on a thread of its own in a fresh network namespace
// with lo up; the thread is thrown away afterwards (the goroutine exits
// locked). The namespace's counters see only what f does.
func inNewNetns(t *testing.T, f func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace")
	}
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("unshare CLONE_NEWNET: %w", err)
			return
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			done <- fmt.Errorf("bring lo up: %w", err)
			return
		}
		done <- f()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// tcpCounters reads Tcp OutSegs and OutRsts of the calling thread's network
// namespace (/proc/thread-self/net/snmp, proc(5)).
func tcpCounters() (outSegs, outRsts uint64, err error) {
	f, err := os.Open("/proc/thread-self/net/snmp")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if i >= len(fields) {
				break
			}
			v, _ := strconv.ParseUint(fields[i], 10, 64)
			switch n {
			case "OutSegs":
				outSegs = v
			case "OutRsts":
				outRsts = v
			}
		}
		return outSegs, outRsts, nil
	}
	return 0, 0, fmt.Errorf("no Tcp counters in /proc/thread-self/net/snmp")
}

// loopbackPair connects two sockets over 127.0.0.1 and returns them with
// one byte the second sent sitting unread in the first's receive queue, and
// its acknowledgement already back (so no delayed ACK is pending).
func loopbackPair() (c, a int, err error) {
	l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, -1, err
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return -1, -1, err
	}
	if err := unix.Listen(l, 1); err != nil {
		return -1, -1, err
	}
	sa, err := unix.Getsockname(l)
	if err != nil {
		return -1, -1, err
	}
	if c, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return -1, -1, err
	}
	if err := unix.Connect(c, sa); err != nil {
		unix.Close(c)
		return -1, -1, err
	}
	if a, _, err = unix.Accept4(l, unix.SOCK_CLOEXEC); err != nil {
		unix.Close(c)
		return -1, -1, err
	}
	if _, err := unix.Write(a, []byte("x")); err != nil {
		return c, a, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		inq, err1 := unix.IoctlGetInt(c, unix.SIOCINQ)
		outq, err2 := unix.IoctlGetInt(a, unix.SIOCOUTQ)
		if err1 != nil || err2 != nil {
			return c, a, fmt.Errorf("queue sizes: %v %v", err1, err2)
		}
		if inq == 1 && outq == 0 {
			return c, a, nil
		}
		if time.Now().After(deadline) {
			return c, a, fmt.Errorf("byte not delivered and acknowledged: inq %d outq %d", inq, outq)
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// TestRepairCloseIsSilent verifies on this kernel what the dump relies on:
// closing a socket in TCP_REPAIR mode sends nothing — no FIN, and no RST
// although unread data is queued (tcp_close → tcp_disconnect checks
// tp->repair) — and the peer stays ESTABLISHED. The same close without
// repair sends a RST (unread data), so the test can fail.
func TestRepairCloseIsSilent(t *testing.T) {
	for _, repair := range []bool{false, true} {
		t.Run(fmt.Sprintf("repair=%v", repair), func(t *testing.T) {
			inNewNetns(t, func() error {
				c, a, err := loopbackPair()
				if err != nil {
					return err
				}
				defer unix.Close(a)
				if repair {
					if err := setInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
						unix.Close(c)
						return err
					}
				}
				segs0, rsts0, err := tcpCounters()
				if err != nil {
					return err
				}
				unix.Close(c)
				segs1, rsts1, err := tcpCounters()
				if err != nil {
					return err
				}
				state, _, _, _, err := tcpInfo(a)
				if err != nil {
					return err
				}
				switch {
				case repair && (segs1 != segs0 || rsts1 != rsts0 || state != tcpEstablished):
					return fmt.Errorf("close in repair mode sent %d segments (%d resets); the peer is %s", segs1-segs0, rsts1-rsts0, tcpStates[state])
				case !repair && rsts1 == rsts0:
					return fmt.Errorf("close with unread data outside repair mode sent no reset (%d segments)", segs1-segs0)
				}
				return nil
			})
		})
	}
}

// TestRepairRoundTrip dumps one end of a loopback connection with unread
// data in repair mode, closes it silently, rebuilds it on a fresh
// socket with repairSocket and checks the peer sees the same stream: what
// it had sent is read back in order, and what it had not yet received
// arrives.
func TestRepairRoundTrip(t *testing.T) {
	inNewNetns(t, func() error {
		c, a, err := loopbackPair() // "x" unread in c
		if err != nil {
			return err
		}
		defer unix.Close(a)
		s, err := describeInet(c, true)
		if err != nil {
			unix.Close(c)
			return err
		}
		if err := setInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
			unix.Close(c)
			return err
		}
		// Over an idle loopback the send queue is empty: this covers the
		// receive queue, sequence numbers, options and window; the
		// integration tests cover full send queues.
		s.Tcp = &pb.TcpStream{}
		if err := readStream(c, s.Tcp); err != nil {
			unix.Close(c)
			return err
		}
		unix.Close(c)
		if string(s.Tcp.Inq) != "x" {
			return fmt.Errorf("receive queue %q, want \"x\"", s.Tcp.Inq)
		}
		n, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(n)
		if err := repairSocket(n, 9, s, localRaw); err != nil {
			return err
		}
		if err := goLive(&tcpSock{fd: n, num: 9, s: s}); err != nil {
			return err
		}
		buf := make([]byte, 8)
		if k, err := unix.Read(n, buf); err != nil || string(buf[:k]) != "x" {
			return fmt.Errorf("restored socket reads %q, %v; want \"x\"", buf[:k], err)
		}
		if _, err := unix.Write(n, []byte("yz")); err != nil {
			return err
		}
		if _, err := unix.Write(a, []byte("w")); err != nil {
			return err
		}
		tv := unix.Timeval{Sec: 10}
		for _, fd := range []int{a, n} {
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				return err
			}
		}
		if k, err := unix.Read(a, buf); err != nil || string(buf[:k]) != "yz" {
			return fmt.Errorf("peer reads %q, %v; want \"yz\"", buf[:k], err)
		}
		if k, err := unix.Read(n, buf); err != nil || string(buf[:k]) != "w" {
			return fmt.Errorf("restored socket reads %q, %v; want \"w\"", buf[:k], err)
		}
		return nil
	})
}

// md5Key sets a TCP-MD5 key for peer 127.0.0.1 on fd: struct tcp_md5sig
// (include/uapi/linux/tcp.h): sockaddr_storage (128), flags, prefixlen,
// keylen (u16), ifindex (int), key[80].
func md5Key(fd int) error {
	b := make([]byte, 216)
	binary.LittleEndian.PutUint16(b, unix.AF_INET)
	copy(b[4:8], []byte{127, 0, 0, 1})
	binary.LittleEndian.PutUint16(b[130:], 6)
	copy(b[136:], "secret")
	return kabi.SetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_MD5SIG, b)
}

// TestTCPRefusesMD5: a connection signed with TCP-MD5 is refused (its keys
// cannot be read back), found through sock_diag's INET_DIAG_MD5SIG.
func TestTCPRefusesMD5(t *testing.T) {
	inNewNetns(t, func() error {
		l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(l)
		if err := md5Key(l); err != nil {
			return fmt.Errorf("TCP_MD5SIG on the listener: %w", err)
		}
		if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(l, 1); err != nil {
			return err
		}
		sa, _ := unix.Getsockname(l)
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(c)
		if err := md5Key(c); err != nil {
			return fmt.Errorf("TCP_MD5SIG on the client: %w", err)
		}
		if err := unix.Connect(c, sa); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstat(c, &st); err != nil {
			return err
		}
		// This thread's /proc entry: its network namespace is the one
		// the sockets live in (the leader's is the test's original).
		d := &dumper{pid: unix.Gettid(), opts: DumpOptions{TCP: NewTCPDump(zerolog.Nop())}}
		l0 := &liveFd{num: 3, link: proc.KindSocket, ino: st.Ino, local: c}
		if !(tcpConn{}).claims(l0) {
			return fmt.Errorf("the connection is not claimed as a TCP connection")
		}
		err = (tcpConn{}).dump(d, l0, &pb.Fd{})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "TCP-MD5") {
			return fmt.Errorf("dump of an MD5-signed connection: %v, want a refusal naming TCP-MD5", err)
		}
		return nil
	})
}

// TestTCPRefusesECN: a connection that negotiated ECN (tcp_ecn=1 in the
// test's own namespace) is refused: no repair option restores it.
func TestTCPRefusesECN(t *testing.T) {
	inNewNetns(t, func() error {
		// /proc/sys/net shows the network namespace of the thread that
		// opens it: this changes the test's namespace only.
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_ecn", []byte("1"), 0); err != nil {
			return err
		}
		c, a, err := loopbackPair()
		if err != nil {
			return err
		}
		defer unix.Close(a)
		defer unix.Close(c)
		_, opts, _, _, err := tcpInfo(c)
		if err != nil {
			return err
		}
		if opts&kabi.TCPI_OPT_ECN == 0 {
			return fmt.Errorf("ECN not negotiated (tcpi_options %#x)", opts)
		}
		var st unix.Stat_t
		if err := unix.Fstat(c, &st); err != nil {
			return err
		}
		// This thread's /proc entry: its network namespace is the one
		// the sockets live in (the leader's is the test's original).
		d := &dumper{pid: unix.Gettid(), opts: DumpOptions{TCP: NewTCPDump(zerolog.Nop())}}
		err = (tcpConn{}).dump(d, &liveFd{num: 3, link: proc.KindSocket, ino: st.Ino, local: c}, &pb.Fd{})
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "ECN") {
			return fmt.Errorf("dump of an ECN connection: %v, want a refusal naming ECN", err)
		}
		return nil
	})
}

// localRaw opens a raw socket in the calling thread's network namespace.
func localRaw(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return -1, os.NewSyscallError("socket SOCK_RAW", err)
	}
	return fd, nil
}

// waitState polls fd's TCP state until it is want.
func waitState(fd int, want uint8) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		state, _, _, _, err := tcpInfo(fd)
		if err != nil {
			return err
		}
		if state == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fd %d in state %s, want %s", fd, tcpStates[state], tcpStates[want])
		}
		time.Sleep(time.Millisecond) // poll interval
	}
}

// readFull reads exactly len(want) bytes from fd (with a receive timeout
// set) and compares them.
func readFull(fd int, want string) error {
	buf := make([]byte, len(want))
	for got := 0; got < len(want); {
		n, err := unix.Read(fd, buf[got:])
		if err != nil {
			return fmt.Errorf("read fd %d after %q: %w", fd, buf[:got], err)
		}
		if n == 0 {
			return fmt.Errorf("read fd %d: EOF after %q, want %q", fd, buf[:got], want)
		}
		got += n
	}
	if string(buf) != want {
		return fmt.Errorf("fd %d reads %q, want %q", fd, buf, want)
	}
	return nil
}

// readEOF checks that fd reads end of stream.
func readEOF(fd int) error {
	n, err := unix.Read(fd, make([]byte, 16))
	if err != nil || n != 0 {
		return fmt.Errorf("read fd %d: %d bytes, %v; want EOF", fd, n, err)
	}
	return nil
}

// dumpAndRebuild reads c in repair mode (and its sk_shutdown through
// sock_diag, in the calling thread's namespace), closes it silently and
// rebuilds it on a fresh socket, which it returns live.
func dumpAndRebuild(c int) (int, *pb.InetSocket, error) {
	s, err := describeInet(c, true)
	if err != nil {
		unix.Close(c)
		return -1, nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(c, &st); err != nil {
		unix.Close(c)
		return -1, nil, err
	}
	diag, err := diagSockets(unix.Gettid(), unix.AF_INET, unix.IPPROTO_TCP)
	if err != nil {
		unix.Close(c)
		return -1, nil, err
	}
	s.Shutdown = uint32(diag[st.Ino].shutdown)
	if err := setInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
		unix.Close(c)
		return -1, nil, err
	}
	s.Tcp = &pb.TcpStream{}
	err = readStream(c, s.Tcp)
	unix.Close(c)
	if err != nil {
		return -1, nil, err
	}
	n, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	if err := repairSocket(n, 9, s, localRaw); err != nil {
		unix.Close(n)
		return -1, nil, err
	}
	// Still in repair mode: the window is the dumped one. (Read alone: a
	// peek at the receive queue, as readStream does, lets the kernel
	// advertise the repair-time 1 GiB buffer, tcp_cleanup_rbuf.)
	wb := make([]byte, kabi.TCPRepairWindowLen)
	k, err := kabi.GetsockoptBytes(n, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, wb)
	if err != nil {
		unix.Close(n)
		return -1, nil, err
	}
	w, _ := kabi.DecodeTCPRepairWindow(wb[:k])
	if want := s.Tcp.Window; w.SndWl1 != want.SndWl1 || w.SndWnd != want.SndWnd || w.MaxWindow != want.MaxWindow ||
		w.RcvWnd != want.RcvWnd || w.RcvWup != want.RcvWup {
		unix.Close(n)
		return -1, nil, fmt.Errorf("rebuilt window %+v, want %v", w, want)
	}
	if err := goLive(&tcpSock{fd: n, num: 9, s: s}); err != nil {
		unix.Close(n)
		return -1, nil, err
	}
	return n, s, nil
}

// halfCloseCase is one state of TestRepairHalfClosed.
type halfCloseCase struct {
	name string
	// setup brings c (with "x" unread) into the state; a is the peer;
	// lock locks the connection in the namespace (netlock), from a's end
	// (c's segments are dropped at a's input: sent, never acknowledged)
	// or from c's (dropped at c's output: never sent). The lock stays
	// through the rebuild, as in a restore, and goes before after runs.
	setup func(c, a int, lock func(fromPeer bool) error) error
	state uint8
	// after checks the rebuilt n against a.
	after func(n, a int) error
}

// peerSeqs reads, in repair mode, rcv_nxt and write_seq of a: what c has
// had acknowledged, and where a's FIN would go.
func peerSeqs(a int) (rcvNxt, writeSeq uint32, err error) {
	if err := setInt(a, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
		return 0, 0, err
	}
	defer setInt(a, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0, "TCP_REPAIR")
	if rcvNxt, _, err = readQueue(a, kabi.TCP_RECV_QUEUE, 0); err != nil {
		return 0, 0, err
	}
	writeSeq, _, err = readQueue(a, kabi.TCP_SEND_QUEUE, 0)
	return rcvNxt, writeSeq, err
}

func halfCloseCases() []halfCloseCase {
	write := func(fd int, s string) error {
		_, err := unix.Write(fd, []byte(s))
		return err
	}
	shut := func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) }
	all := func(steps ...func() error) error {
		for _, f := range steps {
			if err := f(); err != nil {
				return err
			}
		}
		return nil
	}
	return []halfCloseCase{
		{"CLOSE_WAIT", func(c, a int, _ func(bool) error) error {
			return all(func() error { return write(a, "tail") }, func() error { return shut(a) })
		}, tcpCloseWait, func(n, a int) error {
			return all(func() error { return readFull(n, "xtail") }, func() error { return readEOF(n) },
				func() error { return write(n, "back") }, func() error { return readFull(a, "back") },
				func() error { return shut(n) }, func() error { return readEOF(a) },
				func() error { return waitState(n, tcpClose) })
		}},
		{"FIN_WAIT2", func(c, a int, _ func(bool) error) error {
			return all(func() error { return write(c, "last") }, func() error { return shut(c) },
				func() error { return readFull(a, "last") }, func() error { return readEOF(a) })
		}, tcpFinWait2, func(n, a int) error {
			if err := all(func() error { return write(a, "more") }, func() error { return readFull(n, "xmore") }); err != nil {
				return err
			}
			if _, err := unix.Write(n, []byte("no")); !errors.Is(err, unix.EPIPE) {
				return fmt.Errorf("write after SHUT_WR: %v, want EPIPE", err)
			}
			return all(func() error { return shut(a) }, func() error { return readEOF(n) })
		}},
		{"SHUT_RD", func(c, a int, _ func(bool) error) error {
			return unix.Shutdown(c, unix.SHUT_RD)
		}, tcpEstablished, func(n, a int) error {
			// The unread byte, then the end of stream the shutdown set.
			return all(func() error { return readFull(n, "x") }, func() error { return readEOF(n) },
				func() error { return write(n, "out") }, func() error { return readFull(a, "out") })
		}},
		{"FIN_WAIT1", func(c, a int, lock func(bool) error) error {
			return all(func() error { return lock(true) }, func() error { return write(c, "last") }, func() error { return shut(c) })
		}, tcpFinWait1, func(n, a int) error {
			// Retransmitted once the lock is gone.
			return all(func() error { return readFull(a, "last") }, func() error { return readEOF(a) },
				func() error { return waitState(n, tcpFinWait2) },
				func() error { return write(a, "more") }, func() error { return readFull(n, "xmore") },
				func() error { return shut(a) }, func() error { return readEOF(n) })
		}},
		{"FIN_WAIT1-unsent", func(c, a int, lock func(bool) error) error {
			return all(func() error { return lock(false) }, func() error { return write(c, "last") }, func() error { return shut(c) })
		}, tcpFinWait1, func(n, a int) error {
			return all(func() error { return readFull(a, "last") }, func() error { return readEOF(a) },
				func() error { return waitState(n, tcpFinWait2) }, func() error { return readFull(n, "x") })
		}},
		{"LAST_ACK", func(c, a int, lock func(bool) error) error {
			return all(func() error { return write(a, "tail") }, func() error { return shut(a) },
				func() error { return waitState(c, tcpCloseWait) },
				func() error { return lock(true) }, func() error { return write(c, "back") }, func() error { return shut(c) })
		}, tcpLastAck, func(n, a int) error {
			return all(func() error { return readFull(n, "xtail") }, func() error { return readEOF(n) },
				func() error { return readFull(a, "back") }, func() error { return readEOF(a) },
				func() error { return waitState(n, tcpClose) })
		}},
		{"CLOSING", func(c, a int, lock func(bool) error) error {
			if err := all(func() error { return lock(true) }, func() error { return shut(c) }, func() error { return waitState(c, tcpFinWait1) }); err != nil {
				return err
			}
			// a's FIN crossing ours: written into c as a would send it
			// (a sends its real one, at the same sequence number, later).
			rcvNxt, writeSeq, err := peerSeqs(a)
			if err != nil {
				return err
			}
			l, err := unix.Getsockname(a)
			if err != nil {
				return err
			}
			p, err := unix.Getsockname(c)
			if err != nil {
				return err
			}
			la, lp := sockaddr(l)
			pa, pp := sockaddr(p)
			seg := tcpSegment{src: netip.AddrPortFrom(netip.MustParseAddr(la), uint16(lp)), dst: netip.AddrPortFrom(netip.MustParseAddr(pa), uint16(pp)),
				seq: writeSeq, ack: rcvNxt, flags: tcpFlagFIN | tcpFlagACK, window: 1024}
			return injectSegment(c, localRaw, seg, tcpClosing)
		}, tcpClosing, func(n, a int) error {
			// a sends the FIN n already has (a duplicate to n, whose ACK
			// acknowledges it); n's FIN is retransmitted and acknowledged:
			// TIME_WAIT, and the fd's socket is closed.
			return all(func() error { return shut(a) },
				func() error { return readFull(n, "x") }, func() error { return readEOF(n) },
				func() error { return readEOF(a) }, func() error { return waitState(n, tcpClose) })
		}},
	}
}

// TestRepairHalfClosed rebuilds one end of a loopback connection in each
// half-closed state, with a lock (netlock) where our FIN must stay
// unacknowledged or unsent, and checks both ends carry on: what was
// unread is read, then the end of stream exactly where it was; the open
// direction still carries data; an unacknowledged FIN is retransmitted
// once the lock goes; no reset is sent. Without the FIN restore the
// rebuilt socket would be ESTABLISHED.
func TestRepairHalfClosed(t *testing.T) {
	for _, tc := range halfCloseCases() {
		t.Run(tc.name, func(t *testing.T) {
			inNewNetns(t, func() error {
				c, a, err := loopbackPair() // "x" unread in c
				if err != nil {
					return err
				}
				defer unix.Close(a)
				tv := unix.Timeval{Sec: 10}
				if err := unix.SetsockoptTimeval(a, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
					unix.Close(c)
					return err
				}
				var l *netlock.Lock
				unlock := func() error {
					if l == nil {
						return nil
					}
					return l.Unlock()
				}
				defer unlock()
				lock := func(fromPeer bool) error {
					ns, err := netns.Get()
					if err != nil {
						return err
					}
					defer ns.Close()
					self, peer, err := ends(c)
					if err != nil {
						return err
					}
					conn := netlock.Conn{Local: self, Remote: peer}
					if fromPeer {
						conn = netlock.Conn{Local: peer, Remote: self}
					}
					l, err = netlock.Acquire(ns, []netlock.Conn{conn}, netlock.Options{Log: zerolog.Nop()})
					return err
				}
				if err := tc.setup(c, a, lock); err != nil {
					unix.Close(c)
					return err
				}
				if err := waitState(c, tc.state); err != nil {
					unix.Close(c)
					return err
				}
				_, rsts0, err := tcpCounters()
				if err != nil {
					unix.Close(c)
					return err
				}
				n, s, err := dumpAndRebuild(c)
				if err != nil {
					return err
				}
				defer unix.Close(n)
				if s.Tcp.State != uint32(tc.state) {
					return fmt.Errorf("image state %d, want %d", s.Tcp.State, tc.state)
				}
				if s.Tcp.Options&kabi.TCPI_OPT_TIMESTAMPS == 0 {
					return fmt.Errorf("timestamps not negotiated (options %#x): the injected FIN's option is not covered", s.Tcp.Options)
				}
				if err := waitState(n, tc.state); err != nil {
					return err
				}
				// The rebuilt queues as the ioctls see them, FINs included.
				if err := sameQueues(n, s.Tcp); err != nil {
					return err
				}
				if err := unlock(); err != nil {
					return err
				}
				if err := unix.SetsockoptTimeval(n, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
					return err
				}
				if err := tc.after(n, a); err != nil {
					return err
				}
				if _, rsts1, err := tcpCounters(); err != nil || rsts1 != rsts0 {
					return fmt.Errorf("%d resets sent (%v)", rsts1-rsts0, err)
				}
				return nil
			})
		})
	}
}

// sameQueues compares SIOCINQ, SIOCOUTQ and SIOCOUTQNSD of fd with what
// they were at the dump of st.
func sameQueues(fd int, st *pb.TcpStream) error {
	f, _ := finsOf(st.State)
	wantOut, wantUnsent := len(st.Outq), int(st.OutqUnsent)
	if f.ours && !f.oursAcked {
		wantOut++
	}
	if st.FinUnsent {
		wantUnsent++
	}
	var got [3]int
	for i, req := range []uint{unix.SIOCINQ, unix.SIOCOUTQ, unix.SIOCOUTQNSD} {
		v, err := unix.IoctlGetInt(fd, req)
		if err != nil {
			return err
		}
		got[i] = v
	}
	if want := [3]int{len(st.Inq), wantOut, wantUnsent}; got != want {
		return fmt.Errorf("rebuilt queues (in, out, unsent) %v, want %v", got, want)
	}
	return nil
}

// ends returns the local and peer ends of the connected socket fd.
func ends(fd int) (local, peer netip.AddrPort, err error) {
	l, err := unix.Getsockname(fd)
	if err != nil {
		return local, peer, err
	}
	p, err := unix.Getpeername(fd)
	if err != nil {
		return local, peer, err
	}
	la, lp := sockaddr(l)
	pa, pp := sockaddr(p)
	return netip.AddrPortFrom(netip.MustParseAddr(la), uint16(lp)), netip.AddrPortFrom(netip.MustParseAddr(pa), uint16(pp)), nil
}

// TestFinsSendData: SIOCOUTQ/SIOCOUTQNSD with our FIN in them, per state.
func TestFinsSendData(t *testing.T) {
	for _, tc := range []struct {
		state              uint32
		outq, unsent       int
		data, dataUnsent   int
		finUnsent, wantErr bool
	}{
		{tcpEstablished, 10, 4, 10, 4, false, false},
		{tcpCloseWait, 10, 0, 10, 0, false, false},
		{tcpFinWait1, 11, 0, 10, 0, false, false}, // FIN sent, unacknowledged
		{tcpFinWait1, 11, 5, 10, 4, true, false},  // FIN behind 4 unsent bytes
		{tcpFinWait1, 1, 1, 0, 0, true, false},    // a lone unsent FIN
		{tcpFinWait1, 1, 0, 0, 0, false, false},   // a lone FIN in flight
		{tcpLastAck, 3, 0, 2, 0, false, false},
		{tcpClosing, 1, 0, 0, 0, false, false},
		{tcpFinWait2, 0, 0, 0, 0, false, false},
		{tcpFinWait2, 1, 0, 0, 0, false, true}, // acknowledged FIN still queued
		{tcpFinWait1, 0, 0, 0, 0, false, true}, // no FIN at all
		{tcpEstablished, 3, 4, 0, 0, false, true},
	} {
		f, ok := finsOf(tc.state)
		if !ok {
			t.Fatalf("state %d not handled", tc.state)
		}
		data, dataUnsent, finUnsent, err := f.sendData(tc.outq, tc.unsent)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s outq %d unsent %d: error %v, want error %v", tcpStates[uint8(tc.state)], tc.outq, tc.unsent, err, tc.wantErr)
			continue
		}
		if err == nil && (data != tc.data || dataUnsent != tc.dataUnsent || finUnsent != tc.finUnsent) {
			t.Errorf("%s outq %d unsent %d: %d data, %d unsent, FIN unsent %v; want %d, %d, %v", tcpStates[uint8(tc.state)],
				tc.outq, tc.unsent, data, dataUnsent, finUnsent, tc.data, tc.dataUnsent, tc.finUnsent)
		}
	}
	for _, s := range []uint32{tcpSynSent, 3, 6, tcpClose, 10, 12} {
		if _, ok := finsOf(s); ok {
			t.Errorf("state %d accepted", s)
		}
	}
}

// TestFinsQueueStarts: the queues start where the data starts, the FINs
// backed off, across the 2^32 wrap.
func TestFinsQueueStarts(t *testing.T) {
	st := &pb.TcpStream{InqSeq: 2, Inq: []byte("abc"), OutqSeq: 5, Outq: []byte("de")}
	for _, tc := range []struct {
		state      uint32
		recv, send uint32
	}{
		{tcpEstablished, 0xffffffff, 3},
		{tcpCloseWait, 0xfffffffe, 3},
		{tcpFinWait1, 0xffffffff, 2},
		{tcpFinWait2, 0xffffffff, 2},
		{tcpLastAck, 0xfffffffe, 2},
		{tcpClosing, 0xfffffffe, 2},
	} {
		f, _ := finsOf(tc.state)
		st.State = tc.state
		if recv, send := f.queueStarts(st); recv != tc.recv || send != tc.send {
			t.Errorf("%s: queues start at %#x, %#x; want %#x, %#x", tcpStates[uint8(tc.state)], recv, send, tc.recv, tc.send)
		}
	}
}

// TestFinsWindow: rcv_wup moves back to rcv_nxt before the peer's FIN,
// the right edge rcv_wup + rcv_wnd stays.
func TestFinsWindow(t *testing.T) {
	w := kabi.TCPRepairWindow{SndWl1: 7, SndWnd: 100, MaxWindow: 200, RcvWnd: 1000, RcvWup: 0}
	cw, _ := finsOf(tcpCloseWait)
	est, _ := finsOf(tcpEstablished)
	for _, tc := range []struct {
		f              tcpFins
		rcvWup, rcvNxt uint32
		wantWup        uint32
		wantWnd        uint32
	}{
		{cw, 50, 49, 49, 1001},                // ACK of the FIN advertised from rcv_nxt + 1
		{cw, 40, 49, 40, 1000},                // older window update: kept
		{cw, 0, 0xffffffff, 0xffffffff, 1001}, // across the wrap
		{est, 50, 49, 50, 1000},               // no peer's FIN: untouched
	} {
		w.RcvWup = tc.rcvWup
		got := tc.f.window(w, tc.rcvNxt)
		if got.RcvWup != tc.wantWup || got.RcvWnd != tc.wantWnd || got.SndWnd != w.SndWnd || got.SndWl1 != w.SndWl1 {
			t.Errorf("rcv_wup %#x rcv_nxt %#x: %+v, want rcv_wup %#x rcv_wnd %d", tc.rcvWup, tc.rcvNxt, got, tc.wantWup, tc.wantWnd)
		}
	}
}

// TestTCPSegmentEncode checks the injected segment's headers against
// fixed fields and verifies both checksums the way a receiver does (the
// sum over the pseudo-header and segment is 0xffff).
func TestTCPSegmentEncode(t *testing.T) {
	for _, tc := range []struct {
		src, dst string
		ts       bool
	}{
		{"127.0.0.1:5000", "127.0.0.2:80", false},
		{"10.1.2.3:65535", "10.3.2.1:1", true},
		{"[::1]:4000", "[fd00::1]:443", true},
	} {
		seg := tcpSegment{src: netip.MustParseAddrPort(tc.src), dst: netip.MustParseAddrPort(tc.dst),
			seq: 0xfffffff0, ack: 12345, flags: tcpFlagFIN | tcpFlagACK, window: 512, ts: tc.ts, tsVal: 0, tsEcr: 0xdeadbeef}
		b := seg.encode()
		ipLen := 20
		if !seg.src.Addr().Is4() {
			ipLen = 40
		}
		th := b[ipLen:]
		wantLen := 20
		if tc.ts {
			wantLen = 32
		}
		if len(th) != wantLen || int(th[12]>>4)*4 != wantLen {
			t.Fatalf("%s: TCP header of %d bytes, offset %d", tc.src, len(th), th[12]>>4)
		}
		if binary.BigEndian.Uint16(th) != seg.src.Port() || binary.BigEndian.Uint16(th[2:]) != seg.dst.Port() ||
			binary.BigEndian.Uint32(th[4:]) != seg.seq || binary.BigEndian.Uint32(th[8:]) != seg.ack ||
			th[13] != seg.flags || binary.BigEndian.Uint16(th[14:]) != seg.window {
			t.Errorf("%s: header %x", tc.src, th)
		}
		if tc.ts && (th[22] != 8 || th[23] != 10 || binary.BigEndian.Uint32(th[28:]) != seg.tsEcr) {
			t.Errorf("%s: timestamp option %x", tc.src, th[20:])
		}
		var pseudo []byte
		if ipLen == 20 {
			if b[0] != 0x45 || b[9] != unix.IPPROTO_TCP || int(binary.BigEndian.Uint16(b[2:])) != len(b) ||
				!bytes.Equal(b[12:16], seg.src.Addr().AsSlice()) || !bytes.Equal(b[16:20], seg.dst.Addr().AsSlice()) {
				t.Errorf("%s: IPv4 header %x", tc.src, b[:20])
			}
			pseudo = append(pseudo, b[12:20]...)
		} else {
			if b[0]>>4 != 6 || b[6] != unix.IPPROTO_TCP || int(binary.BigEndian.Uint16(b[4:])) != len(th) ||
				!bytes.Equal(b[8:24], seg.src.Addr().AsSlice()) || !bytes.Equal(b[24:40], seg.dst.Addr().AsSlice()) {
				t.Errorf("%s: IPv6 header %x", tc.src, b[:40])
			}
			pseudo = append(pseudo, b[8:40]...)
		}
		pseudo = append(pseudo, 0, unix.IPPROTO_TCP, 0, byte(len(th)))
		if sum := inetChecksum(pseudo, th); sum != 0 {
			t.Errorf("%s: TCP checksum does not verify (%#x)", tc.src, sum)
		}
	}
	// RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if got := inetChecksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Errorf("RFC 1071 example: %#x, want %#x", got, ^uint16(0xddf2))
	}
}

// TestFinsCheck: images whose queues contradict their state are refused.
func TestFinsCheck(t *testing.T) {
	for _, tc := range []struct {
		state uint32
		st    *pb.TcpStream
		ok    bool
	}{
		{tcpFinWait1, &pb.TcpStream{Outq: []byte("ab"), OutqUnsent: 2, FinUnsent: true}, true},
		{tcpFinWait1, &pb.TcpStream{Outq: []byte("ab")}, true},
		{tcpFinWait1, &pb.TcpStream{Outq: []byte("ab"), OutqUnsent: 1}, false},
		{tcpCloseWait, &pb.TcpStream{FinUnsent: true}, false},
		{tcpFinWait2, &pb.TcpStream{FinUnsent: true}, false},
		{tcpFinWait2, &pb.TcpStream{Outq: []byte("a")}, false},
		{tcpCloseWait, &pb.TcpStream{Outq: []byte("ab"), OutqUnsent: 2}, true},
	} {
		f, _ := finsOf(tc.state)
		if err := f.check(tc.st); (err == nil) != tc.ok {
			t.Errorf("%s %v: %v, want ok %v", tcpStates[uint8(tc.state)], tc.st, err, tc.ok)
		}
	}
}

// TestNeverConnected tells a socket frozen between socket(2) and
// connect(2) (taken as a plain socket) from one closed after a connection
// attempt (refused) or shut down before it (refused).
func TestNeverConnected(t *testing.T) {
	inNewNetns(t, func() error {
		sock := func() (int, error) { return unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0) }
		lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
		for _, tc := range []struct {
			name  string
			setup func(fd int) error
			fresh bool
		}{
			{"fresh", func(int) error { return nil }, true},
			{"bound", func(fd int) error { return unix.Bind(fd, lo) }, true},
			{"refused", func(fd int) error {
				// Port 1 on a fresh namespace's loopback: nothing listens.
				if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: lo.Addr, Port: 1}); !errors.Is(err, unix.ECONNREFUSED) {
					return fmt.Errorf("connect to port 1: %v, want ECONNREFUSED", err)
				}
				return nil
			}, false},
			{"shut down", func(fd int) error {
				if err := unix.Shutdown(fd, unix.SHUT_RD); !errors.Is(err, unix.ENOTCONN) {
					return fmt.Errorf("shutdown of an unconnected socket: %v, want ENOTCONN", err)
				}
				return nil
			}, false},
		} {
			fd, err := sock()
			if err != nil {
				return err
			}
			err = tc.setup(fd)
			if err == nil {
				var state uint8
				if state, _, _, _, err = tcpInfo(fd); err == nil && state != tcpClose {
					err = fmt.Errorf("%s: state %s, want CLOSE", tc.name, tcpStates[state])
				}
			}
			var fresh bool
			if err == nil {
				fresh, err = neverConnected(fd)
			}
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("%s: %w", tc.name, err)
			}
			if fresh != tc.fresh {
				return fmt.Errorf("%s: never connected %v, want %v", tc.name, fresh, tc.fresh)
			}
		}
		return nil
	})
}
