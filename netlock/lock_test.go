package netlock

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
)

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces and nftables tables")
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newHosts makes a test net with the named hosts, closed at cleanup.
func newHosts(tb testing.TB, names ...string) []*hosts.Host {
	tb.Helper()
	n, err := hosts.New(hosts.Options{Prefix: "nlk"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("close test net: %v", err)
		}
	})
	var hs []*hosts.Host
	for _, name := range names {
		h, err := n.AddHost(name)
		if err != nil {
			tb.Fatal(err)
		}
		hs = append(hs, h)
	}
	return hs
}

// openNS opens h's network namespace for the test.
func openNS(tb testing.TB, h *hosts.Host) netns.NsHandle {
	tb.Helper()
	ns, err := h.NetNS()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Close() })
	return ns
}

// inetTables lists the inet tables of ns through a socket of its own.
func inetTables(tb testing.TB, ns netns.NsHandle) map[string]tableInfo {
	tb.Helper()
	nft, sock, err := dial(ns)
	if err != nil {
		tb.Fatal(err)
	}
	defer nft.CloseLasting()
	ts, err := listTables(sock)
	if err != nil {
		tb.Fatal(err)
	}
	m := make(map[string]tableInfo)
	for _, t := range ts {
		m[t.name] = t
	}
	return m
}

func lockTables(tb testing.TB, ns netns.NsHandle) []string {
	tb.Helper()
	var names []string
	for name := range inetTables(tb, ns) {
		if strings.HasPrefix(name, TablePrefix) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// addULA gives each host's eth0 an address in a random fdXX::/64 (no
// duplicate address detection, so it is usable at once) and returns them.
func addULA(tb testing.TB, hs ...*hosts.Host) []netip.Addr {
	tb.Helper()
	var pfx [8]byte
	rand.Read(pfx[:])
	pfx[0] = 0xfd
	var addrs []netip.Addr
	for i, h := range hs {
		var a [16]byte
		copy(a[:], pfx[:])
		a[15] = byte(i + 1)
		addr := netip.AddrFrom16(a)
		hh, err := h.Handle()
		if err != nil {
			tb.Fatal(err)
		}
		l, err := hh.LinkByName(h.Iface)
		if err == nil {
			err = hh.AddrReplace(l, &netlink.Addr{
				IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(64, 128)},
				Flags: unix.IFA_F_NODAD,
			})
		}
		hh.Close()
		if err != nil {
			tb.Fatalf("add %s to %s: %v", addr, h.Name, err)
		}
		addrs = append(addrs, addr)
	}
	return addrs
}

// tcpPair connects a client in cli to a listener on srvAddr in srv and
// returns both ends (server end first), closed at cleanup.
func tcpPair(t *testing.T, srv, cli *hosts.Host, srvAddr netip.Addr) (s, c *net.TCPConn) {
	t.Helper()
	var ln *net.TCPListener
	if err := srv.Do(func() (err error) {
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(srvAddr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := cli.Do(func() (err error) {
		c, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ln.SetDeadline(time.Now().Add(10 * time.Second))
	s, err := ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

func connOf(c *net.TCPConn) Conn {
	return Conn{Local: c.LocalAddr().(*net.TCPAddr).AddrPort(), Remote: c.RemoteAddr().(*net.TCPAddr).AddrPort()}
}

// sockInfo returns the bytes waiting to be read (SIOCINQ, tcp(7)) and the
// TCP state of c.
func sockInfo(t *testing.T, c *net.TCPConn) (inq int, state uint8) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		if inq, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ); ierr != nil {
			return
		}
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		t.Fatal(err)
	}
	if ierr != nil {
		t.Fatal(ierr)
	}
	return inq, info.State
}

const tcpEstablished = 1 // TCP_ESTABLISHED, <netinet/tcp.h>

// readExactly reads len(want) bytes from c and compares them.
func readExactly(t *testing.T, c *net.TCPConn, want string, timeout time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("read %q on %s: %v", want, connOf(c), err)
	}
	if string(buf) != want {
		t.Fatalf("read %q on %s, want %q", buf, connOf(c), want)
	}
}

func write(t *testing.T, c *net.TCPConn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q on %s: %v", s, connOf(c), err)
	}
}

// TestLockHoldsTCP locks one of two TCP connections between two hosts, on
// the server's host, and checks that its packets are dropped both ways
// without a reset while the other connection carries on, and that the held
// data arrives after Unlock.
func TestLockHoldsTCP(t *testing.T) {
	requireRoot(t)
	hs := newHosts(t, "srv", "cli")
	srv, cli := hs[0], hs[1]
	ula := addULA(t, srv, cli)
	for _, fam := range []struct {
		name string
		addr netip.Addr
	}{{"ipv4", srv.Addr}, {"ipv6", ula[0]}} {
		t.Run(fam.name, func(t *testing.T) {
			s1, c1 := tcpPair(t, srv, cli, fam.addr)
			s2, c2 := tcpPair(t, srv, cli, fam.addr)
			write(t, c1, "hello")
			readExactly(t, s1, "hello", 10*time.Second)

			ns := openNS(t, srv)
			l, err := Acquire(ns, []Conn{connOf(s1)}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Unlock()
			if !l.Owned() {
				t.Fatalf("table %s not owned on this kernel", l.Table())
			}
			tab := inetTables(t, ns)[l.Table()]
			if tab.flags&nftTableFOwner == 0 || tab.owner == 0 {
				t.Fatalf("table %s after Acquire: %+v, want it with the owner flag", l.Table(), tab)
			}

			// Client → server: dropped on the way in.
			write(t, c1, "held-in")
			waitFor(t, "an incoming packet dropped", 30*time.Second, func() bool {
				in, _, err := l.Dropped()
				if err != nil {
					t.Fatal(err)
				}
				return in > 0
			})
			// Server → client: dropped on the way out.
			write(t, s1, "held-out")
			waitFor(t, "an outgoing packet dropped", 30*time.Second, func() bool {
				_, out, err := l.Dropped()
				if err != nil {
					t.Fatal(err)
				}
				return out > 0
			})
			for _, c := range []*net.TCPConn{s1, c1} {
				if inq, st := sockInfo(t, c); inq != 0 || st != tcpEstablished {
					t.Fatalf("%s while locked: %d bytes to read, state %d; want 0, established", connOf(c), inq, st)
				}
			}
			// The other connection between the same hosts is not held.
			write(t, c2, "free")
			readExactly(t, s2, "free", 10*time.Second)
			write(t, s2, "free-back")
			readExactly(t, c2, "free-back", 10*time.Second)

			if err := l.Unlock(); err != nil {
				t.Fatal(err)
			}
			if got := lockTables(t, ns); len(got) != 0 {
				t.Fatalf("lock tables after Unlock: %v", got)
			}
			if err := l.Unlock(); err != nil {
				t.Fatalf("second Unlock: %v", err)
			}
			if _, _, err := l.Dropped(); !errors.Is(err, os.ErrClosed) {
				t.Fatalf("Dropped after Unlock: %v, want os.ErrClosed", err)
			}
			// Retransmissions deliver the held bytes; no reset was sent,
			// so both ends are still established and keep working.
			readExactly(t, s1, "held-in", 60*time.Second)
			readExactly(t, c1, "held-out", 60*time.Second)
			write(t, c1, "again")
			readExactly(t, s1, "again", 10*time.Second)
			for _, c := range []*net.TCPConn{s1, c1} {
				if _, st := sockInfo(t, c); st != tcpEstablished {
					t.Fatalf("%s after Unlock: state %d, want established", connOf(c), st)
				}
			}
		})
	}
}

// TestLockPassesInjectMark: a locked connection's packets that carry
// InjectMark pass the lock (both chains, over lo within one namespace),
// unmarked ones of the same connection are still dropped.
func TestLockPassesInjectMark(t *testing.T) {
	requireRoot(t)
	srv := newHosts(t, "mrk")[0]
	s, c := tcpPair(t, srv, srv, srv.Addr)
	l, err := Acquire(openNS(t, srv), []Conn{connOf(s)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, InjectMark) }); err != nil || serr != nil {
		t.Fatalf("set SO_MARK: %v %v", err, serr)
	}
	write(t, c, "marked")
	readExactly(t, s, "marked", 10*time.Second)
	write(t, s, "unmarked")
	waitFor(t, "the unmarked reply dropped", 30*time.Second, func() bool {
		_, out, err := l.Dropped()
		if err != nil {
			t.Fatal(err)
		}
		return out > 0
	})
	if inq, _ := sockInfo(t, c); inq != 0 {
		t.Fatalf("%d unmarked bytes passed the lock", inq)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	readExactly(t, c, "unmarked", 60*time.Second)
}

// startHolder starts a child process that locks a connection in h's
// namespace (with or without the owner flag) and returns it with the name
// of its table.
func startHolder(t *testing.T, h *hosts.Host, owner bool) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	ownerEnv := "1"
	if !owner {
		ownerEnv = "0"
	}
	cmd.Env = append(os.Environ(), helperNsEnv+"="+h.NsPath(), helperOwnerEnv+"="+ownerEnv)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close() })
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("read table name from holder pid %d: %v", cmd.Process.Pid, err)
	}
	name := strings.TrimSpace(line)
	if want := fmt.Sprintf("%s%d_", TablePrefix, cmd.Process.Pid); !strings.HasPrefix(name, want) {
		t.Fatalf("holder pid %d made table %q, want prefix %q", cmd.Process.Pid, name, want)
	}
	return cmd, name
}

func killHolder(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatalf("holder pid %d exited cleanly, want killed", cmd.Process.Pid)
	}
}

// TestKilledHolderLeavesNoTable: the kernel removes an owned lock table when
// the process that holds it is SIGKILLed.
func TestKilledHolderLeavesNoTable(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "k")[0]
	ns := openNS(t, h)
	cmd, name := startHolder(t, h, true)
	tab := inetTables(t, ns)[name]
	if tab.flags&nftTableFOwner == 0 || tab.owner == 0 {
		t.Fatalf("table %s of live holder: %+v, want it with the owner flag", name, tab)
	}
	killHolder(t, cmd)
	waitFor(t, "the killed holder's table to go", 10*time.Second, func() bool {
		return len(lockTables(t, ns)) == 0
	})
}

// TestSweep: a table without the owner flag (as on kernels < 5.12) survives
// its killed holder; Sweep removes it and only it.
func TestSweep(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "s")[0]
	ns := openNS(t, h)
	cmd, stale := startHolder(t, h, false)
	killHolder(t, cmd)
	if got := lockTables(t, ns); !slices.Contains(got, stale) {
		t.Fatalf("tables after killing a holder without owner flag: %v, want %s still there", got, stale)
	}

	// Live locks of this process, owned or not, and a table not ours.
	c := []Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}}
	owned, err := Acquire(ns, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer owned.Unlock()
	unowned, err := Acquire(ns, c, Options{noOwner: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unowned.Unlock()
	nft, _, err := dial(ns)
	if err != nil {
		t.Fatal(err)
	}
	nft.AddTable(&nftables.Table{Name: "lazycr_other", Family: nftables.TableFamilyINet})
	err = nft.Flush()
	nft.CloseLasting()
	if err != nil {
		t.Fatal(err)
	}

	removed, err := Sweep(ns, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{stale}) {
		t.Fatalf("Sweep removed %v, want [%s]", removed, stale)
	}
	want := []string{owned.Table(), unowned.Table(), "lazycr_other"}
	slices.Sort(want)
	if got := lockTables(t, ns); !slices.Equal(got, want) {
		t.Fatalf("tables after Sweep: %v, want %v", got, want)
	}
	if err := owned.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unowned.Unlock(); err != nil {
		t.Fatal(err)
	}
	if got := lockTables(t, ns); !slices.Equal(got, []string{"lazycr_other"}) {
		t.Fatalf("tables after Unlock: %v, want only lazycr_other", got)
	}
}

// TestFailedBatchLeavesNothing: a batch the kernel rejects half-way leaves
// no table behind (one transaction), and the error names the errno.
func TestFailedBatchLeavesNothing(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "f")[0]
	ns := openNS(t, h)
	k4, _, err := keys([]Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := encodeLock("lazycr_1_1_1", true, k4, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Append a rule for a chain that does not exist.
	bad, err := record(func(c *nftables.Conn) error {
		tab := &nftables.Table{Name: "lazycr_1_1_1", Family: tableFamily}
		c.AddRule(&nftables.Rule{Table: tab, Chain: &nftables.Chain{Name: "nosuchchain", Table: tab}})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nft, sock, err := dial(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nft.CloseLasting()
	if err := sendBatch(sock, append(msgs, bad...)); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("batch with a rule in a missing chain: %v, want ENOENT", err)
	}
	if got := lockTables(t, ns); len(got) != 0 {
		t.Fatalf("tables after a failed batch: %v", got)
	}
}

func TestAcquireRefuses(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "r")[0]
	ns := openNS(t, h)
	if _, err := Acquire(ns, nil, Options{}); !errors.Is(err, ErrNoConns) {
		t.Fatalf("Acquire without connections: %v", err)
	}
	if _, err := Acquire(ns, []Conn{{ap("10.0.0.1:1"), ap("[fd00::1]:2")}}, Options{}); !errors.Is(err, ErrBadConn) {
		t.Fatalf("Acquire with mixed families: %v", err)
	}
	if _, err := Acquire(netns.None(), []Conn{{ap("10.0.0.1:1"), ap("10.0.0.2:2")}}, Options{}); !errors.Is(err, ErrNoNetns) {
		t.Fatalf("Acquire without netns: %v", err)
	}
	if got := lockTables(t, ns); len(got) != 0 {
		t.Fatalf("tables after refused locks: %v", got)
	}
}

// openFds counts the open file descriptors of this process.
func openFds(tb testing.TB) int {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

// TestNoFdLeak: Acquire, Unlock, a refused Acquire, a failed batch and Sweep
// leave no descriptor open.
func TestNoFdLeak(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "fd")[0]
	ns := openNS(t, h)
	c := []Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}}
	cycle := func() {
		l, err := Acquire(ns, c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		if _, err := Acquire(ns, nil, Options{}); !errors.Is(err, ErrNoConns) {
			t.Fatal(err)
		}
		nft, sock, err := dial(ns)
		if err != nil {
			t.Fatal(err)
		}
		if err := sendBatch(sock, nil); err != nil { // an empty batch is fine
			t.Fatal(err)
		}
		nft.CloseLasting()
		if _, err := Sweep(ns, testLog(t)); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // warm up: the runtime opens its poller once
	before := openFds(t)
	for range 3 {
		cycle()
	}
	if after := openFds(t); after != before {
		t.Fatalf("open fds: %d before, %d after 3 cycles", before, after)
	}
}

// TestOwnerFallback: a kernel that rejects the owner flag (simulated with a
// flag this kernel does not know) still gets a working lock, without an
// owner, which Unlock removes.
func TestOwnerFallback(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "o")[0]
	ns := openNS(t, h)
	ownerFlag = 0x8000
	defer func() { ownerFlag = nftTableFOwner }()
	l, err := Acquire(ns, []Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}}, Options{Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if l.Owned() {
		t.Fatal("lock owned although the kernel refused the flag")
	}
	if tab, ok := inetTables(t, ns)[l.Table()]; !ok || tab.flags != 0 || tab.owner != 0 {
		t.Fatalf("table %s: %+v (present %v), want it without flags or owner", l.Table(), tab, ok)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if got := lockTables(t, ns); len(got) != 0 {
		t.Fatalf("lock tables after Unlock: %v", got)
	}
}

// TestLockMany: thousands of connections need several element messages and
// a batch larger than the default socket send buffer; all of them are in
// the sets.
func TestLockMany(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "m")[0]
	ns := openNS(t, h)
	conns := append(madeUpConns(5000, true), madeUpConns(3000, false)...)
	l, err := Acquire(ns, conns, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	tab := &nftables.Table{Name: l.Table(), Family: tableFamily}
	for _, s := range []struct {
		name string
		n    int
	}{{set6, 5000}, {set4, 3000}} {
		l.mu.Lock()
		elems, err := l.nft.GetSetElements(&nftables.Set{Table: tab, Name: s.name})
		l.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if len(elems) != s.n {
			t.Fatalf("set %s has %d elements, want %d", s.name, len(elems), s.n)
		}
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestLockBeforeSocketExists: a lock taken before the local socket exists
// (as on the restore side) drops a segment that would otherwise be answered
// with a reset. A client connects to a port nobody listens on: while the
// server's host is locked its SYN goes unanswered (the connect stays
// pending); after Unlock the retransmitted SYN meets the reset the lock kept
// away, and the connect fails ECONNREFUSED.
func TestLockBeforeSocketExists(t *testing.T) {
	requireRoot(t)
	hs := newHosts(t, "srv", "cli")
	srv, cli := hs[0], hs[1]
	const closedPort = 7777
	var fd int
	var local netip.AddrPort
	if err := cli.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: cli.Addr.As4()}); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		local = netip.AddrPortFrom(cli.Addr, uint16(sa.(*unix.SockaddrInet4).Port))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	l, err := Acquire(openNS(t, srv), []Conn{{netip.AddrPortFrom(srv.Addr, closedPort), local}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: srv.Addr.As4(), Port: closedPort}); !errors.Is(err, unix.EINPROGRESS) {
		t.Fatalf("connect %s -> %s:%d: %v, want EINPROGRESS", local, srv.Addr, closedPort, err)
	}
	waitFor(t, "the SYN dropped", 30*time.Second, func() bool {
		in, _, err := l.Dropped()
		if err != nil {
			t.Fatal(err)
		}
		return in > 0
	})
	state := func() uint8 {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}
	const synSent, closed = 2, 7 // TCP_SYN_SENT, TCP_CLOSE
	if st := state(); st != synSent {
		t.Fatalf("client state while locked: %d, want SYN_SENT", st)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the connect to fail", 60*time.Second, func() bool { return state() == closed })
	if soerr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil || unix.Errno(soerr) != unix.ECONNREFUSED {
		t.Fatalf("connect result after Unlock: %v (%v), want ECONNREFUSED", unix.Errno(soerr), err)
	}
}

// TestHeld: a held lock stays without any socket of ours, Sweep leaves it,
// ListHeld lists it, RemoveHeld removes it (twice is success).
func TestHeld(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "h")[0]
	ns := openNS(t, h)
	name := HeldName(os.Getpid(), 1)
	c := []Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}}
	if err := Hold(ns, name, c, testLog(t)); err != nil {
		t.Fatal(err)
	}
	if err := Hold(ns, name, c, testLog(t)); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second Hold: %v, want EEXIST", err)
	}
	if removed, err := Sweep(ns, testLog(t)); err != nil || len(removed) > 0 {
		t.Fatalf("Sweep removed %v (%v)", removed, err)
	}
	if got, err := ListHeld(ns); err != nil || !slices.Equal(got, []string{name}) {
		t.Fatalf("ListHeld = %v, %v", got, err)
	}
	if ti := inetTables(t, ns)[name]; ti.flags&nftTableFOwner != 0 {
		t.Fatalf("held table has flags %#x", ti.flags)
	}
	for range 2 {
		if err := RemoveHeld(ns, name, testLog(t)); err != nil {
			t.Fatal(err)
		}
	}
	if got := lockTables(t, ns); len(got) != 0 {
		t.Fatalf("tables after RemoveHeld: %v", got)
	}
}

// TestOpen: Open removes the table at once; the returned close finishes
// the job and is idempotent; Unlock afterwards is a no-op.
func TestOpen(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "o")[0]
	ns := openNS(t, h)
	l, err := Acquire(ns, []Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}}, Options{Log: testLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	closeSocket, err := l.Open()
	if err != nil {
		t.Fatal(err)
	}
	if got := lockTables(t, ns); len(got) != 0 {
		t.Fatalf("tables after Open: %v", got)
	}
	for range 2 {
		if err := closeSocket(); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestUnholdListeners: a held lock of listeners only is removed whole; one
// that also holds connections keeps them (and its table), its listener
// sets emptied; a missing lock, or one without listeners, is success.
func TestUnholdListeners(t *testing.T) {
	requireRoot(t)
	h := newHosts(t, "ul")[0]
	ns := openNS(t, h)
	log := testLog(t)
	c := []Conn{{ap("192.0.2.1:1"), ap("192.0.2.2:2")}}
	ls := []Listener{{Local: ap("192.0.2.1:80")}, {Local: ap("0.0.0.0:81")}}
	only := HeldName(os.Getpid(), 2)
	both := HeldName(os.Getpid(), 3)
	conns := HeldName(os.Getpid(), 4)
	if err := HoldWith(ns, only, nil, ls, log); err != nil {
		t.Fatal(err)
	}
	if err := HoldWith(ns, both, c, ls, log); err != nil {
		t.Fatal(err)
	}
	if err := Hold(ns, conns, c, log); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{only, both, conns, HeldName(os.Getpid(), 5)} {
		for range 2 {
			if err := UnholdListeners(ns, name, log); err != nil {
				t.Fatalf("UnholdListeners(%s): %v", name, err)
			}
		}
	}
	if got, err := ListHeld(ns); err != nil || !slices.Equal(got, []string{both, conns}) && !slices.Equal(got, []string{conns, both}) {
		t.Fatalf("ListHeld = %v, %v; want %s and %s", got, err, both, conns)
	}
	nft, _, err := dial(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nft.CloseLasting()
	sets, err := nft.GetSets(&nftables.Table{Name: both, Family: tableFamily})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sets {
		el, err := nft.GetSetElements(s)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if s.Name == set4 {
			want = 1
		}
		if len(el) != want {
			t.Errorf("set %s of %s has %d elements, want %d", s.Name, both, len(el), want)
		}
	}
	if err := UnholdListeners(ns, "lazycr_1_2_3", log); !errors.Is(err, ErrNotHeld) {
		t.Errorf("UnholdListeners of a non-held name: %v, want ErrNotHeld", err)
	}
	for _, name := range []string{both, conns} {
		if err := RemoveHeld(ns, name, log); err != nil {
			t.Fatal(err)
		}
	}
}
