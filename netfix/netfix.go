package netfix

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Policy says what [Fix] does with a socket whose local address does not
// exist on this host.
type Policy int

const (
	// Rebind keeps the port and binds the source address this host would use
	// toward the peer. The default.
	Rebind Policy = iota
	// Takeover adds the old address to this host's interface facing the peer
	// and announces it with a gratuitous ARP.
	Takeover
	// Fail refuses the restore with [ErrAddrNotHere].
	Fail
)

var policyNames = [...]string{Rebind: "rebind", Takeover: "takeover", Fail: "fail"}

// String is the policy's name as [ParsePolicy] accepts it.
func (p Policy) String() string {
	if p >= 0 && int(p) < len(policyNames) {
		return policyNames[p]
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy parses the --net-policy flag: "rebind" (also ""), "takeover"
// or "fail".
func ParsePolicy(s string) (Policy, error) {
	if s == "" {
		return Rebind, nil
	}
	for p, name := range policyNames {
		if strings.EqualFold(s, name) {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("parse network policy %q: want one of %s", s, strings.Join(policyNames[:], ", "))
}

// Errors [Fix] returns, wrapped with the fd and address concerned.
var (
	// ErrNoRoute: this host has no route toward a socket's peer, or no
	// default route for a socket that is bound but not connected.
	ErrNoRoute = errors.New("no route")
	// ErrAddrNotHere: a socket's local address does not exist on this host
	// and the policy is [Fail].
	ErrAddrNotHere = errors.New("address does not exist on this host")
	// ErrNoSource: the interface a route leaves by has no usable address of
	// the socket's family to rebind to.
	ErrNoSource = errors.New("no source address")
)

// Options configure [Fix].
type Options struct {
	Policy Policy
	// Iface (--net-iface) is the interface [Takeover] puts addresses on.
	// Default: the interface of the route toward the peer (toward the
	// default route for a socket without a peer).
	Iface string
	Log   zerolog.Logger
}

// Socket is one inet socket of the image with the fd number it has in the
// process.
type Socket struct {
	Fd   int32
	Sock *pb.InetSocket
}

// SocketFix is the decision for one socket: bind New instead of Old. For
// [Takeover] New equals Old.
type SocketFix struct {
	Fd       int32
	Old, New netip.AddrPort
	Reason   string
}

// Change is one change made to the host.
type Change struct {
	// Cmd is the iproute2 (or iputils arping) equivalent, e.g.
	// "ip addr replace 10.9.0.2/32 dev eth0".
	Cmd string
	// undo reverses the change; nil when there is nothing to reverse.
	undo func(Netlink) error
}

// Result is what [Fix] decided and did.
type Result struct {
	Sockets []SocketFix // only sockets whose address is handled by the policy
	Changes []Change    // in the order made
}

// Fix decides, for each socket, what local address to bind on this host and
// changes the host's network where opts.Policy says so. A socket whose local
// address is unspecified (0.0.0.0, ::) or exists on this host is left alone.
// Every socket with a peer must have a route toward it, whatever the policy,
// or Fix returns [ErrNoRoute] naming the peer.
//
// Fix does not modify the sockets: the caller binds SocketFix.New. On error,
// the changes made so far are undone and the returned Result is nil.
// Running Fix again after a [Takeover] finds the addresses present and
// changes nothing.
func Fix(h Netlink, sockets []Socket, opts Options) (_ *Result, err error) {
	f := &fixer{h: h, opts: opts, log: opts.Log, res: &Result{}, have: map[netip.Addr]bool{}}
	defer func() {
		if err != nil {
			if uerr := Undo(h, f.res.Changes); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo network changes: %w", uerr))
			}
		}
	}()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := ipAddr(a.IP); ok {
			f.have[ip] = true
		}
	}
	for _, s := range sockets {
		if err := f.socket(s); err != nil {
			return nil, err
		}
	}
	if opts.Policy == Takeover {
		f.warnNothingToTake(sockets)
	}
	return f.res, nil
}

// warnNothingToTake warns when the image's servers (TCP listeners, UDP
// sockets without a peer) are bound to every address (0.0.0.0, ::) and no
// socket names an address the takeover could move: the process serves
// here at this host's own addresses only, and its clients, who reach the
// service address, find nothing there once the original is gone (a
// listener names its address to the takeover only through a connection
// it holds at the freeze, which a server between clients has not).
func (f *fixer) warnNothingToTake(sockets []Socket) {
	var wild []string
	for _, s := range sockets {
		k, err := parseSocket(s)
		if err != nil {
			continue
		}
		a := k.local.Addr()
		switch {
		case !a.IsUnspecified() && !a.IsLoopback():
			return // an address to move
		case a.IsUnspecified() && k.local.Port() != 0 && !k.peer.IsValid() && (s.Sock.Listening || s.Sock.Type == unix.SOCK_DGRAM):
			wild = append(wild, fmt.Sprintf("fd %d %s", k.fd, k.local))
		}
	}
	if len(wild) > 0 {
		f.log.Warn().Strs("sockets", wild).
			Msgf("takeover: no socket names an address to move here; its servers on every address (%s) serve at this host's own addresses only (bind the service address in the program to move it with the process)", strings.Join(wild, ", "))
	}
}

type fixer struct {
	h    Netlink
	opts Options
	log  zerolog.Logger
	res  *Result
	have map[netip.Addr]bool // addresses on this host, unmapped, no zone
	done map[string]bool     // Change.Cmd already made (routes shared by sockets)
}

// sock is a parsed socket.
type sock struct {
	fd     int32
	family int // netlink.FAMILY_V4/V6 of the (unmapped) addresses
	mapped bool
	local  netip.AddrPort // unmapped
	peer   netip.AddrPort // unmapped; invalid when not connected
	dev    string         // SO_BINDTODEVICE
	mark   uint32
}

func parseSocket(s Socket) (sock, error) {
	p := s.Sock
	r := sock{fd: s.Fd}
	if p == nil {
		return r, fmt.Errorf("socket fd %d: no inet socket record", s.Fd)
	}
	if p.Family != unix.AF_INET && p.Family != unix.AF_INET6 {
		return r, fmt.Errorf("socket fd %d: family %d is not inet", s.Fd, p.Family)
	}
	la, err := netip.ParseAddr(p.LocalAddr)
	if err != nil {
		return r, fmt.Errorf("parse local address of socket fd %d: %w", s.Fd, err)
	}
	r.mapped = la.Is4In6()
	r.local = netip.AddrPortFrom(la.Unmap(), uint16(p.LocalPort))
	if p.PeerAddr != "" {
		pa, err := netip.ParseAddr(p.PeerAddr)
		if err != nil {
			return r, fmt.Errorf("parse peer address of socket fd %d: %w", s.Fd, err)
		}
		r.peer = netip.AddrPortFrom(pa.Unmap(), uint16(p.PeerPort))
	}
	r.family = netlink.FAMILY_V6
	if r.local.Addr().Is4() {
		r.family = netlink.FAMILY_V4
	}
	if o := p.Options; o != nil {
		r.dev, r.mark = o.BindToDevice, uint32(o.Mark)
	}
	return r, nil
}

func (f *fixer) socket(s Socket) error {
	k, err := parseSocket(s)
	if err != nil {
		return err
	}
	var route *netlink.Route // toward the peer
	if k.peer.IsValid() {
		if route, err = f.routeTo(k.peer.Addr(), k.dev, k.mark); err != nil {
			return fmt.Errorf("find route to peer %s of socket fd %d: %w", k.peer.Addr(), k.fd, err)
		}
	}
	old := k.local.Addr()
	if old.IsUnspecified() || f.have[old.WithZone("")] {
		return nil
	}
	if f.opts.Policy == Fail {
		return fmt.Errorf("socket fd %d bound to %s: %w (network policy fail)", k.fd, k.local, ErrAddrNotHere)
	}
	toward := "peer " + k.peer.Addr().String()
	if route == nil {
		toward = "the default route"
		if route, err = f.defaultRoute(k.family, k.dev, k.mark); err != nil && (f.opts.Policy != Takeover || f.opts.Iface == "") {
			return fmt.Errorf("socket fd %d bound to %s, not connected: %w", k.fd, k.local, err)
		}
	}
	switch f.opts.Policy {
	case Rebind:
		src, link, err := f.source(route, k.family)
		if err != nil {
			return fmt.Errorf("rebind socket fd %d from %s: %w", k.fd, k.local, err)
		}
		if k.mapped {
			src = netip.AddrFrom16(src.As16())
		}
		f.fix(SocketFix{
			Fd: k.fd, Old: addrPort(k, old), New: netip.AddrPortFrom(src, k.local.Port()),
			Reason: fmt.Sprintf("rebind: %s is not on this host; %s is the source toward %s (dev %s)", old, src, toward, link),
		})
		return nil
	case Takeover:
		if err := f.takeover(k, route); err != nil {
			return fmt.Errorf("take over %s for socket fd %d: %w", old, k.fd, err)
		}
		f.fix(SocketFix{
			Fd: k.fd, Old: addrPort(k, old), New: addrPort(k, old),
			Reason: fmt.Sprintf("takeover: %s moved to this host", old),
		})
		return nil
	}
	return fmt.Errorf("socket fd %d: unknown network policy %v", k.fd, f.opts.Policy)
}

func addrPort(k sock, a netip.Addr) netip.AddrPort {
	if k.mapped {
		a = netip.AddrFrom16(a.As16())
	}
	return netip.AddrPortFrom(a, k.local.Port())
}

func (f *fixer) fix(sf SocketFix) {
	f.log.Info().Int32("fd", sf.Fd).Stringer("old", sf.Old).Stringer("new", sf.New).Msg(sf.Reason)
	f.res.Sockets = append(f.res.Sockets, sf)
}

// change records c after it was made.
func (f *fixer) change(c Change) {
	f.log.Info().Str("cmd", c.Cmd).Msg("network changed")
	f.res.Changes = append(f.res.Changes, c)
}

// routeTo is the route the kernel takes toward dst, honouring the socket's
// SO_BINDTODEVICE and SO_MARK. See ip-route(8), "ip route get".
func (f *fixer) routeTo(dst netip.Addr, dev string, mark uint32) (*netlink.Route, error) {
	o := &netlink.RouteGetOptions{Oif: dev, Mark: mark}
	if z := dst.Zone(); z != "" && dev == "" {
		if l, err := linkByZone(f.h, z); err == nil {
			o.OifIndex = l.Attrs().Index
		}
	}
	rs, err := f.h.RouteGetWithOptions(net.IP(dst.WithZone("").AsSlice()), o)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoRoute, err)
	}
	for i := range rs {
		switch rs[i].Type {
		case unix.RTN_UNICAST, unix.RTN_LOCAL:
			return &rs[i], nil
		}
	}
	return nil, ErrNoRoute // blackhole, unreachable, prohibit
}

func linkByZone(h Netlink, zone string) (netlink.Link, error) {
	if idx, err := strconv.Atoi(zone); err == nil {
		return h.LinkByIndex(idx)
	}
	return h.LinkByName(zone)
}

// defaultRoute is the main table's default route of family with the lowest
// metric (bound to dev if set); for a gateway route, the route toward the
// gateway as the kernel resolves it, so that its Src is what the kernel would
// choose.
func (f *fixer) defaultRoute(family int, dev string, mark uint32) (*netlink.Route, error) {
	rs, err := f.h.RouteList(nil, family)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var devIdx int
	if dev != "" {
		l, err := f.h.LinkByName(dev)
		if err != nil {
			return nil, fmt.Errorf("find link %s: %w", dev, err)
		}
		devIdx = l.Attrs().Index
	}
	var best *netlink.Route
	for i := range rs {
		r := &rs[i]
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if r.Type != unix.RTN_UNICAST || (devIdx != 0 && r.LinkIndex != devIdx) || r.LinkIndex == 0 {
			continue
		}
		if best == nil || r.Priority < best.Priority {
			best = r
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: no default route for %s", ErrNoRoute, familyName(family))
	}
	if best.Src == nil && best.Gw != nil {
		if gw, ok := netip.AddrFromSlice(best.Gw); ok {
			if r, err := f.routeTo(gw.Unmap(), dev, mark); err == nil && r.LinkIndex == best.LinkIndex {
				return r, nil
			}
		}
	}
	return best, nil
}

func familyName(family int) string {
	if family == netlink.FAMILY_V4 {
		return "IPv4"
	}
	return "IPv6"
}

// source is the source address for traffic along r: its preferred source
// (RTA_PREFSRC) or else the first usable address of its interface.
func (f *fixer) source(r *netlink.Route, family int) (netip.Addr, string, error) {
	link, err := f.h.LinkByIndex(r.LinkIndex)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("find link %d: %w", r.LinkIndex, err)
	}
	name := link.Attrs().Name
	if a, ok := ipAddr(r.Src); ok && familyOf(a) == family {
		return a, name, nil
	}
	addrs, err := f.h.AddrList(link, family)
	if err != nil {
		return netip.Addr{}, name, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	var fallback netip.Addr
	for _, a := range addrs {
		ip, ok := ipAddr(a.IP)
		if !ok || a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		if a.Scope == unix.RT_SCOPE_UNIVERSE && a.Flags&unix.IFA_F_DEPRECATED == 0 {
			return ip, name, nil
		}
		if !fallback.IsValid() {
			fallback = ip
		}
	}
	if fallback.IsValid() {
		return fallback, name, nil
	}
	return netip.Addr{}, name, fmt.Errorf("%s on %s: %w", familyName(family), name, ErrNoSource)
}

func familyOf(a netip.Addr) int {
	if a.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// ipAddr converts a netlink IP to an unmapped, zoneless netip.Addr.
func ipAddr(ip net.IP) (netip.Addr, bool) {
	if len(ip) == 0 {
		return netip.Addr{}, false
	}
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}

// takeover puts k's local address on the interface facing the peer.
//
// Prefix length: if the address lies in a subnet already configured on that
// interface (10.0.0.5 next to 10.0.0.7/24), it is added with the subnet's
// length, so that it becomes a secondary address of the subnet and no route
// is added (see ip-address(8), "secondary"); otherwise as a /32 or /128 host
// address, so that no subnet route appears. IPv6 addresses are added with
// nodad: the address is being moved deliberately, and a tentative address
// cannot be bound (EADDRNOTAVAIL) until duplicate address detection ends.
func (f *fixer) takeover(k sock, route *netlink.Route) error {
	var link netlink.Link
	var err error
	if f.opts.Iface != "" {
		link, err = f.h.LinkByName(f.opts.Iface)
		if err != nil {
			return fmt.Errorf("find link %s: %w", f.opts.Iface, err)
		}
	} else if link, err = f.h.LinkByIndex(route.LinkIndex); err != nil {
		return fmt.Errorf("find link %d: %w", route.LinkIndex, err)
	}
	old := k.local.Addr().WithZone("")
	prefix, err := f.prefixFor(link, old, k.family)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(prefix)}
	if k.family == netlink.FAMILY_V6 {
		addr.Flags = unix.IFA_F_NODAD
	}
	name := link.Attrs().Name
	if err := f.h.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("add address %s to %s: %w", prefix, name, err)
	}
	f.have[old] = true
	f.change(Change{Cmd: addrCmd("replace", prefix, name, k.family == netlink.FAMILY_V6),
		undo: func(h Netlink) error { return delAddr(h, link, prefix) }})

	if k.peer.IsValid() && route.LinkIndex != link.Attrs().Index {
		if err := f.routePeer(k.peer.Addr(), link); err != nil {
			return err
		}
	}
	return f.announce(link, old)
}

func (f *fixer) prefixFor(link netlink.Link, a netip.Addr, family int) (netip.Prefix, error) {
	addrs, err := f.h.AddrList(link, family)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, la := range addrs {
		ip, ok := ipAddr(la.IP)
		if !ok || la.IPNet == nil || la.Peer != nil {
			continue
		}
		ones, _ := la.Mask.Size()
		if ones == 0 || ones == a.BitLen() {
			continue
		}
		if p := netip.PrefixFrom(ip, ones).Masked(); p.Contains(a) {
			return netip.PrefixFrom(a, ones), nil
		}
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// routePeer routes peer through link (the --net-iface override differs from
// the interface the host would use). Equivalent to:
// `ip route replace $peer/32 dev $link`.
func (f *fixer) routePeer(peer netip.Addr, link netlink.Link) error {
	dst := netip.PrefixFrom(peer.WithZone(""), peer.BitLen())
	name := link.Attrs().Name
	cmd := fmt.Sprintf("ip route replace %s dev %s", dst, name)
	if f.done[cmd] {
		return nil
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixIPNet(dst), Scope: netlink.SCOPE_LINK}
	if err := f.h.RouteReplace(r); err != nil {
		return fmt.Errorf("route peer %s via %s: %w", peer, name, err)
	}
	if f.done == nil {
		f.done = map[string]bool{}
	}
	f.done[cmd] = true
	f.change(Change{Cmd: cmd, undo: func(h Netlink) error {
		err := h.RouteDel(&netlink.Route{LinkIndex: r.LinkIndex, Dst: r.Dst, Scope: r.Scope})
		if gone(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delete route %s dev %s: %w", dst, name, err)
		}
		return nil
	}})
	return nil
}

// announce sends a gratuitous ARP for an IPv4 address on an Ethernet-like
// link. IPv6 unsolicited neighbour advertisements are not sent.
func (f *fixer) announce(link netlink.Link, a netip.Addr) error {
	at := link.Attrs()
	switch {
	case !a.Is4():
		f.log.Info().Str("dev", at.Name).Stringer("addr", a).
			Msg("unsolicited neighbour advertisement not sent: neighbours learn the move when their cache entry goes stale")
		return nil
	case len(at.HardwareAddr) != 6 || at.Flags&net.FlagLoopback != 0 || at.RawFlags&unix.IFF_NOARP != 0:
		f.log.Info().Str("dev", at.Name).Stringer("addr", a).Msg("gratuitous ARP not sent: link does not use ARP")
		return nil
	}
	if err := f.h.Announce(link, a); err != nil {
		return fmt.Errorf("announce %s on %s: %w", a, at.Name, err)
	}
	f.change(Change{Cmd: fmt.Sprintf("arping -U -c 1 -I %s %s", at.Name, a)})
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrCmd(verb string, p netip.Prefix, dev string, nodad bool) string {
	s := fmt.Sprintf("ip addr %s %s dev %s", verb, p, dev)
	if nodad {
		s += " nodad"
	}
	return s
}

// gone reports whether err says the object to delete does not exist:
// EADDRNOTAVAIL (address), ESRCH (route), ENODEV or a missing link.
func gone(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.ENODEV) || errors.As(err, &lnf)
}

// delAddr deletes p from link; already gone is success.
// Equivalent to: `ip addr del $p dev $link`.
func delAddr(h Netlink, link netlink.Link, p netip.Prefix) error {
	err := h.AddrDel(link, &netlink.Addr{IPNet: prefixIPNet(p)})
	if err != nil && !gone(err) {
		return fmt.Errorf("delete address %s from %s: %w", p, link.Attrs().Name, err)
	}
	return nil
}

// Undo reverses changes (from [Result.Changes] or [Release]) in reverse
// order. Objects already gone count as removed; errors are joined and do not
// stop the others.
func Undo(h Netlink, changes []Change) error {
	var errs []error
	for _, c := range slices.Backward(changes) {
		if c.undo != nil {
			errs = append(errs, c.undo(h))
		}
	}
	return errors.Join(errs...)
}

// Release removes addrs from this host: used on the source host, once the
// restored process runs on the target, by `lazycr dump --release-addresses`.
// Each address is deleted with the prefix length it is configured with (the
// kernel matches it on delete), from iface or, if iface is "", from whichever
// link holds it. An address that is not there is success; errors are joined
// and do not stop the others. Equivalent to, per address:
// `ip addr del $addr/$len dev $link`.
//
// Deleting a primary IPv4 address also deletes the secondaries of its subnet
// unless net.ipv4.conf.$link.promote_secondaries is set (ip-address(8)).
func Release(h Netlink, addrs []netip.Addr, iface string, log zerolog.Logger) ([]Change, error) {
	var link netlink.Link
	if iface != "" {
		l, err := h.LinkByName(iface)
		if gone(err) {
			log.Info().Str("dev", iface).Msg("release addresses: link is gone")
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("find link %s: %w", iface, err)
		}
		link = l
	}
	var changes []Change
	var errs []error
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		c, err := release(h, link, a, log)
		if c != nil {
			changes = append(changes, *c)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("release address %s: %w", a, err))
		}
	}
	return changes, errors.Join(errs...)
}

func release(h Netlink, link netlink.Link, a netip.Addr, log zerolog.Logger) (*Change, error) {
	list, err := h.AddrList(link, familyOf(a))
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, la := range list {
		ip, ok := ipAddr(la.IP)
		if !ok || ip != a || la.IPNet == nil {
			continue
		}
		l := link
		if l == nil {
			if l, err = h.LinkByIndex(la.LinkIndex); err != nil {
				return nil, fmt.Errorf("find link %d: %w", la.LinkIndex, err)
			}
		}
		ones, _ := la.Mask.Size()
		p := netip.PrefixFrom(a, ones)
		if err := delAddr(h, l, p); err != nil {
			return nil, err
		}
		c := Change{Cmd: addrCmd("del", p, l.Attrs().Name, false)}
		log.Info().Str("cmd", c.Cmd).Msg("network changed")
		return &c, nil
	}
	log.Info().Stringer("addr", a).Msg("release address: not on this host")
	return nil, nil
}

// Addresses lists, sorted and without duplicates, the local addresses of
// sockets that [Takeover] on a target would move: specific unicast
// addresses, not loopback or link-local. The source host releases these.
func Addresses(sockets []Socket) []netip.Addr {
	var out []netip.Addr
	for _, s := range sockets {
		if s.Sock == nil {
			continue
		}
		a, err := netip.ParseAddr(s.Sock.LocalAddr)
		if err != nil {
			continue
		}
		a = a.Unmap().WithZone("")
		if a.IsUnspecified() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() {
			continue
		}
		out = append(out, a)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
