package files

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
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
		d := &dumper{pid: os.Getpid(), opts: DumpOptions{TCP: NewTCPDump(zerolog.Nop())}}
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
		d := &dumper{pid: os.Getpid(), opts: DumpOptions{TCP: NewTCPDump(zerolog.Nop())}}
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

// dumpAndRebuild reads c in repair mode, closes it silently and rebuilds
// it on a fresh socket, which it returns live.
func dumpAndRebuild(c int) (int, *pb.InetSocket, error) {
	s, err := describeInet(c, true)
	if err != nil {
		unix.Close(c)
		return -1, nil, err
	}
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
	if err := goLive(&tcpSock{fd: n, num: 9, s: s}); err != nil {
		unix.Close(n)
		return -1, nil, err
	}
	return n, s, nil
}

// TestRepairHalfClosed rebuilds one end of a loopback connection in each
// half-closed state that loopback produces without help, and checks both
// ends carry on: what was unread is read, then the end of stream exactly
// where it was; the open direction still carries data; no reset is sent.
// Without the FIN restore the rebuilt socket would be ESTABLISHED and
// read no EOF.
func TestRepairHalfClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup brings c (with "x" unread) into the state; a is the peer.
		setup func(c, a int) error
		state uint8
		// after checks the rebuilt n against a.
		after func(n, a int) error
	}{
		{"CLOSE_WAIT", func(c, a int) error {
			if _, err := unix.Write(a, []byte("tail")); err != nil {
				return err
			}
			return unix.Shutdown(a, unix.SHUT_WR)
		}, tcpCloseWait, func(n, a int) error {
			if err := readFull(n, "xtail"); err != nil {
				return err
			}
			if err := readEOF(n); err != nil {
				return err
			}
			if _, err := unix.Write(n, []byte("back")); err != nil {
				return err
			}
			if err := readFull(a, "back"); err != nil {
				return err
			}
			if err := unix.Shutdown(n, unix.SHUT_WR); err != nil {
				return err
			}
			if err := readEOF(a); err != nil {
				return err
			}
			return waitState(n, tcpClose)
		}},
		{"FIN_WAIT2", func(c, a int) error {
			if _, err := unix.Write(c, []byte("last")); err != nil {
				return err
			}
			if err := unix.Shutdown(c, unix.SHUT_WR); err != nil {
				return err
			}
			if err := readFull(a, "last"); err != nil {
				return err
			}
			return readEOF(a)
		}, tcpFinWait2, func(n, a int) error {
			if _, err := unix.Write(a, []byte("more")); err != nil {
				return err
			}
			if err := readFull(n, "xmore"); err != nil {
				return err
			}
			if _, err := unix.Write(n, []byte("no")); !errors.Is(err, unix.EPIPE) {
				return fmt.Errorf("write after SHUT_WR: %v, want EPIPE", err)
			}
			if err := unix.Shutdown(a, unix.SHUT_WR); err != nil {
				return err
			}
			return readEOF(n)
		}},
	} {
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
				if err := tc.setup(c, a); err != nil {
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
