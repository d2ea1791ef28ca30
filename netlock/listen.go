package netlock

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Listener is a listening TCP socket, by its local address as seen inside
// the locked network namespace. A lock on it drops the SYNs that open new
// connections to it (flags SYN without ACK, coming in), and nothing else:
// a client whose SYN is dropped retransmits it (after 1 s, then with
// backoff: tcp(7) tcp_syn_retries, RFC 6298 section 5.7), and the
// retransmission that arrives after the lock is gone reaches the restored
// listener. Without the lock the frozen listener's kernel would complete
// the handshake and queue the connection in an accept queue that dies with
// the dumped process, and the client would get a reset.
//
// An unspecified address listens on every address of its family: the lock
// then matches the port alone. An IPv6 listener on :: without IPV6_V6ONLY
// also takes IPv4 connections (ipv6(7)): set V6Only false and both families
// are matched. An IPv4-mapped address is matched as IPv4.
type Listener struct {
	Local  netip.AddrPort
	V6Only bool
}

func (l Listener) String() string { return "listener " + l.Local.String() }

// Set names of the listener part of a lock's table.
const (
	setListen4 = "listen4" // ipv4_addr . inet_service
	setListen6 = "listen6" // ipv6_addr . inet_service
	setPorts4  = "lports4" // inet_service, listeners on 0.0.0.0
	setPorts6  = "lports6" // inet_service, listeners on ::
)

// lockKeys are the set elements of one lock: connections (c4, c6),
// listeners on one address (l4, l6) and on every address (w4, w6).
type lockKeys struct {
	c4, c6, l4, l6, w4, w6 [][]byte
	udp                    udpKeys // udp.go
}

func (k lockKeys) conns() int { return len(k.c4) + len(k.c6) }

func (k lockKeys) listeners() int { return len(k.l4) + len(k.l6) + len(k.w4) + len(k.w6) }

// lockKeysOf validates conns and listeners and returns their set keys; at
// least one of them must be given.
func lockKeysOf(conns []Conn, listeners []Listener) (lockKeys, error) {
	return lockKeysWith(conns, listeners, nil)
}

// lockKeysWith is lockKeysOf with UDP ports (udp.go); at least one
// connection, listener or port must be given.
func lockKeysWith(conns []Conn, listeners []Listener, udp []UDPPort) (lockKeys, error) {
	var k lockKeys
	if len(conns) == 0 && len(listeners) == 0 && len(udp) == 0 {
		return k, ErrNoConns
	}
	var err error
	if k.udp, err = udpKeysOf(udp); err != nil {
		return k, err
	}
	if len(conns) > 0 {
		var err error
		if k.c4, k.c6, err = keys(conns); err != nil {
			return k, err
		}
	}
	for _, l := range listeners {
		if err := addPortKey(&k.l4, &k.l6, &k.w4, &k.w6, l, l.Local, l.V6Only); err != nil {
			return k, err
		}
	}
	return k, nil
}

// addPortKey adds the set key of a socket bound to local (what names it
// in errors): its port alone to w4 or w6 when it is on every address (an
// IPv6 one without v6only to both: ipv6(7)), else its address . port (with
// the two bytes of padding a concatenation of a 2-byte key takes) to a4
// or a6. An IPv4-mapped address counts as IPv4; a key already there is
// not added again.
func addPortKey(a4, a6, w4, w6 *[][]byte, what fmt.Stringer, local netip.AddrPort, v6only bool) error {
	add := func(dst *[][]byte, key []byte) {
		if !slices.ContainsFunc(*dst, func(b []byte) bool { return bytes.Equal(b, key) }) {
			*dst = append(*dst, key)
		}
	}
	a, p := local.Addr().Unmap().WithZone(""), local.Port()
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s: address missing: %w", what, ErrBadConn)
	case p == 0:
		return fmt.Errorf("%s: port 0: %w", what, ErrBadConn)
	}
	port := []byte{byte(p >> 8), byte(p)}
	switch {
	case a.IsUnspecified() && a.Is4():
		add(w4, port)
	case a.IsUnspecified():
		add(w6, port)
		if !v6only {
			add(w4, port)
		}
	case a.Is4():
		add(a4, append(a.AsSlice(), port[0], port[1], 0, 0))
	default:
		add(a6, append(a.AsSlice(), port[0], port[1], 0, 0))
	}
	return nil
}

// addListenObjects queues on c, for the input chain in of table t, the
// listener sets with their elements and one rule per non-empty set:
//
//	meta nfproto <f> meta l4proto tcp meta mark != <InjectMark>
//	tcp flags & (syn|ack) == syn [<daddr> .] th dport @<set> counter drop
func addListenObjects(c *nftables.Conn, t *nftables.Table, in *nftables.Chain, k lockKeys) error {
	for _, s := range []struct {
		f      family
		name   string
		id     uint32
		keys   [][]byte
		byAddr bool
	}{
		{fam4, setListen4, 3, k.l4, true},
		{fam6, setListen6, 4, k.l6, true},
		{fam4, setPorts4, 5, k.w4, false},
		{fam6, setPorts6, 6, k.w6, false},
	} {
		if len(s.keys) == 0 {
			continue
		}
		if err := addSet(c, portSet(t, s.name, s.id, s.f.addr, s.byAddr), s.keys); err != nil {
			return err
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: s.f.matchSYN(s.name, s.id, s.byAddr)})
	}
	return nil
}

// tcpFlagsOffset is the offset of the flags byte in the TCP header
// (RFC 9293 section 3.1); tcpSYN and tcpACK are its bits.
const (
	tcpFlagsOffset = 13
	tcpSYN         = 0x02
	tcpACK         = 0x10
)

// matchSYN returns the expressions of the rule that drops a connection
// request (SYN without ACK) to a listener in set (keyed daddr . dport with
// byAddr, dport alone otherwise).
func (f family) matchSYN(set string, id uint32, byAddr bool) []expr.Any {
	reg := func(slot uint32) uint32 { return unix.NFT_REG32_00 + slot }
	e := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, InjectMark)},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: tcpFlagsOffset, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{tcpSYN | tcpACK}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{tcpSYN}},
	}
	if byAddr {
		e = append(e,
			&expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseNetworkHeader, Offset: f.daddr, Len: f.alen},
			&expr.Payload{DestRegister: reg(f.alen / 4), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		)
	} else {
		e = append(e, &expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	}
	return append(e,
		&expr.Lookup{SourceRegister: reg(0), SetName: set, SetID: id},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	)
}
