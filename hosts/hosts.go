package hosts

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted, as by
// `ip netns add` (see ip-netns(8)).
const NetnsDir = "/run/netns"

// DefaultPrefix starts every namespace name when [Options.Prefix] is empty.
const DefaultPrefix = "lzcr"

// BridgeName is the bridge inside the bridge namespace.
const BridgeName = "br0"

// HostIface is the name of each host's interface.
const HostIface = "eth0"

// Sentinel errors.
var (
	// ErrBadName reports a host name that is not 1–13 characters of
	// [a-z0-9] (the peer interface "v-<name>" must fit IFNAMSIZ-1 = 15).
	ErrBadName = errors.New("bad host name")
	// ErrExists reports a second host with the same name in one Net.
	ErrExists = errors.New("host exists")
	// ErrSubnetFull reports that the subnet has no free address left.
	ErrSubnetFull = errors.New("subnet full")
	// ErrClosed reports use of a Net after Close.
	ErrClosed = errors.New("net closed")
)

// Options configures [New].
type Options struct {
	// Prefix starts every namespace name; default [DefaultPrefix].
	Prefix string
	// Subnet is the IPv4 /24 (or wider) hosts get addresses from, from .1
	// upwards. Default: a random 10.X.Y.0/24 with X in 200..250 that no
	// address or route of the caller's network namespace overlaps.
	Subnet netip.Prefix
	// PIDNS makes [Host.Command] start commands in a new PID and mount
	// namespace with /proc remounted (the command is PID 1 there; see
	// pid_namespaces(7)).
	PIDNS bool
	// Log receives debug lines for each namespace and link made or deleted.
	Log zerolog.Logger
}

// Net is one test network: a bridge namespace and the hosts attached to it.
// Its methods are safe for concurrent use.
type Net struct {
	// Prefix and RunID make up every namespace name: <Prefix>-<RunID>-…
	Prefix, RunID string
	// Subnet holds the hosts' addresses.
	Subnet netip.Prefix
	// BridgeNsName is the name (under [NetnsDir]) of the bridge namespace.
	BridgeNsName string

	pidns bool
	log   zerolog.Logger

	// mu guards the fields below.
	mu     sync.Mutex
	closed bool
	next   netip.Addr // next address to hand out
	hosts  []*Host    // in creation order
	brNs   netns.NsHandle
	br     *netlink.Handle
}

// Host is one network namespace attached to the bridge.
type Host struct {
	// Name is the name given to [Net.AddHost].
	Name string
	// NsName is the namespace's name under [NetnsDir].
	NsName string
	// Addr is the address of Iface (with the Net's prefix length).
	Addr netip.Addr
	// Iface is the host's interface, [HostIface].
	Iface string
	// Peer is the other veth end in the bridge namespace: "v-<Name>".
	Peer string

	net *Net
}

// New builds the bridge namespace of a new test network. Close it when done.
func New(opts Options) (_ *Net, err error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !opts.Subnet.IsValid() {
		if opts.Subnet, err = pickSubnet(); err != nil {
			return nil, err
		}
	}
	if !opts.Subnet.Addr().Is4() || opts.Subnet.Bits() > 30 {
		return nil, fmt.Errorf("create test net: subnet %s: want IPv4 /30 or wider", opts.Subnet)
	}
	var id [3]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("create test net: run id: %w", err)
	}
	n := &Net{
		Prefix: opts.Prefix,
		RunID:  hex.EncodeToString(id[:]),
		Subnet: opts.Subnet.Masked(),
		pidns:  opts.PIDNS,
		log:    opts.Log,
		brNs:   netns.None(),
	}
	n.next = n.Subnet.Addr().Next()
	n.BridgeNsName = n.Prefix + "-" + n.RunID + "-br"
	defer func() {
		if err != nil {
			err = errors.Join(err, n.Close())
		}
	}()
	if n.brNs, err = createNamedNetns(n.BridgeNsName); err != nil {
		return nil, err
	}
	if n.br, err = netlink.NewHandleAt(n.brNs); err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", n.BridgeNsName, err)
	}
	// Equivalent to: ip link add br0 type bridge; ip link set br0 up.
	// STP stays off, so ports forward at once.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName}}
	if err := n.br.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("add bridge %s in netns %s: %w", BridgeName, n.BridgeNsName, err)
	}
	if err := n.br.LinkSetUp(br); err != nil {
		return nil, fmt.Errorf("set bridge %s up in netns %s: %w", BridgeName, n.BridgeNsName, err)
	}
	n.log.Debug().Str("netns", n.BridgeNsName).Stringer("subnet", n.Subnet).Msg("test net created")
	return n, nil
}

var hostNameRE = regexp.MustCompile(`^[a-z0-9]{1,13}$`)

// AddHost creates host name with the next free address of the subnet.
//
// Equivalent to:
//
//	ip netns add <prefix>-<runid>-<name>
//	ip -n <br> link add v-<name> master br0 up type veth peer eth0 netns <host>
//	ip -n <host> addr add <addr>/<bits> dev eth0; ip -n <host> link set eth0 up
//	ip -n <host> link set lo up
func (n *Net) AddHost(name string) (_ *Host, err error) {
	if !hostNameRE.MatchString(name) {
		return nil, fmt.Errorf("add host %q: %w", name, ErrBadName)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil, fmt.Errorf("add host %q: %w", name, ErrClosed)
	}
	for _, h := range n.hosts {
		if h.Name == name {
			return nil, fmt.Errorf("add host %q: %w", name, ErrExists)
		}
	}
	addr := n.next
	if !n.Subnet.Contains(addr.Next()) { // the last one is broadcast
		return nil, fmt.Errorf("add host %q to %s: %w", name, n.Subnet, ErrSubnetFull)
	}
	h := &Host{
		Name:   name,
		NsName: n.Prefix + "-" + n.RunID + "-" + name,
		Addr:   addr,
		Iface:  HostIface,
		Peer:   "v-" + name,
		net:    n,
	}
	ns, err := createNamedNetns(h.NsName)
	if err != nil {
		return nil, fmt.Errorf("add host %q: %w", name, err)
	}
	defer ns.Close()
	// From here on Close must delete the namespace even if we fail.
	n.hosts = append(n.hosts, h)
	n.next = addr.Next()

	hh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", h.NsName, err)
	}
	defer hh.Close()

	br, err := n.br.LinkByName(BridgeName)
	if err != nil {
		return nil, fmt.Errorf("find bridge %s in netns %s: %w", BridgeName, n.BridgeNsName, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: h.Peer, MasterIndex: br.Attrs().Index},
		PeerName:      HostIface,
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := n.br.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("add veth %s/%s for netns %s: %w", h.Peer, HostIface, h.NsName, err)
	}
	if err := n.br.LinkSetUp(veth); err != nil {
		return nil, fmt.Errorf("set %s up in netns %s: %w", h.Peer, n.BridgeNsName, err)
	}
	for _, ifname := range []string{"lo", HostIface} {
		l, err := hh.LinkByName(ifname)
		if err != nil {
			return nil, fmt.Errorf("find %s in netns %s: %w", ifname, h.NsName, err)
		}
		if ifname == HostIface {
			a := &netlink.Addr{IPNet: &net.IPNet{
				IP:   addr.AsSlice(),
				Mask: net.CIDRMask(n.Subnet.Bits(), 32),
			}}
			if err := hh.AddrReplace(l, a); err != nil {
				return nil, fmt.Errorf("add address %s to %s in netns %s: %w", a, ifname, h.NsName, err)
			}
		}
		if err := hh.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set %s up in netns %s: %w", ifname, h.NsName, err)
		}
	}
	// Carrier changes reach the qdisc and the bridge port through the
	// kernel's linkwatch work, which may run up to a second later
	// (net/core/link_watch.c); until then eth0 drops what it sends. Wait
	// for both ends to be operationally up (IFLA_OPERSTATE, set by the same
	// work) so the first packet of a test is not lost.
	start := time.Now()
	if err := waitOperUp(hh, HostIface, h.NsName); err != nil {
		return nil, err
	}
	if err := waitOperUp(n.br, h.Peer, n.BridgeNsName); err != nil {
		return nil, err
	}
	n.log.Debug().Str("netns", h.NsName).Stringer("addr", addr).Dur("waited_up", time.Since(start)).Msg("host added")
	return h, nil
}

// Hosts returns the hosts added so far, in creation order.
func (n *Net) Hosts() []*Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Host(nil), n.hosts...)
}

// Close deletes every namespace the Net made: the hosts' first, then the
// bridge's. A namespace still used by a process (one started with
// [Host.Command] and not yet exited) lives on, anonymous, until that process
// exits. Close is idempotent; the errors of all steps are joined.
func (n *Net) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	var errs []error
	for _, h := range n.hosts {
		errs = append(errs, deleteNamedNetns(h.NsName))
		n.log.Debug().Str("netns", h.NsName).Msg("host deleted")
	}
	if n.br != nil {
		n.br.Close()
	}
	if n.brNs.IsOpen() {
		errs = append(errs, n.brNs.Close())
		errs = append(errs, deleteNamedNetns(n.BridgeNsName))
	}
	return errors.Join(errs...)
}

// NsPath returns the bind-mount path of the host's network namespace.
func (h *Host) NsPath() string { return filepath.Join(NetnsDir, h.NsName) }

// NetNS opens the host's network namespace; the caller closes the handle.
func (h *Host) NetNS() (netns.NsHandle, error) {
	fd, err := unix.Open(h.NsPath(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return netns.None(), fmt.Errorf("open netns %s: %w", h.NsName, &os.PathError{Op: "open", Path: h.NsPath(), Err: err})
	}
	return netns.NsHandle(fd), nil
}

// Handle returns a netlink handle bound to the host's network namespace; the
// caller closes it.
func (h *Host) Handle() (*netlink.Handle, error) {
	ns, err := h.NetNS()
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	hh, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", h.NsName, err)
	}
	return hh, nil
}

// Do runs f on an OS thread switched into the host's network namespace, and
// returns its error. Sockets f opens belong to the host's namespace and stay
// there. The thread is locked for the whole call and thrown away afterwards
// (never returned to the runtime's pool), so the namespace switch cannot leak
// into other goroutines. f must not start goroutines that expect to be in the
// host's namespace: they run on other threads.
func (h *Host) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		back, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", h.NsName, os.NewSyscallError("open /proc/thread-self/ns/net", err))
			return
		}
		defer unix.Close(back)
		if err := setnsPath(h.NsPath()); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", h.NsName, err)
			return
		}
		errc <- f()
		// Back to where the thread was, then unlocked. Only if that fails
		// does the goroutine end locked, which ends the thread — or, were
		// it the main thread, parks it for good in the host's namespace,
		// and /proc/self/net would show the host's tables from then on.
		if unix.Setns(back, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	return <-errc
}

// LinkUpTimeout bounds the wait for a new host's links to come up.
const LinkUpTimeout = 10 * time.Second

// ErrLinkNotUp reports a link that did not come up within LinkUpTimeout.
var ErrLinkNotUp = errors.New("link not up")

// waitOperUp polls until link name reports IFLA_OPERSTATE up.
func waitOperUp(h *netlink.Handle, name, nsName string) error {
	deadline := time.Now().Add(LinkUpTimeout)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", name, nsName, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s in netns %s (operstate %s): %w", name, nsName, l.Attrs().OperState, ErrLinkNotUp)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// createNamedNetns makes a new network namespace and bind-mounts it at
// NetnsDir/name, like `ip netns add`; it returns an open handle to it.
func createNamedNetns(name string) (_ netns.NsHandle, err error) {
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	p := filepath.Join(NetnsDir, name)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, &os.PathError{Op: "create", Path: p, Err: err})
	}
	unix.Close(fd)
	defer func() {
		if err != nil {
			os.Remove(p)
		}
	}()
	type result struct {
		ns  netns.NsHandle
		err error
	}
	resc := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends up in the new namespace and dies
		// with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			resc <- result{netns.None(), os.NewSyscallError("unshare CLONE_NEWNET", err)}
			return
		}
		const self = "/proc/thread-self/ns/net"
		if err := unix.Mount(self, p, "none", unix.MS_BIND, ""); err != nil {
			resc <- result{netns.None(), os.NewSyscallError("mount "+p, err)}
			return
		}
		fd, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			resc <- result{netns.None(), &os.PathError{Op: "open", Path: self, Err: err}}
			return
		}
		resc <- result{netns.NsHandle(fd), nil}
	}()
	res := <-resc
	if res.err != nil {
		unix.Unmount(p, unix.MNT_DETACH) // may not be mounted: ignore
		return netns.None(), fmt.Errorf("create netns %s: %w", name, res.err)
	}
	return res.ns, nil
}

// deleteNamedNetns undoes createNamedNetns, like `ip netns delete`; a
// namespace already gone is success.
func deleteNamedNetns(name string) error {
	p := filepath.Join(NetnsDir, name)
	err := unix.Unmount(p, unix.MNT_DETACH)
	if err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("delete netns %s: %w", name, os.NewSyscallError("umount "+p, err))
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// setnsPath switches the calling thread into the network namespace bound at
// p; see setns(2). The caller has locked its OS thread.
func setnsPath(p string) error {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return os.NewSyscallError("setns CLONE_NEWNET", err)
	}
	return nil
}

// pickSubnet returns a random 10.X.Y.0/24, X in 200..250, that no address
// or route of the caller's network namespace overlaps.
func pickSubnet() (netip.Prefix, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("pick subnet: open netlink: %w", err)
	}
	defer h.Close()
	var used []netip.Prefix
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return netip.Prefix{}, fmt.Errorf("pick subnet: list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			used = append(used, ipnetPrefix(r.Dst))
		}
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return netip.Prefix{}, fmt.Errorf("pick subnet: list addresses: %w", err)
	}
	for _, a := range addrs {
		used = append(used, ipnetPrefix(a.IPNet))
	}
	for range 64 {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return netip.Prefix{}, fmt.Errorf("pick subnet: %w", err)
		}
		x := 200 + byte(binary.BigEndian.Uint16(b[:])%51)
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, x, b[1], 0}), 24)
		free := true
		for _, u := range used {
			if u.IsValid() && u.Overlaps(cand) && u.Bits() > 0 {
				free = false
				break
			}
		}
		if free {
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("pick subnet in 10.200.0.0/16..10.250.255.0/24: %w", ErrSubnetFull)
}

func ipnetPrefix(n *net.IPNet) netip.Prefix {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}
	}
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), bits)
}
