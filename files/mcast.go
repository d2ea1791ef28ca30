package files

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// The multicast groups a datagram socket joined (ip(7) IP_ADD_MEMBERSHIP,
// ipv6(7) IPV6_ADD_MEMBERSHIP, RFC 3678's MCAST_JOIN_GROUP) are kept with
// their source filters: without them a restored mDNS, SSDP or service
// discovery socket would no longer receive its group, silently. No
// getsockopt lists a socket's groups, so the dump reads the groups in use
// in the process's network namespace (/proc/PID/net/igmp and igmp6) and
// asks the socket, for each, for its source filter with
// getsockopt(MCAST_MSFILTER), which only a member answers
// (ip_mc_gsfget in net/ipv4/igmp.c and ip6_mc_msfget in net/ipv6/mcast.c
// fail EADDRNOTAVAIL otherwise). Restore joins each group again on the
// interface of the same name (MCAST_JOIN_GROUP) and sets a filter that is
// not the plain join's (MCAST_MSFILTER).

// mcastGroup is a multicast group in use on an interface.
type mcastGroup struct {
	ifindex uint32
	ifname  string
	group   netip.Addr
}

// parseIgmp parses /proc/net/igmp: an interface line ("Idx Device :
// Count Querier") followed by a line per group, the group as the hex of
// the big-endian address read as a little-endian word (net/ipv4/igmp.c
// igmp_mc_seq_show prints "%08X" of the __be32).
func parseIgmp(b []byte) ([]mcastGroup, error) {
	var out []mcastGroup
	var cur *mcastGroup
	sc := bufio.NewScanner(bytes.NewReader(b))
	for first := true; sc.Scan(); first = false {
		line := sc.Text()
		if first || strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if !strings.HasPrefix(line, "\t") {
			if len(f) < 3 || f[2] != ":" {
				return nil, fmt.Errorf("igmp line %q: want an interface", line)
			}
			idx, err := strconv.ParseUint(f[0], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("igmp line %q: index: %w", line, err)
			}
			cur = &mcastGroup{ifindex: uint32(idx), ifname: f[1]}
			continue
		}
		if cur == nil || len(f) < 1 || len(f[0]) != 8 {
			return nil, fmt.Errorf("igmp line %q: want a group of an interface", line)
		}
		v, err := strconv.ParseUint(f[0], 16, 32)
		if err != nil {
			return nil, fmt.Errorf("igmp line %q: group: %w", line, err)
		}
		var a [4]byte
		binary.LittleEndian.PutUint32(a[:], uint32(v))
		out = append(out, mcastGroup{ifindex: cur.ifindex, ifname: cur.ifname, group: netip.AddrFrom4(a)})
	}
	return out, sc.Err()
}

// parseIgmp6 parses /proc/net/igmp6: "index name group(32 hex) users
// flags timer" per line (net/ipv6/mcast.c igmp6_mc_seq_show).
func parseIgmp6(b []byte) ([]mcastGroup, error) {
	var out []mcastGroup
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || len(f[2]) != 32 {
			return nil, fmt.Errorf("igmp6 line %q: want index, name and group", sc.Text())
		}
		idx, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("igmp6 line %q: index: %w", sc.Text(), err)
		}
		var a [16]byte
		for i := range a {
			v, err := strconv.ParseUint(f[2][2*i:2*i+2], 16, 8)
			if err != nil {
				return nil, fmt.Errorf("igmp6 line %q: group: %w", sc.Text(), err)
			}
			a[i] = byte(v)
		}
		out = append(out, mcastGroup{ifindex: uint32(idx), ifname: f[1], group: netip.AddrFrom16(a)})
	}
	return out, sc.Err()
}

// mcastGroups returns the groups in use in pid's network namespace; a
// kernel without IPv6 (no igmp6) has none of those.
func mcastGroups(pid int) ([]mcastGroup, error) {
	var out []mcastGroup
	for _, p := range []struct {
		file  string
		parse func([]byte) ([]mcastGroup, error)
	}{{"igmp", parseIgmp}, {"igmp6", parseIgmp6}} {
		path := fmt.Sprintf("/proc/%d/net/%s", pid, p.file)
		b, err := os.ReadFile(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		g, err := p.parse(b)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		out = append(out, g...)
	}
	return out, nil
}

// struct group_filter and struct group_req (include/uapi/linux/in.h):
// a u32 interface index, then struct __kernel_sockaddr_storage (128
// bytes, 8-aligned) for the group, then (group_filter) fmode and numsrc
// and the sources, each a sockaddr_storage.
const (
	gfGroup   = 8
	gfFmode   = 136
	gfNumsrc  = 140
	gfSlist   = 144
	ssSize    = 128
	grSize    = 136
	maxSource = 64 // the sources read at once; more asks again
)

func putSockaddr(b []byte, a netip.Addr) {
	if a.Is4() {
		binary.LittleEndian.PutUint16(b, unix.AF_INET)
		a4 := a.As4()
		copy(b[4:8], a4[:])
		return
	}
	binary.LittleEndian.PutUint16(b, unix.AF_INET6)
	a16 := a.As16()
	copy(b[8:24], a16[:])
}

func getSockaddr(b []byte) (netip.Addr, bool) {
	switch binary.LittleEndian.Uint16(b) {
	case unix.AF_INET:
		return netip.AddrFrom4([4]byte(b[4:8])), true
	case unix.AF_INET6:
		return netip.AddrFrom16([16]byte(b[8:24])), true
	}
	return netip.Addr{}, false
}

// mcastLevel is the socket level of a group's MCAST_* options.
func mcastLevel(g netip.Addr) int {
	if g.Is4() {
		return unix.IPPROTO_IP
	}
	return unix.IPPROTO_IPV6
}

// dumpMemberships returns the groups of groups the socket fd (of family)
// is a member of, with their source filters. An IPv4 socket can only
// join IPv4 groups; an IPv6 one both (an IPv4 group through IPPROTO_IP).
func dumpMemberships(fd, family int, groups []mcastGroup) ([]*pb.McastMembership, error) {
	var out []*pb.McastMembership
	for _, g := range groups {
		if family == unix.AF_INET && !g.group.Is4() {
			continue
		}
		n := maxSource
		for {
			buf := make([]byte, gfSlist+n*ssSize)
			binary.LittleEndian.PutUint32(buf, g.ifindex)
			putSockaddr(buf[gfGroup:], g.group)
			binary.LittleEndian.PutUint32(buf[gfNumsrc:], uint32(n))
			_, err := kabi.GetsockoptBytes(fd, mcastLevel(g.group), unix.MCAST_MSFILTER, buf)
			if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.EINVAL) && family == unix.AF_INET6 && g.group.Is4() {
				break // not a member (an IPv6-only socket has no IPv4 groups)
			}
			if err != nil {
				return nil, fmt.Errorf("read the source filter of group %s on %s: %w", g.group, g.ifname, err)
			}
			total := int(binary.LittleEndian.Uint32(buf[gfNumsrc:]))
			if total > n {
				n = total
				continue
			}
			m := &pb.McastMembership{Interface: g.ifname, Group: g.group.String(),
				Include: binary.LittleEndian.Uint32(buf[gfFmode:]) == unix.MCAST_INCLUDE}
			for i := range total {
				a, ok := getSockaddr(buf[gfSlist+i*ssSize:])
				if !ok {
					return nil, fmt.Errorf("source %d of group %s on %s: unknown family", i, g.group, g.ifname)
				}
				m.Sources = append(m.Sources, a.String())
			}
			out = append(out, m)
			break
		}
	}
	return out, nil
}

// restoreMemberships joins socket fd (number num in the image) to each
// group of ms on the interface of the same name in the socket's network
// namespace, and sets its source filter when it is not a plain join's
// (exclude nothing).
func restoreMemberships(fd int, num int32, ms []*pb.McastMembership) error {
	for _, m := range ms {
		g, err := netip.ParseAddr(m.Group)
		if err != nil || !g.IsMulticast() {
			return fmt.Errorf("socket fd %d: multicast group %q in the image", num, m.Group)
		}
		// SIOCGIFINDEX on the socket looks the name up in its own
		// network namespace (dev_ioctl in net/core/dev_ioctl.c).
		ifr, err := unix.NewIfreq(m.Interface)
		if err != nil {
			return fmt.Errorf("socket fd %d: interface %q of group %s: %w", num, m.Interface, m.Group, err)
		}
		if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
			return fmt.Errorf("socket fd %d: interface %s of group %s: %w", num, m.Interface, m.Group, os.NewSyscallError("ioctl SIOCGIFINDEX", err))
		}
		idx := ifr.Uint32()
		req := make([]byte, grSize)
		binary.LittleEndian.PutUint32(req, idx)
		putSockaddr(req[gfGroup:], g)
		if err := kabi.SetsockoptBytes(fd, mcastLevel(g), unix.MCAST_JOIN_GROUP, req); err != nil {
			return fmt.Errorf("socket fd %d: join group %s on %s: %w", num, m.Group, m.Interface, err)
		}
		if !m.Include && len(m.Sources) == 0 {
			continue
		}
		buf := make([]byte, gfSlist+len(m.Sources)*ssSize)
		binary.LittleEndian.PutUint32(buf, idx)
		putSockaddr(buf[gfGroup:], g)
		fmode := uint32(unix.MCAST_EXCLUDE)
		if m.Include {
			fmode = unix.MCAST_INCLUDE
		}
		binary.LittleEndian.PutUint32(buf[gfFmode:], fmode)
		binary.LittleEndian.PutUint32(buf[gfNumsrc:], uint32(len(m.Sources)))
		for i, s := range m.Sources {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return fmt.Errorf("socket fd %d: source %q of group %s in the image", num, s, m.Group)
			}
			putSockaddr(buf[gfSlist+i*ssSize:], a)
		}
		if err := kabi.SetsockoptBytes(fd, mcastLevel(g), unix.MCAST_MSFILTER, buf); err != nil {
			return fmt.Errorf("socket fd %d: set the source filter of group %s on %s: %w", num, m.Group, m.Interface, err)
		}
	}
	return nil
}
