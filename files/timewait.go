package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// TIME_WAIT entries and the bind of a restored listener.
//
// A server that closed its connections first leaves TIME_WAIT entries on
// its port for 60 s after it is gone (tcp(7)). A fresh listener can bind
// over them only when it and the connection they came from both had
// SO_REUSEADDR: inet_bind_conflict (net/ipv4/inet_connection_sock.c)
// wants sk_reuse on both sockets, and an accepted connection inherits the
// listener's sk_reuse, so a server without SO_REUSEADDR gets EADDRINUSE,
// and listen(2) checks again (inet_csk_listen_start calls get_port), so a
// SO_REUSEADDR set for the bind alone and cleared before listen does not
// help either. TCP_REPAIR's SK_FORCE_REUSE would, but a listener cannot
// leave repair mode (tcp_can_repair_sock) and its accepted connections
// would inherit it. The original process had its listener and these
// entries side by side (the listener came first): the way to give the
// restored listener its exact options is to remove the entries, as
// `ss -K state time-wait sport = :PORT` does: SOCK_DESTROY of a TIME_WAIT
// socket deschedules it (tcp_abort, net/ipv4/tcp.c; sock_diag(7),
// CONFIG_INET_DIAG_DESTROY). They are the kernel's remnants of closed
// connections of that port, owned by no process.
//
//	inet_diag_sockid (48)  sport be16 | dport be16 | src [16] | dst [16] | if u32 | cookie [2]u32
const (
	tcpTimeWait    = 6 // TCP_TIME_WAIT, include/net/tcp_states.h
	diagSockidLen  = 48
	diagSockidOff  = 4 // inet_diag_sockid within inet_diag_msg
	maxTimeWaitEnt = 1 << 16
)

// twEntry is one TIME_WAIT socket as sock_diag names it.
type twEntry struct {
	family uint8
	local  netip.AddrPort
	id     [diagSockidLen]byte // the inet_diag_sockid, cookie included, as SOCK_DESTROY wants it back
}

// parseTimeWait decodes one datagram of a TIME_WAIT dump reply, appending
// the entries to out. It reports whether the dump is done.
func parseTimeWait(b []byte, out []twEntry) ([]twEntry, bool, error) {
	done, err := diagWalk(b, func(msg []byte) error {
		if len(msg) < inetDiagMsgLen {
			return fmt.Errorf("%w: inet_diag_msg of %d bytes", errDiagShort, len(msg))
		}
		if len(out) >= maxTimeWaitEnt {
			return fmt.Errorf("%w: more than %d TIME_WAIT sockets", errDiagShort, maxTimeWaitEnt)
		}
		e := twEntry{family: msg[0]}
		copy(e.id[:], msg[diagSockidOff:diagSockidOff+diagSockidLen])
		port := binary.BigEndian.Uint16(e.id[0:])
		var addr netip.Addr
		switch e.family {
		case unix.AF_INET:
			addr = netip.AddrFrom4([4]byte(e.id[4:8]))
		case unix.AF_INET6:
			addr = netip.AddrFrom16([16]byte(e.id[4:20]))
		default:
			return fmt.Errorf("%w: socket of family %d in an inet dump", errDiagShort, e.family)
		}
		e.local = netip.AddrPortFrom(addr, port)
		out = append(out, e)
		return nil
	})
	return out, done, err
}

// clearTimeWait removes the TCP TIME_WAIT entries of family whose local
// port is port (and, unless addr is unspecified, whose local address is
// addr) in the network namespace of pid. It returns how many it removed.
func clearTimeWait(pid int, family uint8, addr netip.Addr, port uint16) (int, error) {
	s, err := diagOpen(pid)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	var all []twEntry
	err = diagDump(s, diagRequest(family, unix.IPPROTO_TCP, 1<<tcpTimeWait, 1), func(b []byte) (done bool, err error) {
		all, done, err = parseTimeWait(b, all)
		return done, err
	})
	if err != nil {
		return 0, err
	}
	nl := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	buf := make([]byte, 64<<10)
	removed := 0
	for _, e := range all {
		if e.local.Port() != port || (!addr.IsUnspecified() && e.local.Addr().Unmap() != addr) {
			continue
		}
		req := diagRequest(e.family, unix.IPPROTO_TCP, 1<<tcpTimeWait, uint32(2+removed))
		binary.LittleEndian.PutUint16(req[4:], unix.SOCK_DESTROY)
		binary.LittleEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
		copy(req[nlmsgHdrLen+8:], e.id[:])
		if err := unix.Sendto(s, req, 0, nl); err != nil {
			return removed, os.NewSyscallError("sendto sock_diag", err)
		}
		n, _, err := unix.Recvfrom(s, buf, 0)
		if err != nil {
			return removed, os.NewSyscallError("recvfrom sock_diag", err)
		}
		_, _, err = parseTimeWait(buf[:n], nil)
		switch {
		case errors.Is(err, unix.ENOENT): // expired meanwhile
		case err != nil:
			return removed, fmt.Errorf("destroy TIME_WAIT socket %s: %w", e.local, err)
		default:
			removed++
		}
	}
	return removed, nil
}
