package netfix

import (
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Netlink is the host access netfix needs: a few calls of [netlink.Handle],
// plus Announce, which sends the one packet netfix sends. Implementations
// work in one network namespace. [NewNetlink] wraps a real handle; tests use
// a fake that records operations.
type Netlink interface {
	// LinkByIndex finds a link. Equivalent to: `ip link show` (by index).
	LinkByIndex(index int) (netlink.Link, error)
	// LinkByName finds a link. Equivalent to: `ip link show $name`.
	LinkByName(name string) (netlink.Link, error)
	// AddrList lists the addresses of link (all links if nil) in family.
	// Equivalent to: `ip addr show [dev $link]`.
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	// AddrReplace adds addr to link, or updates it if present.
	// Equivalent to: `ip addr replace $addr dev $link`.
	AddrReplace(link netlink.Link, addr *netlink.Addr) error
	// AddrDel deletes addr from link; EADDRNOTAVAIL if it is not there.
	// Equivalent to: `ip addr del $addr dev $link`.
	AddrDel(link netlink.Link, addr *netlink.Addr) error
	// RouteGetWithOptions resolves the route toward dst as the kernel would.
	// Equivalent to: `ip route get $dst [oif $dev] [mark $mark]`.
	RouteGetWithOptions(dst net.IP, opts *netlink.RouteGetOptions) ([]netlink.Route, error)
	// RouteList lists the main table's routes of link (all if nil).
	// Equivalent to: `ip route show`.
	RouteList(link netlink.Link, family int) ([]netlink.Route, error)
	// RouteReplace adds or updates a route.
	// Equivalent to: `ip route replace $route`.
	RouteReplace(route *netlink.Route) error
	// RouteDel deletes a route; ESRCH if it is not there.
	// Equivalent to: `ip route del $route`.
	RouteDel(route *netlink.Route) error
	// Announce sends a gratuitous ARP for the IPv4 address addr from link's
	// hardware address, so that neighbours update their caches.
	// Equivalent to: `arping -U -c 1 -I $link $addr`.
	Announce(link netlink.Link, addr netip.Addr) error
}
