package netfix

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeHost is a [Netlink] over an in-memory host that records every change
// it is asked for as iproute2 text, failed ones suffixed with "# errno".
type fakeHost struct {
	links  []netlink.Link
	addrs  []netlink.Addr // LinkIndex set
	routes []netlink.Route
	ops    []string
	// failDel makes AddrDel of this address fail with EPERM.
	failDel netip.Addr
}

// newFakeHost builds a host from text, one item a line:
//
//	link eth0 02:00:00:00:00:01 [noarp]
//	addr 10.0.0.7/24 dev eth0
//	route default|PREFIX [via GW] [dev DEV] [src SRC] [metric N] [unreachable]
func newFakeHost(t *testing.T, spec string) *fakeHost {
	t.Helper()
	h := &fakeHost{}
	for line := range strings.Lines(spec) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "link":
			la := netlink.NewLinkAttrs()
			la.Index, la.Name = len(h.links)+1, f[1]
			if f[2] != "-" {
				mac, err := net.ParseMAC(f[2])
				if err != nil {
					t.Fatal(err)
				}
				la.HardwareAddr = mac
			}
			if slices.Contains(f, "noarp") {
				la.RawFlags |= unix.IFF_NOARP
			}
			h.links = append(h.links, &netlink.Dummy{LinkAttrs: la})
		case "addr":
			p := netip.MustParsePrefix(f[1])
			h.addrs = append(h.addrs, netlink.Addr{IPNet: prefixIPNet(p), LinkIndex: h.link(t, f[3]).Attrs().Index})
		case "route":
			r := netlink.Route{Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN}
			if f[1] != "default" {
				r.Dst = prefixIPNet(netip.MustParsePrefix(f[1]))
			}
			for i := 2; i < len(f); i++ {
				switch f[i] {
				case "via":
					i++
					r.Gw = net.IP(netip.MustParseAddr(f[i]).AsSlice())
				case "dev":
					i++
					r.LinkIndex = h.link(t, f[i]).Attrs().Index
				case "src":
					i++
					r.Src = net.IP(netip.MustParseAddr(f[i]).AsSlice())
				case "metric":
					i++
					r.Priority, _ = strconv.Atoi(f[i])
				case "unreachable":
					r.Type = unix.RTN_UNREACHABLE
				case "family6":
					r.Family = netlink.FAMILY_V6
				}
			}
			if r.Dst != nil {
				r.Family = familyOf(ipOf(r.Dst.IP))
			} else if r.Gw != nil {
				r.Family = familyOf(ipOf(r.Gw))
			} else if r.Family == 0 {
				r.Family = netlink.FAMILY_V4
			}
			h.routes = append(h.routes, r)
		default:
			t.Fatalf("fake host: bad line %q", line)
		}
	}
	return h
}

func ipOf(ip net.IP) netip.Addr {
	a, _ := ipAddr(ip)
	return a
}

func (h *fakeHost) link(t *testing.T, name string) netlink.Link {
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (h *fakeHost) name(idx int) string {
	l, err := h.LinkByIndex(idx)
	if err != nil {
		return fmt.Sprintf("if%d", idx)
	}
	return l.Attrs().Name
}

func (h *fakeHost) record(err error, format string, args ...any) error {
	s := fmt.Sprintf(format, args...)
	if err != nil {
		s += " # " + unix.ErrnoName(err.(unix.Errno))
	}
	h.ops = append(h.ops, s)
	return err
}

func (h *fakeHost) LinkByIndex(index int) (netlink.Link, error) {
	for _, l := range h.links {
		if l.Attrs().Index == index {
			return l, nil
		}
	}
	return nil, netlink.LinkNotFoundError{}
}

func (h *fakeHost) LinkByName(name string) (netlink.Link, error) {
	for _, l := range h.links {
		if l.Attrs().Name == name {
			return l, nil
		}
	}
	return nil, netlink.LinkNotFoundError{}
}

func (h *fakeHost) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	var out []netlink.Addr
	for _, a := range h.addrs {
		if link != nil && a.LinkIndex != link.Attrs().Index {
			continue
		}
		if family != netlink.FAMILY_ALL && familyOf(ipOf(a.IP)) != family {
			continue
		}
		out = append(out, a)
	}
	return out, nil
}

func fakePrefix(a *netlink.Addr) netip.Prefix {
	ones, _ := a.Mask.Size()
	return netip.PrefixFrom(ipOf(a.IP), ones)
}

func flagText(a *netlink.Addr) string {
	if a.Flags&unix.IFA_F_NODAD != 0 {
		return " nodad"
	}
	return ""
}

func (h *fakeHost) AddrReplace(link netlink.Link, addr *netlink.Addr) error {
	idx := link.Attrs().Index
	p := fakePrefix(addr)
	h.addrs = slices.DeleteFunc(h.addrs, func(a netlink.Addr) bool { return a.LinkIndex == idx && ipOf(a.IP) == p.Addr() })
	n := *addr
	n.LinkIndex = idx
	h.addrs = append(h.addrs, n)
	return h.record(nil, "ip addr replace %s dev %s%s", p, link.Attrs().Name, flagText(addr))
}

func (h *fakeHost) AddrDel(link netlink.Link, addr *netlink.Addr) error {
	idx := link.Attrs().Index
	p := fakePrefix(addr)
	if p.Addr() == h.failDel {
		return h.record(unix.EPERM, "ip addr del %s dev %s", p, link.Attrs().Name)
	}
	n := len(h.addrs)
	h.addrs = slices.DeleteFunc(h.addrs, func(a netlink.Addr) bool { return a.LinkIndex == idx && fakePrefix(&a) == p })
	var err error
	if len(h.addrs) == n {
		err = unix.EADDRNOTAVAIL // as inet_rtm_deladdr and inet6_addr_del
	}
	return h.record(err, "ip addr del %s dev %s", p, link.Attrs().Name)
}

func (h *fakeHost) firstAddr(idx, family int) net.IP {
	for _, a := range h.addrs {
		if a.LinkIndex == idx && familyOf(ipOf(a.IP)) == family {
			return a.IP
		}
	}
	return nil
}

// RouteGetWithOptions does a longest-prefix match; local addresses first.
func (h *fakeHost) RouteGetWithOptions(dst net.IP, o *netlink.RouteGetOptions) ([]netlink.Route, error) {
	d := ipOf(dst)
	fam := familyOf(d)
	host := &net.IPNet{IP: dst, Mask: net.CIDRMask(d.BitLen(), d.BitLen())}
	for _, a := range h.addrs {
		if ipOf(a.IP) == d {
			return []netlink.Route{{Type: unix.RTN_LOCAL, Dst: host, LinkIndex: 1, Src: dst}}, nil
		}
	}
	var oif int
	if o != nil && o.Oif != "" {
		l, err := h.LinkByName(o.Oif)
		if err != nil {
			return nil, unix.ENODEV
		}
		oif = l.Attrs().Index
	}
	best, bestLen := -1, -1
	for i, r := range h.routes {
		if r.Family != fam || (oif != 0 && r.LinkIndex != oif) {
			continue
		}
		ones := 0
		if r.Dst != nil {
			ones, _ = r.Dst.Mask.Size()
			if !netip.PrefixFrom(ipOf(r.Dst.IP), ones).Contains(d) {
				continue
			}
		}
		if ones > bestLen || (ones == bestLen && r.Priority < h.routes[best].Priority) {
			best, bestLen = i, ones
		}
	}
	if best < 0 {
		return nil, unix.ENETUNREACH
	}
	r := h.routes[best]
	if r.Type == unix.RTN_UNREACHABLE {
		return nil, unix.EHOSTUNREACH
	}
	src := r.Src
	if src == nil {
		src = h.firstAddr(r.LinkIndex, fam)
	}
	return []netlink.Route{{Type: r.Type, Dst: host, Gw: r.Gw, LinkIndex: r.LinkIndex, Src: src}}, nil
}

func (h *fakeHost) RouteList(link netlink.Link, family int) ([]netlink.Route, error) {
	var out []netlink.Route
	for _, r := range h.routes {
		if (link == nil || r.LinkIndex == link.Attrs().Index) && (family == netlink.FAMILY_ALL || r.Family == family) {
			out = append(out, r)
		}
	}
	return out, nil
}

func routeText(h *fakeHost, r *netlink.Route) string {
	ones, _ := r.Dst.Mask.Size()
	return fmt.Sprintf("%s dev %s", netip.PrefixFrom(ipOf(r.Dst.IP), ones), h.name(r.LinkIndex))
}

func (h *fakeHost) RouteReplace(r *netlink.Route) error {
	n := *r
	n.Type, n.Family = unix.RTN_UNICAST, familyOf(ipOf(r.Dst.IP))
	h.routes = append(h.routes, n)
	return h.record(nil, "ip route replace %s", routeText(h, r))
}

func (h *fakeHost) RouteDel(r *netlink.Route) error {
	n := len(h.routes)
	h.routes = slices.DeleteFunc(h.routes, func(x netlink.Route) bool {
		return x.LinkIndex == r.LinkIndex && x.Dst != nil && x.Dst.String() == r.Dst.String()
	})
	var err error
	if len(h.routes) == n {
		err = unix.ESRCH
	}
	return h.record(err, "ip route del %s", routeText(h, r))
}

func (h *fakeHost) Announce(link netlink.Link, addr netip.Addr) error {
	return h.record(nil, "arping -U -c 1 -I %s %s", link.Attrs().Name, addr)
}
