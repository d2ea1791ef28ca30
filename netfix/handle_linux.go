package netfix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Handle is the real [Netlink]: a [netlink.Handle] and the network namespace
// it works in.
type Handle struct {
	h  *netlink.Handle
	ns netns.NsHandle
}

var _ Netlink = (*Handle)(nil)

// NewNetlink wraps h, a handle working in the network namespace ns (from
// [netlink.NewHandleAt](ns)); ns is [netns.None]() for the calling process's
// own namespace. ns is used to open the packet socket of Announce and must
// stay open while the Handle is used; the caller owns h and ns.
func NewNetlink(h *netlink.Handle, ns netns.NsHandle) *Handle {
	return &Handle{h: h, ns: ns}
}

// dumpRetries bounds the retries of a dump the kernel interrupted because
// the list changed meanwhile (NLM_F_DUMP_INTR).
const dumpRetries = 5

func retryDump[T any](f func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		l, err := f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return l, err
		}
	}
}

// LinkByIndex wraps [netlink.Handle.LinkByIndex].
func (h *Handle) LinkByIndex(index int) (netlink.Link, error) { return h.h.LinkByIndex(index) }

// LinkByName wraps [netlink.Handle.LinkByName].
func (h *Handle) LinkByName(name string) (netlink.Link, error) { return h.h.LinkByName(name) }

// AddrList wraps [netlink.Handle.AddrList], retrying interrupted dumps.
func (h *Handle) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	return retryDump(func() ([]netlink.Addr, error) { return h.h.AddrList(link, family) })
}

// AddrReplace wraps [netlink.Handle.AddrReplace].
func (h *Handle) AddrReplace(link netlink.Link, addr *netlink.Addr) error {
	return h.h.AddrReplace(link, addr)
}

// AddrDel wraps [netlink.Handle.AddrDel].
func (h *Handle) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	return h.h.AddrDel(link, addr)
}

// RouteGetWithOptions wraps [netlink.Handle.RouteGetWithOptions].
func (h *Handle) RouteGetWithOptions(dst net.IP, opts *netlink.RouteGetOptions) ([]netlink.Route, error) {
	return h.h.RouteGetWithOptions(dst, opts)
}

// RouteList wraps [netlink.Handle.RouteList], retrying interrupted dumps.
func (h *Handle) RouteList(link netlink.Link, family int) ([]netlink.Route, error) {
	return retryDump(func() ([]netlink.Route, error) { return h.h.RouteList(link, family) })
}

// RouteReplace wraps [netlink.Handle.RouteReplace].
func (h *Handle) RouteReplace(route *netlink.Route) error { return h.h.RouteReplace(route) }

// RouteDel wraps [netlink.Handle.RouteDel].
func (h *Handle) RouteDel(route *netlink.Route) error { return h.h.RouteDel(route) }

// Announce sends an ARP Announcement (RFC 5227 section 2.3) for addr out of
// link to the Ethernet broadcast address, through an AF_PACKET SOCK_DGRAM
// socket opened in the handle's namespace: the kernel adds the Ethernet
// header from the sockaddr_ll. See packet(7).
func (h *Handle) Announce(link netlink.Link, addr netip.Addr) error {
	at := link.Attrs()
	pkt, err := arpAnnouncement(at.HardwareAddr, addr)
	if err != nil {
		return err
	}
	fd, err := packetSocket(h.ns, unix.ETH_P_ARP)
	if err != nil {
		return err
	}
	// Closing a packet socket waits for an RCU grace period
	// (packet_release calls synchronize_net: 8–16 ms measured here), and a
	// takeover runs while the migrated process is frozen: the close is
	// left to a goroutine, which owns the fd from here on.
	closing.Add(1)
	defer func() {
		go func() {
			defer closing.Done()
			unix.Close(fd)
		}()
	}()
	sa := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  at.Index,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
		return fmt.Errorf("send ARP announcement for %s on %s: %w", addr, at.Name, os.NewSyscallError("sendto", err))
	}
	return nil
}

// closing counts the packet sockets of Announce still being closed, for
// the tests' fd accounting.
var closing sync.WaitGroup

// htons converts a protocol number to network byte order, as sockaddr_ll
// and socket(AF_PACKET) want it.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// packetSocket opens an AF_PACKET SOCK_DGRAM socket for proto in ns (the
// current namespace if ns is not open). A socket belongs to the namespace it
// was created in.
func packetSocket(ns netns.NsHandle, proto uint16) (int, error) {
	open := func() (int, error) {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(proto)))
		if err != nil {
			return -1, os.NewSyscallError("socket AF_PACKET", err)
		}
		return fd, nil
	}
	if !ns.IsOpen() {
		return open()
	}
	var fd int
	err := inNetns(ns, func() (err error) {
		fd, err = open()
		return err
	})
	return fd, err
}

// inNetns runs fn on a fresh OS thread that joined ns. The thread is never
// unlocked: the runtime ends it when the goroutine returns, so no other
// goroutine runs in ns. See setns(2).
func inNetns(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(ns), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter network namespace %v: %w", ns, os.NewSyscallError("setns", err))
			return
		}
		errc <- fn()
	}()
	return <-errc
}
