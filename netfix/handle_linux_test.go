package netfix

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNet is two fresh network namespaces joined by a veth pair:
//
//	A: va 10.77.0.1/24 fd77::1/64, default via .2 / ::2   <->   B: vb 10.77.0.2/24 fd77::2/64
type testNet struct {
	a, b   netns.NsHandle
	ha, hb *netlink.Handle
	nl     *Handle // [Netlink] in A
	va, vb netlink.Link
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and changes their addresses")
	}
}

// checkFds fails the test if it ends with more open fds than it started
// with. Call it first so that its cleanup runs last.
func checkFds(t *testing.T) {
	t.Helper()
	count := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	before := count()
	t.Cleanup(func() {
		closing.Wait() // Announce closes its packet socket in the background
		if after := count(); after != before {
			t.Errorf("open fds: %d before the test, %d after", before, after)
		}
	})
}

// newNetns creates a network namespace on a throwaway OS thread.
func newNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	type res struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		c <- res{ns, err}
	}()
	r := <-c
	if r.err != nil {
		t.Fatalf("create network namespace: %v", r.err)
	}
	t.Cleanup(func() { r.ns.Close() })
	return r.ns
}

func newHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in %v: %v", ns, err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func upWithAddrs(t *testing.T, h *netlink.Handle, name string, addrs ...string) netlink.Link {
	t.Helper()
	l, err := h.LinkByName(name)
	must(t, "find "+name, err)
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		must(t, "add "+a, h.AddrReplace(l, &netlink.Addr{IPNet: prefixIPNet(p), Flags: unix.IFA_F_NODAD}))
	}
	must(t, "up "+name, h.LinkSetUp(l))
	l, err = h.LinkByName(name) // with its MAC
	must(t, "find "+name, err)
	return l
}

func newTestNet(t *testing.T) *testNet {
	t.Helper()
	needRoot(t)
	n := &testNet{a: newNetns(t), b: newNetns(t)}
	n.ha, n.hb = newHandle(t, n.a), newHandle(t, n.b)
	n.nl = NewNetlink(n.ha, n.a)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va"}, PeerName: "vb", PeerNamespace: netlink.NsFd(int(n.b))}
	must(t, "add veth", n.ha.LinkAdd(veth))
	upWithAddrs(t, n.ha, "lo")
	n.va = upWithAddrs(t, n.ha, "va", "10.77.0.1/24", "fd77::1/64")
	n.vb = upWithAddrs(t, n.hb, "vb", "10.77.0.2/24", "fd77::2/64")
	for _, gw := range []string{"10.77.0.2", "fd77::2"} {
		r := &netlink.Route{LinkIndex: n.va.Attrs().Index, Gw: net.IP(netip.MustParseAddr(gw).AsSlice())}
		must(t, "default route via "+gw, n.ha.RouteReplace(r))
	}
	return n
}

// bindIn binds a UDP socket to ap in ns and connects it to peer if valid:
// the fixed address must be usable.
func bindIn(t *testing.T, ns netns.NsHandle, ap, peer netip.AddrPort) {
	t.Helper()
	sa := func(ap netip.AddrPort) unix.Sockaddr {
		if ap.Addr().Is4() {
			return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
		}
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	err := inNetns(ns, func() error {
		fam := unix.AF_INET6
		if ap.Addr().Is4() {
			fam = unix.AF_INET
		}
		fd, err := unix.Socket(fam, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Bind(fd, sa(ap)); err != nil {
			return err
		}
		if peer.IsValid() {
			return unix.Connect(fd, sa(peer))
		}
		return nil
	})
	if err != nil {
		t.Errorf("bind %s (peer %v) in namespace A: %v", ap, peer, err)
	}
}

func TestHandleRebind(t *testing.T) {
	checkFds(t)
	n := newTestNet(t)
	sockets := []Socket{
		sk(3, "tcp", "10.99.0.5:8080", ""),
		sk(4, "udp", "10.99.0.5:4000", "10.77.0.2:5000"),
		sk(5, "udp", "[fd99::5]:4000", ""),
		sk(6, "udp", "[fd99::5]:4001", "[fd77::2]:5000"),
		sk(7, "udp", "10.77.0.1:53", ""),
	}
	res, err := Fix(n.nl, sockets, Options{Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	want := lines(
		"fd 3: 10.99.0.5:8080 -> 10.77.0.1:8080",
		"fd 4: 10.99.0.5:4000 -> 10.77.0.1:4000",
		"fd 5: [fd99::5]:4000 -> [fd77::1]:4000",
		"fd 6: [fd99::5]:4001 -> [fd77::1]:4001")
	if got := fixText(res.Sockets); !slices.Equal(got, want) {
		t.Errorf("socket fixes:\n got %q\nwant %q", got, want)
	}
	if len(res.Changes) != 0 {
		t.Errorf("rebind changed the host: %q", cmds(res.Changes))
	}
	for i, f := range res.Sockets {
		var peer netip.AddrPort
		if p := sockets[i].Sock.PeerAddr; p != "" {
			peer = netip.AddrPortFrom(netip.MustParseAddr(p), uint16(sockets[i].Sock.PeerPort))
		}
		bindIn(t, n.a, f.New, peer)
	}
	// A peer the namespace has no route to.
	must(t, "delete default route", n.ha.RouteDel(&netlink.Route{LinkIndex: n.va.Attrs().Index,
		Gw: net.IP(netip.MustParseAddr("10.77.0.2").AsSlice())}))
	_, err = Fix(n.nl, []Socket{sk(4, "udp", "10.99.0.5:4000", "198.51.100.7:5000")}, Options{Log: zerolog.Nop()})
	if !errors.Is(err, ErrNoRoute) || !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("Fix toward an unrouted peer: %v, want ErrNoRoute and ENETUNREACH", err)
	}
}

// addrsOf lists the addresses of link in ns as prefixes.
func addrsOf(t *testing.T, h *netlink.Handle, l netlink.Link) []string {
	t.Helper()
	as, err := h.AddrList(l, netlink.FAMILY_ALL)
	must(t, "list addresses", err)
	var out []string
	for _, a := range as {
		if a.Scope == unix.RT_SCOPE_LINK {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ipOf(a.IP), ones).String())
	}
	slices.Sort(out)
	return out
}

// arpListener is an AF_PACKET socket for ARP on link in ns.
func arpListener(t *testing.T, ns netns.NsHandle, link netlink.Link) int {
	t.Helper()
	fd, err := packetSocket(ns, unix.ETH_P_ARP)
	must(t, "open packet socket", err)
	t.Cleanup(func() { unix.Close(fd) })
	must(t, "bind packet socket", unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: link.Attrs().Index}))
	return fd
}

// readARP returns the first ARP packet whose sender IP is ip, with its
// sockaddr_ll, waiting at most 10 s.
func readARP(t *testing.T, fd int, ip netip.Addr) ([]byte, *unix.SockaddrLinklayer) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no ARP packet from %s", ip)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(left.Milliseconds())+1); err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
		if pfd[0].Revents&unix.POLLIN == 0 {
			continue
		}
		m, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatalf("recvfrom: %v", err)
		}
		if m >= arpLen && netip.AddrFrom4([4]byte(buf[14:18])) == ip {
			return slices.Clone(buf[:m]), from.(*unix.SockaddrLinklayer)
		}
	}
}

func TestHandleTakeover(t *testing.T) {
	checkFds(t)
	n := newTestNet(t)
	arp := arpListener(t, n.b, n.vb)
	sockets := []Socket{
		sk(4, "udp", "10.99.0.5:4000", "10.77.0.2:5000"),
		sk(5, "udp", "10.77.0.9:4001", "10.77.0.2:5000"),
		sk(6, "udp", "[fd99::5]:4000", "[fd77::2]:5000"),
	}
	opts := Options{Policy: Takeover, Log: zerolog.New(zerolog.NewTestWriter(t))}
	res, err := Fix(n.nl, sockets, opts)
	if err != nil {
		t.Fatal(err)
	}
	wantCmds := lines(
		"ip addr replace 10.99.0.5/32 dev va", "arping -U -c 1 -I va 10.99.0.5",
		"ip addr replace 10.77.0.9/24 dev va", "arping -U -c 1 -I va 10.77.0.9",
		"ip addr replace fd99::5/128 dev va nodad")
	if got := cmds(res.Changes); !slices.Equal(got, wantCmds) {
		t.Errorf("changes:\n got %q\nwant %q", got, wantCmds)
	}
	wantAddrs := lines("10.77.0.1/24", "10.77.0.9/24", "10.99.0.5/32", "fd77::1/64", "fd99::5/128")
	if got := addrsOf(t, n.ha, n.va); !slices.Equal(got, wantAddrs) {
		t.Errorf("addresses on va:\n got %q\nwant %q", got, wantAddrs)
	}
	for _, s := range sockets {
		bindIn(t, n.a, netip.MustParseAddrPort(net.JoinHostPort(s.Sock.LocalAddr, "0")),
			netip.AddrPortFrom(netip.MustParseAddr(s.Sock.PeerAddr), uint16(s.Sock.PeerPort)))
	}

	// The announcement, as B sees it.
	for _, ip := range []string{"10.99.0.5", "10.77.0.9"} {
		a := netip.MustParseAddr(ip)
		pkt, from := readARP(t, arp, a)
		mac := n.va.Attrs().HardwareAddr
		if from.Pkttype != unix.PACKET_BROADCAST || !slices.Equal(from.Addr[:from.Halen], mac) {
			t.Errorf("ARP for %s: packet type %d from %x, want broadcast from %s", ip, from.Pkttype, from.Addr[:from.Halen], mac)
		}
		if got := binary.BigEndian.Uint16(pkt[6:]); got != arpOpRequest {
			t.Errorf("ARP for %s: operation %d, want request", ip, got)
		}
		if !slices.Equal(pkt[8:14], mac) || netip.AddrFrom4([4]byte(pkt[24:28])) != a || !slices.Equal(pkt[18:24], make([]byte, 6)) {
			t.Errorf("ARP for %s: sender MAC %x target MAC %x target IP %v, want %s, zero, %s", ip, pkt[8:14], pkt[18:24], pkt[24:28], mac, a)
		}
	}

	// Twice = same state.
	again, err := Fix(n.nl, sockets, opts)
	if err != nil || len(again.Changes) != 0 {
		t.Errorf("second Fix: changes %q, error %v", cmds(again.Changes), err)
	}
	if got := addrsOf(t, n.ha, n.va); !slices.Equal(got, wantAddrs) {
		t.Errorf("addresses on va after the second Fix:\n got %q\nwant %q", got, wantAddrs)
	}

	// Release, as on the source, twice; then Undo finds nothing to do.
	for i := range 2 {
		changes, err := Release(n.nl, Addresses(sockets), "", zerolog.Nop())
		if err != nil {
			t.Fatalf("Release #%d: %v", i+1, err)
		}
		if want := map[bool]int{true: 3, false: 0}[i == 0]; len(changes) != want {
			t.Errorf("Release #%d: changes %q, want %d", i+1, cmds(changes), want)
		}
	}
	if got, want := addrsOf(t, n.ha, n.va), lines("10.77.0.1/24", "fd77::1/64"); !slices.Equal(got, want) {
		t.Errorf("addresses on va after Release:\n got %q\nwant %q", got, want)
	}
	if err := Undo(n.nl, res.Changes); err != nil {
		t.Errorf("Undo after Release: %v", err)
	}
}

func TestHandleTakeoverIface(t *testing.T) {
	checkFds(t)
	n := newTestNet(t)
	// A second veth pair: dummy links need a module that may be missing.
	must(t, "add veth d0", n.ha.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "d0"}, PeerName: "d1",
		PeerNamespace: netlink.NsFd(int(n.b))}))
	d0 := upWithAddrs(t, n.ha, "d0")
	upWithAddrs(t, n.hb, "d1")
	res, err := Fix(n.nl, []Socket{sk(4, "udp", "10.99.0.5:4000", "10.77.0.2:5000")},
		Options{Policy: Takeover, Iface: "d0", Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	want := lines("ip addr replace 10.99.0.5/32 dev d0", "ip route replace 10.77.0.2/32 dev d0", "arping -U -c 1 -I d0 10.99.0.5")
	if got := cmds(res.Changes); !slices.Equal(got, want) {
		t.Errorf("changes:\n got %q\nwant %q", got, want)
	}
	rs, err := n.ha.RouteGet(net.ParseIP("10.77.0.2"))
	must(t, "route get", err)
	if rs[0].LinkIndex != d0.Attrs().Index {
		t.Errorf("route to 10.77.0.2 leaves by link %d, want d0 (%d)", rs[0].LinkIndex, d0.Attrs().Index)
	}
	for i := range 2 {
		if err := Undo(n.nl, res.Changes); err != nil {
			t.Fatalf("Undo #%d: %v", i+1, err)
		}
	}
	if got := addrsOf(t, n.ha, d0); len(got) != 0 {
		t.Errorf("addresses on d0 after Undo: %q", got)
	}
	rs, err = n.ha.RouteGet(net.ParseIP("10.77.0.2"))
	must(t, "route get", err)
	if rs[0].LinkIndex != n.va.Attrs().Index {
		t.Errorf("after Undo, route to 10.77.0.2 leaves by link %d, want va", rs[0].LinkIndex)
	}
}
