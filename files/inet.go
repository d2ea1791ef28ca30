package files

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/netlock"
	"github.com/lazycr/lazycr/proc"
)

// inetSocket is an AF_INET/AF_INET6 socket: UDP (bound, connected) or a
// listening TCP or MPTCP socket, with its options (socket(7), ip(7), ipv6(7)). Other
// families and established TCP connections are refused.
type inetSocket struct{}

func (inetSocket) name() string { return "socket" }

func (inetSocket) claims(l *liveFd) bool { return l.link == proc.KindSocket }

func (inetSocket) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	s, err := describeSocket(l.local)
	if err != nil {
		return err
	}
	s.Inode = l.ino
	// A TCP listener: new connections are held off from here on
	// (lockListener), before its accept queue is checked below. A lazy
	// migration too: between the freeze and the moment its target
	// listens, the frozen kernel would complete handshakes into a queue
	// that dies with the original. On this host the target takes the
	// very listener over, queue included (takeListener), and removes
	// the lock before it serves (TCPRestore.Live).
	if s.Listening {
		if err := d.opts.TCP.lockListener(d.pid, s); err != nil {
			return fmt.Errorf("hold new connections to %s %s: %w", SockProto(s), HostPort(s.LocalAddr, s.LocalPort), err)
		}
	}
	// UDP: the shutdown state must be read exactly. Datagrams waiting to
	// be read are not carried over and the dump says so: a lost datagram
	// is what the network does anyway (udp(7): no delivery guarantee), so
	// the peer is not misled. Nor are those that reach the frozen socket
	// after this read: no network lock holds datagrams (a target's lock
	// drops only the port unreachable errors answering those that come
	// before its socket: netlock.UDPPort), so they queue in the frozen
	// socket and die with it at the kill
	// (a lazy migration between hosts: until its address moved; 20-35
	// datagrams sent every 200 µs in a test here), as silently for the
	// sender as a loss on the wire. sock_diag's idiag_rqueue of a UDP
	// socket is its receive buffer's charge (sk_rmem_alloc: each
	// datagram's skb truesize, 832 bytes for 8 bytes of data here), not
	// the bytes of data. Connections waiting in a listener's accept
	// queue are another matter (listenQueue).
	ds, err := d.diagOf(uint8(s.Family), uint8(s.Protocol), l.ino)
	switch {
	case err != nil && s.Type == unix.SOCK_DGRAM && s.LocalPort == 0 && s.PeerAddr == "":
		// udp_diag walks the UDP hash tables, which hold bound sockets
		// only: a socket made but not used yet (a metrics client before
		// its first datagram) is in none. Its shutdown state (shutdown(2)
		// sets it even unconnected, answering ENOTCONN) is read with poll.
		if s.Shutdown, err = unboundShutdown(l.local); err != nil {
			return fmt.Errorf("read the shutdown state of unbound %s socket fd %d: %w", SockProto(s), l.num, err)
		}
	case err != nil && s.Type == unix.SOCK_DGRAM:
		return err
	case err != nil:
		d.opts.Log.Debug().Err(err).Int("fd", l.num).Msg("no sock_diag for the listening socket")
	default:
		if s.Type == unix.SOCK_DGRAM {
			s.Shutdown = uint32(ds.shutdown)
		}
		if s.Listening {
			// A listener's idiag_wqueue is its backlog, sk_max_ack_backlog
			// as listen(2) left it (tcp_diag_get_info in
			// net/ipv4/tcp_diag.c), which getsockopt cannot read.
			s.Backlog = int32(ds.wqueue)
		}
		switch {
		case ds.rqueue > 0 && s.Listening:
			if err := d.listenQueue(l, s, ds.rqueue); err != nil {
				return err
			}
		case ds.rqueue > 0:
			d.opts.Log.Warn().Int("fd", l.num).Uint64("socket", l.ino).Uint32("queued", ds.rqueue).
				Msgf("fd %d: the datagrams waiting to be read (%d bytes of receive buffer), and any that reach the socket until the process is killed, are not carried over (lost, as on the network)", l.num, ds.rqueue)
		}
	}
	if s.Type == unix.SOCK_DGRAM {
		if !d.mcastRead {
			if d.mcast, err = mcastGroups(d.pid); err != nil {
				return fmt.Errorf("read the multicast groups of pid %d's network namespace: %w", d.pid, err)
			}
			d.mcastRead = true
		}
		if s.Memberships, err = dumpMemberships(l.local, int(s.Family), d.mcast); err != nil {
			return err
		}
	}
	out.Kind = &pb.Fd_InetSocket{InetSocket: s}
	return nil
}

// unboundShutdown reads the sk_shutdown of an unbound, unconnected
// datagram socket from poll(2): datagram_poll (net/core/datagram.c) sets
// EPOLLRDHUP for RCV_SHUTDOWN and EPOLLHUP for both directions. A
// SEND_SHUTDOWN alone shows nowhere but in a send failing EPIPE, and any
// send would bind the socket (inet_send_prepare autobinds first): it is
// recorded as none, a documented limit (no program shuts down the sending
// side of a socket that never sent; shutdown(2) answers it ENOTCONN).
func unboundShutdown(fd int) (uint32, error) {
	const rcv, send = 1, 2 // RCV_SHUTDOWN, SEND_SHUTDOWN (include/net/sock.h)
	ev, err := pollNow(fd, unix.POLLIN|unix.POLLRDHUP)
	if err != nil {
		return 0, err
	}
	switch {
	case ev&unix.POLLHUP != 0:
		return rcv | send, nil
	case ev&unix.POLLRDHUP != 0:
		return rcv, nil
	}
	return 0, nil
}

// listenQueue decides on a TCP or MPTCP listener with n connections
// waiting in its accept queue (sock_diag's idiag_rqueue of a listener is
// sk_ack_backlog, sock_diag(7)). Those connections are established: the
// kernel completed the clients' handshakes, and the clients may already
// have sent data. A rebuilt listener has an empty queue, so the clients
// would get a reset on their next segment: not exact. So the queue is a
// passing state ([ErrTransient]): a server accepts within microseconds
// once it runs, and the dump thaws the process and tries again
// (dump/retry.go); after the last try the dump refuses, naming the
// listener. The user may accept the loss (DumpOptions.DropQueuedConnections,
// `dump --drop-queued-connections`): then the dump warns, as before.
// A lazy migration refuses it the same way, but on the last try
// (DumpOptions.LazyListeners) keeps the queue: on the host it was dumped
// on the target takes the very listening socket over (takeListener),
// queue included; between hosts the queued connections are lost, and the
// dump says so.
//
// Connections still in the handshake (request sockets in SYN_RECV, which
// hang off the listener and are not in the accept queue yet) are neither
// counted nor dumped: they go with the listener, silently (the request
// timer drops them once the listener is no longer in LISTEN). A client
// whose SYN-ACK was lost holds SYN_SENT and retransmits its SYN (tcp(7)
// tcp_syn_retries): the restored listener answers it and the handshake
// completes. A client that got the SYN-ACK has sent its ACK, which reaches
// the listener within a round trip, frozen or not (the kernel completes
// handshakes in softirq), and then waits in the accept queue, where this
// check sees it.
//
// The kernel goes on completing handshakes while the process is frozen: a
// connection that entered the queue after this check would be reset when
// the dump kills the process (inet_csk_listen_stop), as for a server
// restart. So a dump that kills takes the listener into the network lock
// right before this check (TCPDump.lockListener): new SYNs are dropped from
// here to the restore, and the clients retransmit them to the restored
// listener. A lazy migration's source locks its listeners the same way:
// on another host the target's listener answers the retransmitted SYNs
// once it has the address; on this host the target takes the listener
// over and removes the lock (TCPRestore.Live). Not exact yet: a client
// whose handshake began before the lock and whose ACK is still in flight
// at the check meets a listener without its request (RFC 793 section 3.4,
// half-open connections) and is reset.
//
// A busy listener (clients opening new connections all the time) has a
// connection queued at every freeze if its lock went with each refused
// try: during the pause new handshakes complete as fast as the process
// accepts. So a refusal hands the listener's lock over to the retries
// (DumpOptions.ListenerHold): from the first refused try to the last,
// new SYNs to it are dropped and retransmitted by the clients (1 s
// later, as after the final freeze anyway), while the running process
// accepts what its queue holds, and the next try finds it empty.
func (d *dumper) listenQueue(l *liveFd, s *pb.InetSocket, n uint32) error {
	what := fmt.Sprintf("fd %d (%s %s)", l.num, SockProto(s), HostPort(s.LocalAddr, s.LocalPort))
	conns := fmt.Sprintf("%d connections wait", n)
	if n == 1 {
		conns = "1 connection waits"
	}
	switch {
	case d.opts.LazyListeners:
		d.opts.Log.Warn().Int("fd", l.num).Uint64("socket", l.ino).Uint32("queued", n).
			Msgf("%s: %s to be accepted over every try: a restore on this host takes the listener over with its queue; on another host the queue is lost (the clients get a reset)", what, conns)
		return nil
	case d.opts.DropQueuedConnections:
		d.opts.Log.Warn().Int("fd", l.num).Uint64("socket", l.ino).Uint32("queued", n).
			Msgf("%s: %s to be accepted, dropped (--drop-queued-connections: the clients get a reset)", what, conns)
		return nil
	}
	if d.opts.ListenerHold != nil && d.opts.TCP.keepListenerLock(s, d.opts.ListenerHold) {
		d.opts.Log.Info().Int("fd", l.num).Uint64("socket", l.ino).Uint32("queued", n).
			Msgf("%s: %s to be accepted; new connections stay held off until the next try, while the process accepts", what, conns)
	}
	return fmt.Errorf("%w: %w: listening socket %s: %s to be accepted (the program does not accept; pass --drop-queued-connections to drop them)",
		ErrUnsupported, ErrTransient, what, conns)
}

// ListenerHold keeps the locks of listeners whose accept queue refused a
// try of a dump (listenQueue) over the pauses between the tries
// (dump/retry.go Freeze), so that the process drains its queue while no
// new connection enters it. Its methods are safe for concurrent use; a
// nil ListenerHold keeps nothing.
type ListenerHold struct {
	log   zerolog.Logger
	mu    sync.Mutex
	locks []heldListener
}

// heldListener is one lock a ListenerHold keeps: on listener l in the
// network namespace ns (netns.NsHandle.UniqueId).
type heldListener struct {
	ns   string
	l    netlock.Listener
	lock *netlock.Lock
}

// NewListenerHold makes an empty ListenerHold.
func NewListenerHold(log zerolog.Logger) *ListenerHold { return &ListenerHold{log: log} }

// Len is the number of listener locks h keeps.
func (h *ListenerHold) Len() int {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.locks)
}

// Release removes every lock h keeps: new connections reach the listeners
// again at once (their tables are deleted); the locks' sockets, whose close
// waits for an RCU grace period (netlock.Lock.Open), close in the
// background, as TCPDump.openListeners does. The dump calls it when its
// tries end, whatever their outcome; h is empty again afterwards.
func (h *ListenerHold) Release() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	locks := h.locks
	h.locks = nil
	h.mu.Unlock()
	var errs []error
	var closers []func() error
	for _, h := range locks {
		c, err := h.lock.Open()
		errs = append(errs, err)
		closers = append(closers, c)
	}
	if len(closers) > 0 {
		log := h.log
		go func() {
			for _, c := range closers {
				if err := c(); err != nil {
					log.Warn().Err(err).Msg("close a listener lock's socket")
				}
			}
		}()
	}
	return errors.Join(errs...)
}

// keepListenerLock hands the lock lockListener took on the listener s over
// to h (the dump's failure then leaves it in place, see ListenerHold), and
// reports whether the listener is locked in h now. A listener h holds
// already (refused at an earlier try too) keeps that lock: the new one
// goes with the failed try.
func (t *TCPDump) keepListenerLock(s *pb.InetSocket, h *ListenerHold) bool {
	if t == nil {
		return false
	}
	l, err := lockListenerOf(s)
	if err != nil {
		return false
	}
	for i := len(t.listeners) - 1; i >= 0; i-- {
		if t.listeners[i] != l {
			continue
		}
		ns := t.ns.UniqueId()
		h.mu.Lock()
		defer h.mu.Unlock()
		if slices.ContainsFunc(h.locks, func(k heldListener) bool { return k.ns == ns && k.l == l }) {
			return true
		}
		h.locks = append(h.locks, heldListener{ns: ns, l: l, lock: t.llocks[i]})
		t.listeners = slices.Delete(t.listeners, i, i+1)
		t.llocks = slices.Delete(t.llocks, i, i+1)
		return true
	}
	return false
}

func (inetSocket) owns(f *pb.Fd) bool { return f.GetInetSocket() != nil }

func (inetSocket) show(f *pb.Fd) string {
	s := f.GetInetSocket()
	d := SockProto(s) + " " + HostPort(s.LocalAddr, s.LocalPort)
	if s.PeerAddr != "" {
		d += " -> " + HostPort(s.PeerAddr, s.PeerPort)
	}
	switch s.Shutdown {
	case 1:
		d += ", shut down for reading"
	case 2:
		d += ", shut down for writing"
	case 3:
		d += ", shut down"
	}
	if o := s.Options; o != nil && (o.UdpliteSendCscov != 0 || o.UdpliteRecvCscov != 0) {
		d += fmt.Sprintf(", checksum coverage send %d recv %d", o.UdpliteSendCscov, o.UdpliteRecvCscov)
	}
	for _, m := range s.Memberships {
		d += fmt.Sprintf(", member of %s on %s", m.Group, m.Interface)
		if m.Include || len(m.Sources) > 0 {
			mode := "excluding"
			if m.Include {
				mode = "including"
			}
			d += fmt.Sprintf(" %s %s", mode, strings.Join(m.Sources, " "))
		}
	}
	return d
}

// diagOf reads what sock_diag knows of socket:[ino] (sockdiag.go), one
// dump request per family and protocol.
func (d *dumper) diagOf(family, protocol uint8, ino uint64) (diagSock, error) {
	key := [2]uint8{family, protocol}
	m, ok := d.diag[key]
	if !ok {
		var err error
		if m, err = diagSockets(d.pid, family, protocol); err != nil {
			return diagSock{}, fmt.Errorf("read the state of socket:[%d]: %w", ino, err)
		}
		if d.diag == nil {
			d.diag = map[[2]uint8]map[uint64]diagSock{}
		}
		d.diag[key] = m
	}
	v, ok := m[ino]
	if !ok {
		return diagSock{}, fmt.Errorf("read the state of socket:[%d]: sock_diag does not list it", ino)
	}
	return v, nil
}

// SockProto names the protocol of s as `lazycr show` prints it: udp, tcp,
// tcp-listen, mptcp-listen, with a 6 for IPv6.
func SockProto(s *pb.InetSocket) string {
	p := "udp"
	if s.Protocol == unix.IPPROTO_UDPLITE {
		p = "udplite"
	}
	if s.Type == unix.SOCK_STREAM {
		p = "tcp"
		if s.Protocol == unix.IPPROTO_MPTCP {
			p = "mptcp"
		}
		if s.Listening {
			p += "-listen"
		}
	}
	if s.Family == unix.AF_INET6 {
		p += "6"
	}
	return p
}

// HostPort joins an address and a port, bracketing IPv6 addresses.
func HostPort(addr string, port uint32) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

// UDP-Lite socket options, include/uapi/linux/udp.h and udplite(7); the
// option level is the protocol number.
const (
	solUDPLite       = unix.IPPROTO_UDPLITE
	udpliteSendCscov = 10
	udpliteRecvCscov = 11
)

// mptcpUnsupported reports whether err is an MPTCP socket's refusal of an
// option it does not implement: net/mptcp/sockopt.c answers EOPNOTSUPP
// (or ENOPROTOOPT) to getsockopt and setsockopt alike for every option
// outside its list (mptcp_supported_sockopt), so such an option can only
// have its default.
func mptcpUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT)
}

// sockoptReader reads the options of one socket, collecting one error per
// option it cannot read.
type sockoptReader struct {
	fd     int
	absent func(error) bool // if not nil: true for an error that means the socket has no such option (read as 0)
	errs   []error
}

// int reads the int option opt of level, named name in errors.
func (r *sockoptReader) int(level, opt int, name string) int32 {
	v, err := getsockoptInt(r.fd, level, opt)
	if r.absent != nil && r.absent(err) {
		return 0
	}
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("read %s: %w", name, os.NewSyscallError("getsockopt", err)))
	}
	return int32(v)
}

// string reads the string option opt of level, named name in errors.
func (r *sockoptReader) string(level, opt int, name string) string {
	v, err := unix.GetsockoptString(r.fd, level, opt)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("read %s: %w", name, os.NewSyscallError("getsockopt", err)))
	}
	return v
}

// err is every error so far, joined (nil if none).
func (r *sockoptReader) err() error { return errors.Join(r.errs...) }

// getsockoptInt reads an int socket option; a variable so that tests can
// make one fail.
var getsockoptInt = unix.GetsockoptInt

// describeSocket records an inet socket; anything else is refused. Every
// option read must succeed: a failed getsockopt fails the dump, naming the
// option, and is never recorded as 0.
func describeSocket(fd int) (*pb.InetSocket, error) { return describeInet(fd, false) }

// describeInet is describeSocket that, with connected, also takes a TCP
// socket that is not listening and records its addresses and options
// (tcp.go, which checked its state, reads the rest).
func describeInet(fd int, connected bool) (*pb.InetSocket, error) {
	mptcp := false
	r := &sockoptReader{fd: fd, absent: func(err error) bool {
		return mptcp && mptcpUnsupported(err) // MPTCP has no such option: it has its default
	}}
	domain := r.int(unix.SOL_SOCKET, unix.SO_DOMAIN, "SO_DOMAIN")
	typ := r.int(unix.SOL_SOCKET, unix.SO_TYPE, "SO_TYPE")
	protocol := r.int(unix.SOL_SOCKET, unix.SO_PROTOCOL, "SO_PROTOCOL")
	if err := r.err(); err != nil {
		return nil, err
	}
	switch domain {
	case unix.AF_INET, unix.AF_INET6:
	case unix.AF_UNIX:
		return nil, fmt.Errorf("%w: fd kind unix socket", ErrUnsupported)
	case unix.AF_NETLINK:
		return nil, fmt.Errorf("%w: fd kind netlink socket", ErrUnsupported)
	case unix.AF_PACKET:
		return nil, fmt.Errorf("%w: fd kind packet socket", ErrUnsupported)
	default:
		return nil, fmt.Errorf("%w: fd kind socket of family %d", ErrUnsupported, domain)
	}
	s := &pb.InetSocket{Family: domain, Type: typ, Protocol: protocol}
	mptcp = protocol == unix.IPPROTO_MPTCP
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	s.LocalAddr, s.LocalPort = sockaddr(sa)
	peer, err := unix.Getpeername(fd)
	switch {
	case err == nil:
		s.PeerAddr, s.PeerPort = sockaddr(peer)
	case !errors.Is(err, unix.ENOTCONN):
		return nil, os.NewSyscallError("getpeername", err)
	}
	switch {
	case typ == unix.SOCK_DGRAM && (protocol == unix.IPPROTO_UDP || protocol == unix.IPPROTO_UDPLITE):
	case typ == unix.SOCK_STREAM && protocol == unix.IPPROTO_MPTCP:
		// Multipath TCP (Go 1.24+ listens with it where the kernel has
		// it). A listener is made again like a TCP one; an MPTCP
		// connection (its subflows) cannot be repaired.
		if acc := r.int(unix.SOL_SOCKET, unix.SO_ACCEPTCONN, "SO_ACCEPTCONN"); acc == 0 {
			if err := r.err(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: fd kind MPTCP socket that is not listening (Go 1.24+ uses MPTCP; GODEBUG=multipathtcp=0 avoids it)", ErrUnsupported)
		}
		s.Listening, s.Backlog = true, unix.SOMAXCONN
	case typ == unix.SOCK_STREAM && protocol == unix.IPPROTO_TCP:
		acc := r.int(unix.SOL_SOCKET, unix.SO_ACCEPTCONN, "SO_ACCEPTCONN")
		if err := r.err(); err != nil {
			return nil, err
		}
		if acc == 0 && !connected {
			if s.PeerAddr != "" {
				return nil, fmt.Errorf("%w: fd kind established TCP connection %s -> %s", ErrUnsupported,
					netip.AddrPortFrom(netip.MustParseAddr(s.LocalAddr), uint16(s.LocalPort)),
					netip.AddrPortFrom(netip.MustParseAddr(s.PeerAddr), uint16(s.PeerPort)))
			}
			return nil, fmt.Errorf("%w: fd kind unconnected, non-listening TCP socket", ErrUnsupported)
		}
		if acc != 0 {
			s.Listening = true
			// The backlog is not readable back with getsockopt: the dump
			// takes it from sock_diag (inetSocket.dump); SOMAXCONN, what
			// listen(2) clamps to, stands if sock_diag does not list it.
			s.Backlog = unix.SOMAXCONN
		}
	default:
		return nil, fmt.Errorf("%w: fd kind socket type %d protocol %d", ErrUnsupported, typ, protocol)
	}
	o := &pb.SocketOptions{}
	o.Reuseaddr = r.int(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR") != 0
	o.Reuseport = r.int(unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT") != 0
	o.Broadcast = r.int(unix.SOL_SOCKET, unix.SO_BROADCAST, "SO_BROADCAST") != 0
	o.Keepalive = r.int(unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE") != 0
	o.Sndbuf = r.int(unix.SOL_SOCKET, unix.SO_SNDBUF, "SO_SNDBUF")
	o.Rcvbuf = r.int(unix.SOL_SOCKET, unix.SO_RCVBUF, "SO_RCVBUF")
	o.Priority = r.int(unix.SOL_SOCKET, unix.SO_PRIORITY, "SO_PRIORITY")
	o.Mark = r.int(unix.SOL_SOCKET, unix.SO_MARK, "SO_MARK")
	o.BindToDevice = strings.TrimRight(r.string(unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "SO_BINDTODEVICE"), "\x00")
	if domain == unix.AF_INET {
		o.Tos = r.int(unix.IPPROTO_IP, unix.IP_TOS, "IP_TOS")
		o.Ttl = r.int(unix.IPPROTO_IP, unix.IP_TTL, "IP_TTL")
		o.RecvErr = r.int(unix.IPPROTO_IP, unix.IP_RECVERR, "IP_RECVERR") != 0
		o.Pktinfo = r.int(unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO") != 0
	} else {
		o.Tos = r.int(unix.IPPROTO_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS")
		o.Ttl = r.int(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS")
		o.Ipv6Only = r.int(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY") != 0
		o.RecvErr = r.int(unix.IPPROTO_IPV6, unix.IPV6_RECVERR, "IPV6_RECVERR") != 0
		o.Pktinfo = r.int(unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO") != 0
	}
	if err := readMoreSockopts(fd, s, o); err != nil {
		r.errs = append(r.errs, err)
	}
	if protocol == unix.IPPROTO_UDPLITE {
		o.UdpliteSendCscov = r.int(solUDPLite, udpliteSendCscov, "UDPLITE_SEND_CSCOV")
		o.UdpliteRecvCscov = r.int(solUDPLite, udpliteRecvCscov, "UDPLITE_RECV_CSCOV")
	}
	if err := r.err(); err != nil {
		return nil, err
	}
	s.Options = o
	return s, nil
}

func sockaddr(sa unix.Sockaddr) (string, uint32) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(a.Addr).String(), uint32(a.Port)
	case *unix.SockaddrInet6:
		addr := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			addr = addr.WithZone(fmt.Sprint(a.ZoneId))
		}
		return addr.String(), uint32(a.Port)
	}
	return "", 0
}

// localAddrFor is the address an inet socket is bound to here. netfix may
// later map the image's addresses to this host's.
func localAddrFor(s *pb.InetSocket) string {
	return s.LocalAddr
}

// sockaddrOf builds the sockaddr of addr:port for family.
func sockaddrOf(family int32, addr string, port uint32) (unix.Sockaddr, netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("parse address %q: %w", addr, err)
	}
	ap := netip.AddrPortFrom(a, uint16(port))
	switch family {
	case unix.AF_INET:
		if !a.Unmap().Is4() {
			return nil, ap, fmt.Errorf("address %s is not IPv4", a)
		}
		return &unix.SockaddrInet4{Port: int(port), Addr: a.Unmap().As4()}, ap, nil
	case unix.AF_INET6:
		sa := &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			id, err := strconv.ParseUint(z, 10, 32)
			if err != nil {
				return nil, ap, fmt.Errorf("address %s: zone is not an interface index", a)
			}
			sa.ZoneId = uint32(id)
		}
		return sa, ap, nil
	}
	return nil, ap, fmt.Errorf("socket family %d is not inet", family)
}

// create makes an inet socket in the process and configures it from
// lazycr through a pidfd_getfd copy: options, bind, connect or listen act
// on the socket (and its network namespace), not on the fd.
func (inetSocket) create(r *restorer, f *pb.Fd) (uintptr, error) {
	s := f.GetInetSocket()
	typ := uintptr(s.Type) | unix.SOCK_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := r.rem.Syscall(unix.SYS_SOCKET, uintptr(s.Family), typ, uintptr(s.Protocol))
	if err != nil {
		return 0, fmt.Errorf("create socket fd %d (family %d type %d protocol %d): %w", f.Fd, s.Family, s.Type, s.Protocol, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create socket fd %d: %w", f.Fd, err)
	}
	local, err := r.getfd(fd)
	if err != nil {
		return 0, fmt.Errorf("socket fd %d: %w", f.Fd, err)
	}
	defer unix.Close(local)
	if err := setSockopts(local, f.Fd, s); err != nil {
		return 0, err
	}
	la, lap, err := sockaddrOf(s.Family, localAddrFor(s), s.LocalPort)
	if err != nil {
		return 0, fmt.Errorf("socket fd %d: local %w", f.Fd, err)
	}
	if s.LocalPort != 0 || !lap.Addr().IsUnspecified() {
		err := unix.Bind(local, la)
		if errors.Is(err, unix.EADDRINUSE) && s.Listening {
			err = r.bindOverTimeWait(local, la, lap, s, err)
		}
		if errors.Is(err, unix.EADDRINUSE) && (s.Listening || s.Type == unix.SOCK_DGRAM) && r.handOver {
			took, terr := r.takeListener(f, s)
			if terr != nil {
				return 0, fmt.Errorf("bind fd %d to %s: %w (taking the source's socket over: %w)", f.Fd, lap, err, terr)
			}
			r.closeRemote(fd)
			return took, nil
		}
		if err != nil {
			return 0, fmt.Errorf("bind fd %d to %s: %w", f.Fd, lap, err)
		}
	}
	switch {
	case s.Listening:
		if err := unix.Listen(local, int(s.Backlog)); err != nil {
			return 0, fmt.Errorf("listen on fd %d %s: %w", f.Fd, lap, err)
		}
	case s.PeerAddr != "" && s.Type == unix.SOCK_DGRAM:
		pa, pap, err := sockaddrOf(s.Family, s.PeerAddr, s.PeerPort)
		if err != nil {
			return 0, fmt.Errorf("socket fd %d: peer %w", f.Fd, err)
		}
		if err := unix.Connect(local, pa); err != nil {
			return 0, fmt.Errorf("connect fd %d to %s: %w", f.Fd, pap, err)
		}
	case s.PeerAddr != "":
		return 0, fmt.Errorf("socket fd %d: connected socket of type %d cannot be restored", f.Fd, s.Type)
	}
	if err := restoreMemberships(local, f.Fd, s.Memberships); err != nil {
		return 0, err
	}
	if err := shutdownSocket(local, f.Fd, s); err != nil {
		return 0, err
	}
	return fd, nil
}

// bindOverTimeWait retries the bind of a listener that failed with
// bindErr after removing the TIME_WAIT entries of its port (timewait.go
// says why); with none to remove, bindErr stands.
func (r *restorer) bindOverTimeWait(fd int, sa unix.Sockaddr, ap netip.AddrPort, s *pb.InetSocket, bindErr error) error {
	families := []uint8{uint8(s.Family)}
	if s.Family == unix.AF_INET6 && ap.Addr().IsUnspecified() && !s.GetOptions().GetIpv6Only() {
		families = append(families, unix.AF_INET) // [::] also holds the IPv4 port
	}
	removed := 0
	for _, fam := range families {
		n, err := clearTimeWait(r.pid, fam, ap.Addr().Unmap(), ap.Port())
		removed += n
		if err != nil {
			return fmt.Errorf("%w (clearing its TIME_WAIT entries: %w)", bindErr, err)
		}
	}
	if removed == 0 {
		return bindErr
	}
	r.log.Info().Uint16("port", ap.Port()).Int("entries", removed).
		Msgf("removed %d TIME_WAIT entries of port %d that kept the listener from binding", removed, ap.Port())
	return unix.Bind(fd, sa)
}

// shutdownSocket gives the socket its recorded sk_shutdown. On a socket
// that is not connected shutdown(2) fails ENOTCONN but still records the
// shutdown (inet_shutdown in net/ipv4/af_inet.c sets sk_shutdown for
// every state but listening), which is what a datagram socket of the
// process had too.
func shutdownSocket(fd int, num int32, s *pb.InetSocket) error {
	const rcv, send = 1, 2 // RCV_SHUTDOWN, SEND_SHUTDOWN (include/net/sock.h)
	var how int
	switch s.Shutdown {
	case 0:
		return nil
	case rcv:
		how = unix.SHUT_RD
	case send:
		how = unix.SHUT_WR
	case rcv | send:
		how = unix.SHUT_RDWR
	default:
		return fmt.Errorf("socket fd %d: shutdown state %#x in the image", num, s.Shutdown)
	}
	err := unix.Shutdown(fd, how)
	if err != nil && !(errors.Is(err, unix.ENOTCONN) && s.PeerAddr == "" && s.Type == unix.SOCK_DGRAM) {
		return fmt.Errorf("shut down socket fd %d (how %d): %w", num, how, os.NewSyscallError("shutdown", err))
	}
	return nil
}

// setSockopts applies the recorded options before bind. Values that the
// kernel derives (buffer sizes, TOS, TTL, V6ONLY) are set only when they
// differ from what the fresh socket has, so that defaults stay defaults
// (a set SO_RCVBUF turns TCP autotuning off). See socket(7), ip(7), ipv6(7).
func setSockopts(fd int, num int32, s *pb.InetSocket) error {
	o := s.Options
	if o == nil {
		return nil
	}
	set := func(level, opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("set %s=%d on socket fd %d: %w", name, v, num, os.NewSyscallError("setsockopt", err))
		}
		return nil
	}
	setIf := func(cond bool, level, opt int, name string, v int) error {
		if !cond {
			return nil
		}
		return set(level, opt, name, v)
	}
	setDiff := func(level, opt int, name string, want int) error {
		have, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return fmt.Errorf("read %s of socket fd %d: %w", name, num, os.NewSyscallError("getsockopt", err))
		}
		if have == want {
			return nil
		}
		return set(level, opt, name, want)
	}
	setBuf := func(opt int, name string, want int32) error {
		// The kernel doubles what is set; the record is the doubled value.
		if want <= 0 {
			return nil
		}
		have, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return fmt.Errorf("read %s of socket fd %d: %w", name, num, os.NewSyscallError("getsockopt", err))
		}
		if have == int(want) {
			return nil
		}
		return set(unix.SOL_SOCKET, opt, name, int(want/2))
	}
	v6 := s.Family == unix.AF_INET6
	errs := []error{
		setIf(o.Reuseaddr, unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", 1),
		setIf(o.Reuseport, unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT", 1),
		setIf(o.Broadcast, unix.SOL_SOCKET, unix.SO_BROADCAST, "SO_BROADCAST", 1),
		setIf(o.Keepalive, unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", 1),
		setIf(o.Mark != 0, unix.SOL_SOCKET, unix.SO_MARK, "SO_MARK", int(o.Mark)),
		setBuf(unix.SO_SNDBUF, "SO_SNDBUF", o.Sndbuf),
		setBuf(unix.SO_RCVBUF, "SO_RCVBUF", o.Rcvbuf),
	}
	if s.Protocol == unix.IPPROTO_UDPLITE {
		errs = append(errs,
			setIf(o.UdpliteSendCscov != 0, solUDPLite, udpliteSendCscov, "UDPLITE_SEND_CSCOV", int(o.UdpliteSendCscov)),
			setIf(o.UdpliteRecvCscov != 0, solUDPLite, udpliteRecvCscov, "UDPLITE_RECV_CSCOV", int(o.UdpliteRecvCscov)))
	}
	errs = append(errs, setMoreSockopts(fd, num, o))
	if o.BindToDevice != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, o.BindToDevice); err != nil {
			errs = append(errs, fmt.Errorf("bind socket fd %d to device %s: %w", num, o.BindToDevice, os.NewSyscallError("setsockopt SO_BINDTODEVICE", err)))
		}
	}
	if v6 {
		v6only := 0
		if o.Ipv6Only {
			v6only = 1
		}
		errs = append(errs,
			setDiff(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY", v6only),
			setIf(o.Tos != 0, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS", int(o.Tos)),
			setIf(o.RecvErr, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, "IPV6_RECVERR", 1),
			setIf(o.Pktinfo, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", 1),
		)
		if o.Ttl > 0 {
			errs = append(errs, setDiff(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", int(o.Ttl)))
		}
	} else {
		errs = append(errs,
			setDiff(unix.IPPROTO_IP, unix.IP_TOS, "IP_TOS", int(o.Tos)),
			setIf(o.RecvErr, unix.IPPROTO_IP, unix.IP_RECVERR, "IP_RECVERR", 1),
			setIf(o.Pktinfo, unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO", 1),
		)
		if o.Ttl > 0 {
			errs = append(errs, setDiff(unix.IPPROTO_IP, unix.IP_TTL, "IP_TTL", int(o.Ttl)))
		}
	}
	// The priority last: setting IP_TOS sets it too, from the TOS
	// (ip(7) IP_TOS; rt_tos2priority), and the record is the value the
	// process had in the end.
	errs = append(errs, setDiff(unix.SOL_SOCKET, unix.SO_PRIORITY, "SO_PRIORITY", int(o.Priority)))
	return errors.Join(errs...)
}

// takeListener hands the listening socket of image fd f over from the
// dumped process itself, for a post-copy restore on the host it was dumped
// on: the source keeps the original frozen, holding its port, until the
// target is done, so a fresh socket cannot bind. pidfd_getfd(2) copies the
// original's fd, which shares its open file description, so the process
// gets the very same socket: its options, backlog and accept queue are
// exact, and connections that arrive meanwhile wait in it. A bound UDP
// socket is taken over the same way (its options, memberships and shutdown
// state exact, datagrams that arrive meanwhile wait in it). The original
// keeps its own fd: if the migration is rolled back it still listens, and
// once it is killed the socket lives on in the new process. Taken only if
// the image comes from this boot and the dumped pid still holds, at that
// fd, a socket of the image's inode, kind and addresses, in the
// network namespace of the process being built, and it is stopped by its
// tracer (the source's freeze); anything else is an error.
func (r *restorer) takeListener(f *pb.Fd, s *pb.InetSocket) (uintptr, error) {
	pid := int(r.imagePid)
	local, st, err := r.fdOfFrozenOriginal(f.Fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(local)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != s.Inode {
		return 0, fmt.Errorf("fd %d of pid %d is not socket:[%d] (mode %#o inode %d)", f.Fd, pid, s.Inode, st.Mode, st.Ino)
	}
	if err := sameNetns(local, r.pid); err != nil {
		return 0, fmt.Errorf("socket:[%d] of pid %d: %w", s.Inode, pid, err)
	}
	got, err := describeSocket(local)
	if err != nil {
		return 0, fmt.Errorf("socket:[%d] of pid %d: %w", s.Inode, pid, err)
	}
	if got.Listening != s.Listening || got.Type != s.Type || got.Family != s.Family || got.LocalAddr != s.LocalAddr || got.LocalPort != s.LocalPort ||
		got.PeerAddr != s.PeerAddr || got.PeerPort != s.PeerPort {
		return 0, fmt.Errorf("socket:[%d] of pid %d is no longer the dumped %s", s.Inode, pid, SockProto(s)+" "+HostPort(s.LocalAddr, s.LocalPort))
	}
	fd, err := r.receive(local, f.Fd)
	if err != nil {
		return 0, err
	}
	kind := "listening socket"
	if !s.Listening {
		kind = SockProto(s) + " socket"
	}
	r.log.Info().Int32("fd", f.Fd).Int("source_pid", pid).Uint64("socket", s.Inode).
		Msgf("fd %d: took the %s %s over from the frozen original pid %d", f.Fd, kind, HostPort(s.LocalAddr, s.LocalPort), pid)
	return fd, nil
}

// sameNetns checks that socket sock belongs to the network namespace of
// pid (SIOCGSKNS opens the socket's namespace: see sock_ioctl in
// net/socket.c).
func sameNetns(sock int, pid int) error {
	nsfd, err := unix.IoctlRetInt(sock, unix.SIOCGSKNS)
	if err != nil {
		return fmt.Errorf("open its network namespace: %w", os.NewSyscallError("ioctl SIOCGSKNS", err))
	}
	defer unix.Close(nsfd)
	var have, want unix.Stat_t
	if err := unix.Fstat(nsfd, &have); err != nil {
		return fmt.Errorf("stat its network namespace: %w", os.NewSyscallError("fstat", err))
	}
	path := fmt.Sprintf("/proc/%d/ns/net", pid)
	if err := unix.Stat(path, &want); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if have.Dev != want.Dev || have.Ino != want.Ino {
		return fmt.Errorf("it is in network namespace %d, pid %d in %d", have.Ino, pid, want.Ino)
	}
	return nil
}
