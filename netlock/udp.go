package netlock

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// UDPPort is a bound UDP socket, by its local address as seen inside the
// locked network namespace, that is not bound yet in that namespace (a
// migration's target re-creates it once the address takeover made its
// address live). A datagram that reaches a local address on a port no
// socket is bound to is dropped by the kernel, which answers it with an
// ICMP port unreachable (__udp4_lib_rcv and __udp6_lib_rcv call icmp_send;
// RFC 1122 section 4.1.3.1), and a connected UDP socket that receives
// that error fails its next call with ECONNREFUSED (udp(7), ERRORS): a
// connected client of the migrating process would see its server refuse.
// A lock on a UDP port drops those errors on their way out, and nothing
// else: a datagram that comes before the socket is lost, as on the wire
// (udp(7): no delivery guarantee), and once the socket is bound datagrams
// queue in it as always.
//
// The error is matched by the datagram it quotes (RFC 792, RFC 4443
// section 3.1): ICMP destination unreachable code 3 (port unreachable),
// or ICMPv6 type 1 code 4, whose quoted header is UDP to the port (and,
// unless the address is unspecified, to the address). An unspecified
// address, V6Only and IPv4-mapped addresses are read as for a [Listener].
// A quoted IPv4 header with options or IPv6 extension headers is not
// matched (its error passes, as without a lock).
type UDPPort struct {
	Local  netip.AddrPort
	V6Only bool
}

func (u UDPPort) String() string { return "udp port " + u.Local.String() }

// Set names of the UDP part of a lock's table.
const (
	setUDP4      = "udp4"      // ipv4_addr . inet_service
	setUDP6      = "udp6"      // ipv6_addr . inet_service
	setUDPPorts4 = "udpports4" // inet_service, sockets on 0.0.0.0
	setUDPPorts6 = "udpports6" // inet_service, sockets on ::
)

// udpKeys are the set elements of a lock's UDP ports: on one address (a4,
// a6) and on every address (w4, w6).
type udpKeys struct {
	a4, a6, w4, w6 [][]byte
}

func (k udpKeys) n() int { return len(k.a4) + len(k.a6) + len(k.w4) + len(k.w6) }

// udpKeysOf validates ports and returns their set keys.
func udpKeysOf(ports []UDPPort) (udpKeys, error) {
	var k udpKeys
	for _, u := range ports {
		if err := addPortKey(&k.a4, &k.a6, &k.w4, &k.w6, u, u.Local, u.V6Only); err != nil {
			return k, err
		}
	}
	return k, nil
}

// icmpUnreach describes where one family's port-unreachable error keeps
// what it quotes, as offsets from its ICMP header (the transport header
// of the error).
type icmpUnreach struct {
	f          family
	l4proto    byte   // IPPROTO_ICMP or IPPROTO_ICMPV6
	typ, code  byte   // port unreachable
	first      uint32 // offset of a byte of the quoted header that must be first
	firstValue byte   // its value: IPv4 version 4 and IHL 5 (no options)
	nexthdr    uint32 // offset of the quoted header's protocol (next header)
	daddr      uint32 // offset of the quoted destination address
	dport      uint32 // offset of the quoted UDP destination port
}

// ICMP header 8 bytes (RFC 792, RFC 4443), then the quoted IP header (20
// bytes without options, 40 for IPv6), then the UDP header, whose
// destination port is at its offset 2 (RFC 768).
var (
	unreach4 = icmpUnreach{f: fam4, l4proto: unix.IPPROTO_ICMP, typ: 3, code: 3, first: 8, firstValue: 0x45, nexthdr: 8 + 9, daddr: 8 + 16, dport: 8 + 20 + 2}
	unreach6 = icmpUnreach{f: fam6, l4proto: unix.IPPROTO_ICMPV6, typ: 1, code: 4, first: 8 + 6, firstValue: unix.IPPROTO_UDP, nexthdr: 8 + 6, daddr: 8 + 24, dport: 8 + 40 + 2}
)

// addUDPObjects queues on c, for the output chain out of table t, the UDP
// port sets with their elements and one rule per non-empty set:
//
//	meta nfproto <f> meta l4proto <icmp> <type> <code> <quoted header is UDP>
//	[<quoted daddr> .] <quoted dport> @<set> counter drop
func addUDPObjects(c *nftables.Conn, t *nftables.Table, out *nftables.Chain, k udpKeys) error {
	for _, s := range []struct {
		u      icmpUnreach
		name   string
		id     uint32
		keys   [][]byte
		byAddr bool
	}{
		{unreach4, setUDP4, 7, k.a4, true},
		{unreach6, setUDP6, 8, k.a6, true},
		{unreach4, setUDPPorts4, 9, k.w4, false},
		{unreach6, setUDPPorts6, 10, k.w6, false},
	} {
		if len(s.keys) == 0 {
			continue
		}
		if err := addSet(c, portSet(t, s.name, s.id, s.u.f.addr, s.byAddr), s.keys); err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: s.u.match(s.name, s.id, s.byAddr)})
	}
	return nil
}

// match returns the expressions of the rule that drops a port-unreachable
// error quoting a UDP datagram to an element of set (keyed daddr . dport
// with byAddr, dport alone otherwise).
func (u icmpUnreach) match(set string, id uint32, byAddr bool) []expr.Any {
	reg := func(slot uint32) uint32 { return unix.NFT_REG32_00 + slot }
	th := func(off, n uint32, want ...byte) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
		}
	}
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{u.f.nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{u.l4proto}},
	}
	e = append(e, th(0, 2, u.typ, u.code)...)
	e = append(e, th(u.first, 1, u.firstValue)...)
	if u.nexthdr != u.first {
		e = append(e, th(u.nexthdr, 1, unix.IPPROTO_UDP)...)
	}
	if byAddr {
		e = append(e,
			&expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseTransportHeader, Offset: u.daddr, Len: u.f.alen},
			&expr.Payload{DestRegister: reg(u.f.alen / 4), Base: expr.PayloadBaseTransportHeader, Offset: u.dport, Len: 2},
		)
	} else {
		e = append(e, &expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseTransportHeader, Offset: u.dport, Len: 2})
	}
	return append(e,
		&expr.Lookup{SourceRegister: reg(0), SetName: set, SetID: id},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}
