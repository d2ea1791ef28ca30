package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// sockopt is an int socket option the dump records beyond the named
// fields of pb.SocketOptions. Restore sets it only where the fresh socket
// has another value (defaults stay defaults) and then reads it back: a
// value that does not stick fails the restore. See socket(7), ip(7),
// ipv6(7), udp(7), tcp(7).
type sockopt struct {
	level, name int
	what        string
	family      int // 0: any; else AF_INET or AF_INET6
	proto       int // 0: any; else IPPROTO_UDP or IPPROTO_TCP
}

// sockopts is the table, in the order restore sets them (SO_TIMESTAMP
// before SO_TIMESTAMPNS: setting the first clears the second). Left out:
// options the kernel changes by itself (SO_INCOMING_CPU, TCP_QUICKACK),
// IP_MULTICAST_IF (getsockopt shows the address but not an interface
// index set with ip_mreqn), and multicast group memberships (not readable
// at all).
var sockopts = []sockopt{
	{unix.SOL_SOCKET, unix.SO_RCVLOWAT, "SO_RCVLOWAT", 0, 0},
	{unix.SOL_SOCKET, unix.SO_OOBINLINE, "SO_OOBINLINE", 0, 0},
	{unix.SOL_SOCKET, unix.SO_DONTROUTE, "SO_DONTROUTE", 0, 0},
	{unix.SOL_SOCKET, unix.SO_NO_CHECK, "SO_NO_CHECK", 0, unix.IPPROTO_UDP},
	{unix.SOL_SOCKET, unix.SO_TIMESTAMP, "SO_TIMESTAMP", 0, 0},
	{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, "SO_TIMESTAMPNS", 0, 0},
	{unix.SOL_SOCKET, unix.SO_TIMESTAMPING, "SO_TIMESTAMPING", 0, 0},
	{unix.SOL_SOCKET, unix.SO_RXQ_OVFL, "SO_RXQ_OVFL", 0, 0},
	{unix.SOL_SOCKET, unix.SO_PEEK_OFF, "SO_PEEK_OFF", 0, unix.IPPROTO_UDP},
	{unix.SOL_SOCKET, unix.SO_BUSY_POLL, "SO_BUSY_POLL", 0, 0},
	{unix.SOL_SOCKET, unix.SO_ZEROCOPY, "SO_ZEROCOPY", 0, 0},
	{unix.SOL_SOCKET, unix.SO_SELECT_ERR_QUEUE, "SO_SELECT_ERR_QUEUE", 0, 0},

	{unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, "IP_MTU_DISCOVER", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_MULTICAST_TTL, "IP_MULTICAST_TTL", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_MULTICAST_LOOP, "IP_MULTICAST_LOOP", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_MULTICAST_ALL, "IP_MULTICAST_ALL", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_TRANSPARENT, "IP_TRANSPARENT", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_RECVTOS, "IP_RECVTOS", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_RECVTTL, "IP_RECVTTL", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_RECVOPTS, "IP_RECVOPTS", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_RETOPTS, "IP_RETOPTS", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_RECVORIGDSTADDR, "IP_RECVORIGDSTADDR", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, "IP_BIND_ADDRESS_NO_PORT", unix.AF_INET, 0},
	{unix.IPPROTO_IP, unix.IP_MINTTL, "IP_MINTTL", unix.AF_INET, 0},

	{unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, "IPV6_MULTICAST_HOPS", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_LOOP, "IPV6_MULTICAST_LOOP", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, "IPV6_MULTICAST_IF", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_ALL, "IPV6_MULTICAST_ALL", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, "IPV6_RECVTCLASS", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, "IPV6_RECVHOPLIMIT", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_TRANSPARENT, "IPV6_TRANSPARENT", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_DONTFRAG, "IPV6_DONTFRAG", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVORIGDSTADDR, "IPV6_RECVORIGDSTADDR", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_AUTOFLOWLABEL, "IPV6_AUTOFLOWLABEL", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_MINHOPCOUNT, "IPV6_MINHOPCOUNT", unix.AF_INET6, 0},
	{unix.IPPROTO_IPV6, unix.IPV6_RECVPATHMTU, "IPV6_RECVPATHMTU", unix.AF_INET6, 0},

	{unix.IPPROTO_UDP, unix.UDP_CORK, "UDP_CORK", 0, unix.IPPROTO_UDP},
	{unix.IPPROTO_UDP, unix.UDP_SEGMENT, "UDP_SEGMENT", 0, unix.IPPROTO_UDP},
	{unix.IPPROTO_UDP, unix.UDP_GRO, "UDP_GRO", 0, unix.IPPROTO_UDP},
	{unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_TX, "UDP_NO_CHECK6_TX", unix.AF_INET6, unix.IPPROTO_UDP},
	{unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_RX, "UDP_NO_CHECK6_RX", unix.AF_INET6, unix.IPPROTO_UDP},

	{unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_CORK, "TCP_CORK", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_MAXSEG, "TCP_MAXSEG", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_SYNCNT, "TCP_SYNCNT", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_LINGER2, "TCP_LINGER2", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_FASTOPEN, "TCP_FASTOPEN", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", 0, unix.IPPROTO_TCP},
	{unix.IPPROTO_TCP, unix.TCP_THIN_LINEAR_TIMEOUTS, "TCP_THIN_LINEAR_TIMEOUTS", 0, unix.IPPROTO_TCP},
}

// applies reports whether o is read on a socket of family and protocol.
// The TCP options apply to MPTCP sockets too (those MPTCP implements,
// tcp(7) level SOL_TCP).
func (o sockopt) applies(family, protocol int32) bool {
	if protocol == unix.IPPROTO_MPTCP && o.proto == unix.IPPROTO_TCP {
		protocol = unix.IPPROTO_TCP
	}
	return (o.family == 0 || int32(o.family) == family) && (o.proto == 0 || int32(o.proto) == protocol)
}

// sockoptName names level/name from the table, for messages.
func sockoptName(level, name int32) string {
	for _, o := range sockopts {
		if int32(o.level) == level && int32(o.name) == name {
			return o.what
		}
	}
	return fmt.Sprintf("option %d/%d", level, name)
}

// readMoreSockopts records the table's options and SO_RCVTIMEO,
// SO_SNDTIMEO, SO_LINGER and TCP_CONGESTION. An option this kernel does not have
// (ENOPROTOOPT) cannot have been set: it is left out. Any other failure
// fails the dump.
func readMoreSockopts(fd int, s *pb.InetSocket, o *pb.SocketOptions) error {
	var errs []error
	for _, so := range sockopts {
		if !so.applies(s.Family, s.Protocol) {
			continue
		}
		v, err := getsockoptInt(fd, so.level, so.name)
		if errors.Is(err, unix.ENOPROTOOPT) || (s.Protocol == unix.IPPROTO_MPTCP && mptcpUnsupported(err)) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", so.what, os.NewSyscallError("getsockopt", err)))
			continue
		}
		o.More = append(o.More, &pb.IntSockopt{Level: int32(so.level), Name: int32(so.name), Value: int32(v)})
	}
	for _, t := range []struct {
		opt  int
		what string
		dst  *int64
	}{{unix.SO_RCVTIMEO, "SO_RCVTIMEO", &o.RcvtimeoUs}, {unix.SO_SNDTIMEO, "SO_SNDTIMEO", &o.SndtimeoUs}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", t.what, os.NewSyscallError("getsockopt", err)))
			continue
		}
		*t.dst = tv.Sec*1e6 + tv.Usec
	}
	filter, err := kabi.GetsockoptFilter(fd)
	if err != nil {
		errs = append(errs, err)
	}
	for _, in := range filter {
		o.Filter = binary.LittleEndian.AppendUint16(o.Filter, in.Code)
		o.Filter = append(o.Filter, in.Jt, in.Jf)
		o.Filter = binary.LittleEndian.AppendUint32(o.Filter, in.K)
	}
	lock, err := getsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER)
	if err != nil {
		errs = append(errs, fmt.Errorf("read SO_LOCK_FILTER: %w", os.NewSyscallError("getsockopt", err)))
	}
	o.LockFilter = lock != 0
	if s.Type == unix.SOCK_STREAM {
		cc, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		switch {
		case s.Protocol == unix.IPPROTO_MPTCP && mptcpUnsupported(err):
		case err != nil:
			errs = append(errs, fmt.Errorf("read TCP_CONGESTION: %w", os.NewSyscallError("getsockopt", err)))
		default:
			o.TcpCongestion = cc
		}
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		errs = append(errs, fmt.Errorf("read SO_LINGER: %w", os.NewSyscallError("getsockopt", err)))
	} else {
		o.Linger, o.LingerSec = l.Onoff != 0, l.Linger
	}
	return errors.Join(errs...)
}

// attachFilter attaches the classic BPF program b (struct sock_filter, 8
// bytes each) with SO_ATTACH_FILTER. See socket(7).
func attachFilter(fd int, b []byte) error {
	if len(b)%8 != 0 || len(b)/8 > 4096 {
		return fmt.Errorf("filter of %d bytes in the image: not whole instructions or longer than BPF_MAXINSNS", len(b))
	}
	prog := make([]unix.SockFilter, len(b)/8)
	for i := range prog {
		in := b[i*8:]
		prog[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(in), Jt: in[2], Jf: in[3], K: binary.LittleEndian.Uint32(in[4:])}
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
		return os.NewSyscallError("setsockopt SO_ATTACH_FILTER", err)
	}
	return nil
}

// setMoreSockopts gives a fresh socket the recorded values of the table's
// options, SO_RCVTIMEO, SO_SNDTIMEO and SO_LINGER, and checks they stuck.
func setMoreSockopts(fd int, num int32, o *pb.SocketOptions) error {
	var errs []error
	for _, m := range o.More {
		name := sockoptName(m.Level, m.Name)
		have, err := unix.GetsockoptInt(fd, int(m.Level), int(m.Name))
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s of socket fd %d: %w", name, num, os.NewSyscallError("getsockopt", err)))
			continue
		}
		if have == int(m.Value) || (m.Level == unix.SOL_SOCKET && m.Name == unix.SO_RCVLOWAT && m.Value == 0 && have == 1) {
			// A TCP connection accepted from an MPTCP listener that fell
			// back to plain TCP (every Go 1.24+ server's, from a client
			// without MPTCP) reads SO_RCVLOWAT 0, which setsockopt cannot
			// give (it stores val ?: 1); the kernel acts on 0 as on 1
			// (sock_rcvlowat returns v ?: 1, net/core/sock.c), so the
			// fresh socket's 1 is the same.
			continue
		}
		if err := unix.SetsockoptInt(fd, int(m.Level), int(m.Name), int(m.Value)); err != nil {
			errs = append(errs, fmt.Errorf("set %s=%d on socket fd %d: %w", name, m.Value, num, os.NewSyscallError("setsockopt", err)))
			continue
		}
		if have, err = unix.GetsockoptInt(fd, int(m.Level), int(m.Name)); err != nil || have != int(m.Value) {
			errs = append(errs, fmt.Errorf("socket fd %d: %s is %d after setting %d (%v)", num, name, have, m.Value, err))
		}
	}
	for _, t := range []struct {
		opt  int
		what string
		us   int64
	}{{unix.SO_RCVTIMEO, "SO_RCVTIMEO", o.RcvtimeoUs}, {unix.SO_SNDTIMEO, "SO_SNDTIMEO", o.SndtimeoUs}} {
		if t.us == 0 {
			continue
		}
		tv := unix.NsecToTimeval(t.us * 1000)
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt, &tv); err != nil {
			errs = append(errs, fmt.Errorf("set %s=%dµs on socket fd %d: %w", t.what, t.us, num, os.NewSyscallError("setsockopt", err)))
		}
	}
	if o.TcpCongestion != "" {
		// Set only where the fresh socket has another algorithm (this
		// network namespace's default differs): one this kernel lacks
		// fails the restore, naming it.
		have, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil {
			errs = append(errs, fmt.Errorf("read TCP_CONGESTION of socket fd %d: %w", num, os.NewSyscallError("getsockopt", err)))
		} else if have != o.TcpCongestion {
			if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, o.TcpCongestion); err != nil {
				errs = append(errs, fmt.Errorf("set TCP_CONGESTION=%s on socket fd %d: %w", o.TcpCongestion, num, os.NewSyscallError("setsockopt", err)))
			}
		}
	}
	if o.Linger {
		l := unix.Linger{Onoff: 1, Linger: o.LingerSec}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l); err != nil {
			errs = append(errs, fmt.Errorf("set SO_LINGER=%ds on socket fd %d: %w", o.LingerSec, num, os.NewSyscallError("setsockopt", err)))
		}
	}
	if len(o.Filter) > 0 {
		if err := attachFilter(fd, o.Filter); err != nil {
			errs = append(errs, fmt.Errorf("attach the BPF filter of socket fd %d: %w", num, err))
		}
	}
	if o.LockFilter {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_LOCK_FILTER, 1); err != nil {
			errs = append(errs, fmt.Errorf("set SO_LOCK_FILTER on socket fd %d: %w", num, os.NewSyscallError("setsockopt", err)))
		}
	}
	return errors.Join(errs...)
}
