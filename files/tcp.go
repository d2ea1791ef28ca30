package files

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/netlock"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// tcpConn is a TCP connection (IPv4 or IPv6, either side), established or
// half-closed, checkpointed with TCP_REPAIR (tcp(7);
// Documentation/networking and CRIU's soccr/soccr.c are the reference for
// the sequence):
//
// Dump: the connection's packets are locked out (netlock) before anything
// is read, so the state cannot move under the dump (nor, as seen by the
// peer, after it); then, on lazycr's
// pidfd_getfd(2) copy of the socket, TCP_REPAIR=1 and: TCP_INFO (state,
// negotiated options, window scales), SIOCINQ/SIOCOUTQ/SIOCOUTQNSD (queue
// lengths), for each queue TCP_REPAIR_QUEUE + TCP_QUEUE_SEQ and a
// recv(MSG_PEEK) of its bytes (in repair mode recv on TCP_SEND_QUEUE reads
// the send queue), TCP_MAXSEG (the MSS clamp in repair mode), TCP_TIMESTAMP
// and TCP_REPAIR_WINDOW; then repair off again while the images are
// written. Right before the kill repair goes back on: when the killed
// process's socket is finally closed, __tcp_close → tcp_disconnect sees
// tp->repair and neither sends a FIN nor a RST (net/ipv4/tcp.c), so the
// peer sees nothing; on a failed or leave-running dump the lock goes and
// the connection carries on.
//
// Restore: socket, TCP_REPAIR=1 (which also sets SK_FORCE_REUSE, so the
// bind succeeds next to a listener of the same port), the options, the
// queue sequence numbers (TCP_QUEUE_SEQ, the start of each queue), bind,
// connect (in repair mode tcp_connect calls tcp_finish_connect: no SYN is
// sent and the socket is ESTABLISHED at once), TCP_REPAIR_OPTIONS (SACK,
// window scales, timestamps, MSS clamp), TCP_TIMESTAMP, the queues (the
// received bytes with TCP_RECV_QUEUE; the sent-unacknowledged bytes with
// TCP_SEND_QUEUE; the never-sent tail with repair off, as a normal send),
// TCP_REPAIR_WINDOW; then the FINs of a half-closed connection (FIN_WAIT1,
// FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING: tcpfin.go), and a receive side
// shut down by shutdown(SHUT_RD). Repair is turned off only when the
// process is about to run ([TCPRestore.Live]), so a failed restore closes
// the sockets silently. TIME_WAIT has no fd (timewait.go).
//
// A socket in state CLOSE that was never connected (frozen between
// socket(2) and connect(2)) is an ordinary socket (inetSocket).
//
// Refused, naming the connection: SYN_SENT and SYN_RECV (the handshake is
// not restored), CLOSE after a connection (reset, failed or disconnected:
// its error and shutdown state are not restorable), a socket filter
// (SO_ATTACH_FILTER/SO_ATTACH_BPF: not restorable exactly), TCP-MD5 or
// TCP-AO keys (not readable), an upper-layer protocol (TCP_ULP: kTLS...),
// negotiated ECN or microsecond timestamps (no repair option carries
// them), and a receive queue that cannot be read whole (urgent data stops
// recv at the mark).
type tcpConn struct{}

func (tcpConn) name() string { return "socket" }

func (tcpConn) claims(l *liveFd) bool {
	if l.link != proc.KindSocket {
		return false
	}
	get := func(opt int) int {
		v, err := getsockoptInt(l.local, unix.SOL_SOCKET, opt)
		if err != nil {
			return -1
		}
		return v
	}
	dom := get(unix.SO_DOMAIN)
	return (dom == unix.AF_INET || dom == unix.AF_INET6) && get(unix.SO_TYPE) == unix.SOCK_STREAM &&
		get(unix.SO_PROTOCOL) == unix.IPPROTO_TCP && get(unix.SO_ACCEPTCONN) == 0
}

// TCP states, include/net/tcp_states.h.
var tcpStates = map[uint8]string{
	1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT",
	7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV",
}

const tcpEstablished = 1

// tcpInfo reads the head of struct tcp_info: state, options, window scales.
func tcpInfo(fd int) (state, options, sndWscale, rcvWscale uint8, err error) {
	buf := make([]byte, 256)
	n, err := kabi.GetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, buf)
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("read TCP_INFO: %w", err)
	}
	if n < kabi.TCPInfoMinLen {
		return 0, 0, 0, 0, fmt.Errorf("read TCP_INFO: %d bytes", n)
	}
	return buf[0], buf[5], buf[6] & 0xf, buf[6] >> 4, nil
}

func connName(s *pb.InetSocket) string {
	return HostPort(s.LocalAddr, s.LocalPort) + " -> " + HostPort(s.PeerAddr, s.PeerPort)
}

func (tcpConn) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	state, opts, _, _, err := tcpInfo(l.local)
	if err != nil {
		return err
	}
	if state == tcpClose {
		fresh, err := neverConnected(l.local)
		if err != nil {
			return err
		}
		if fresh {
			// Made and perhaps bound, not yet connected (a process
			// frozen between socket(2) and connect(2)): a plain socket,
			// made again by inetSocket.create.
			s, err := describeInet(l.local, true)
			if err != nil {
				return err
			}
			s.Inode = l.ino
			out.Kind = &pb.Fd_InetSocket{InetSocket: s}
			return nil
		}
	}
	if _, ok := finsOf(uint32(state)); !ok {
		what := "TCP socket"
		if sa, err := unix.Getsockname(l.local); err == nil {
			a, p := sockaddr(sa)
			what += " " + HostPort(a, p)
		}
		if pa, err := unix.Getpeername(l.local); err == nil {
			a, p := sockaddr(pa)
			what += " -> " + HostPort(a, p)
		}
		name := tcpStates[state]
		if name == "" {
			name = fmt.Sprint(state)
		}
		switch state {
		case tcpSynSent:
			name += ": still connecting"
		case tcpClose:
			name += ": closed after a connection (reset, failed or disconnected)"
		}
		return fmt.Errorf("%w: %s in state %s", ErrUnsupported, what, name)
	}
	s, err := describeInet(l.local, true)
	if err != nil {
		return err
	}
	s.Inode = l.ino
	conn := "TCP connection " + connName(s)
	if err := tcpRefusals(d, l, s, opts, state); err != nil {
		return fmt.Errorf("%s: %w", conn, err)
	}
	if d.opts.TCP == nil {
		return fmt.Errorf("%w: %s: this kind of dump cannot hold its peer yet (lazy mode)", ErrUnsupported, conn)
	}
	local, err := unix.FcntlInt(uintptr(l.local), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s: keep socket: %w", conn, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	s.Tcp = &pb.TcpStream{}
	d.opts.TCP.socks = append(d.opts.TCP.socks, &tcpSock{fd: local, num: l.num, s: s})
	out.Kind = &pb.Fd_InetSocket{InetSocket: s}
	return nil
}

// neverConnected reports whether the TCP socket fd, in state CLOSE, was
// never connected: a connect(2) sets the MSS and path MTU fields of
// tcp_info (tcp_connect_init, tcp_sync_mss), and neither a later error
// (tcp_done) nor a disconnect (connect to AF_UNSPEC: tcp_disconnect)
// clears them; a socket it gave up on also has a pending error or a shut
// down side, which a fresh one would lose. A receive side shut down by
// shutdown(2) before any connect (which fails ENOTCONN but sets the flag,
// inet_shutdown) shows as POLLRDHUP and is refused; the send side's flag
// alone shows nowhere.
func neverConnected(fd int) (bool, error) {
	ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return false, fmt.Errorf("read TCP_INFO: %w", os.NewSyscallError("getsockopt", err))
	}
	if ti.Advmss != 0 || ti.Pmtu != 0 || ti.Rcv_mss != 0 {
		return false, nil
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLRDHUP}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return false, fmt.Errorf("poll socket: %w", os.NewSyscallError("poll", err))
	}
	return pfd[0].Revents&unix.POLLRDHUP == 0, nil
}

// tcpRefusals refuses what a TCP repair cannot carry over exactly. It
// records sk_shutdown in s.Shutdown: a receive side shut down without the
// peer's FIN (shutdown(SHUT_RD)) is restored as such.
func tcpRefusals(d *dumper, l *liveFd, s *pb.InetSocket, opts, state uint8) error {
	// SO_GET_FILTER with an empty buffer returns the length of a classic
	// filter (0: none), and EACCES for an eBPF program, whose original
	// cannot be read back (sk_get_filter, net/core/filter.c).
	n, err := kabi.GetsockoptBytes(l.local, unix.SOL_SOCKET, unix.SO_GET_FILTER, nil)
	switch {
	case errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w: an eBPF socket filter is attached (SO_ATTACH_BPF)", ErrUnsupported)
	case err != nil:
		return fmt.Errorf("read SO_GET_FILTER: %w", err)
	case n > 0:
		return fmt.Errorf("%w: a socket filter of %d instructions is attached (SO_ATTACH_FILTER)", ErrUnsupported, n)
	}
	ulp, err := unix.GetsockoptString(l.local, unix.IPPROTO_TCP, unix.TCP_ULP)
	if err != nil {
		return fmt.Errorf("read TCP_ULP: %w", os.NewSyscallError("getsockopt", err))
	}
	if ulp != "" {
		return fmt.Errorf("%w: upper-layer protocol %q (TCP_ULP)", ErrUnsupported, ulp)
	}
	buf := make([]byte, 64)
	switch _, err := kabi.GetsockoptBytes(l.local, unix.IPPROTO_TCP, kabi.TCP_AO_INFO, buf); {
	case err == nil:
		return fmt.Errorf("%w: TCP-AO keys (RFC 5925) cannot be read back", ErrUnsupported)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOPROTOOPT), errors.Is(err, unix.EINVAL):
	default:
		return fmt.Errorf("read TCP_AO_INFO: %w", err)
	}
	ds, err := d.diagOf(uint8(s.Family), unix.IPPROTO_TCP, l.ino)
	if err != nil {
		return err
	}
	if ds.md5 {
		return fmt.Errorf("%w: TCP-MD5 keys (TCP_MD5SIG) cannot be read back", ErrUnsupported)
	}
	// The process is frozen: SEND_SHUTDOWN (its own shutdown(SHUT_WR))
	// cannot change and goes with its FIN; RCV_SHUTDOWN comes with the
	// peer's FIN or a shutdown(SHUT_RD), and the peer's FIN may still
	// arrive until the lock is taken.
	if fins, _ := finsOf(uint32(state)); ds.shutdown&^3 != 0 || (ds.shutdown&2 != 0) != fins.ours {
		return fmt.Errorf("%w: shut down (%#x) in state %s", ErrUnsupported, ds.shutdown, tcpStates[state])
	}
	s.Shutdown = uint32(ds.shutdown)
	if opts&(kabi.TCPI_OPT_ECN|kabi.TCPI_OPT_ECN_SEEN) != 0 {
		return fmt.Errorf("%w: ECN was negotiated; TCP repair cannot restore it", ErrUnsupported)
	}
	if opts&kabi.TCPI_OPT_USEC_TS != 0 {
		// Microsecond timestamps (route option tcp_usec_ts, Linux 6.7):
		// TCP_REPAIR_OPTIONS turns timestamps on in milliseconds only.
		return fmt.Errorf("%w: microsecond TCP timestamps were negotiated; TCP repair restores millisecond ones", ErrUnsupported)
	}
	return nil
}

func (tcpConn) owns(f *pb.Fd) bool { return f.GetInetSocket().GetTcp() != nil }

// late: connections are re-created after every other socket. A connection
// binds its port with SK_FORCE_REUSE (repair mode); a listener of the same
// port bound after it would conflict with it unless it has SO_REUSEADDR
// (inet_csk_bind_conflict), while bound first it never does.
func (tcpConn) late() {}

func (tcpConn) show(f *pb.Fd) string {
	s := f.GetInetSocket()
	t := s.Tcp
	state := ""
	if t.State != tcpEstablished {
		state = " " + tcpStates[uint8(t.State)]
	}
	return fmt.Sprintf("%s %s%s, %d bytes unread, %d unacknowledged (%d unsent)", SockProto(s), connName(s), state,
		len(t.Inq), len(t.Outq)-int(t.OutqUnsent), t.OutqUnsent)
}

// tcpSock is one repaired connection of a dump: lazycr's own copy of the
// socket (which keeps it, and its repair mode, after the process is gone).
type tcpSock struct {
	fd  int // -1 once closed
	num int
	s   *pb.InetSocket
	// repaired: TCP_REPAIR is on.
	repaired bool
}

// TCPDump carries the established TCP connections of one dump from their
// lock to their fate. Pass a fresh one in [DumpOptions]; after [Dump]
// returned successfully call exactly one of:
//
//   - [TCPDump.Resume] (leave-running dump, or a failure after Dump): repair
//     off, lock released, the connections carry on;
//   - [TCPDump.Hold] before killing the process and [TCPDump.Close] after:
//     the held lock (named in the image) keeps the peers' packets away
//     until a restore removes it, and the sockets die in repair mode, with
//     neither FIN nor RST.
//
// A failed Dump resumes the connections itself. All methods are no-ops on
// a nil TCPDump or one without connections.
type TCPDump struct {
	log   zerolog.Logger
	socks []*tcpSock
	ns    netns.NsHandle
	lock  *netlock.Lock
	conns []netlock.Conn
	// listeners are the dumped TCP listeners whose new connections are
	// held off (lockListener), each by its own lock in llocks.
	listeners []netlock.Listener
	llocks    []*netlock.Lock
	held      string // the held lock's name, set once Hold installed it
	name      string // the name the held lock will have
}

// NewTCPDump makes the TCP half of a dump.
func NewTCPDump(log zerolog.Logger) *TCPDump { return &TCPDump{log: log, ns: netns.None()} }

// Conns is the number of established connections the dump holds.
func (t *TCPDump) Conns() int {
	if t == nil {
		return 0
	}
	return len(t.socks)
}

// freeze locks every connection in pid's network namespace, then puts
// each in repair mode and reads its state. The lock comes first: a frozen
// process's sockets still receive and acknowledge, and a byte acknowledged
// after its queue was read would be lost.
func (t *TCPDump) freeze(pid int, table *pb.FdTable) error {
	if t == nil || len(t.socks) == 0 && len(t.listeners) == 0 {
		return nil
	}
	start, err := proc.ProcessIdentity(pid)
	if err != nil {
		return fmt.Errorf("read start time of pid %d: %w", pid, err)
	}
	t.name = netlock.HeldName(pid, start)
	table.TcpLock = t.name
	if len(t.socks) == 0 {
		return nil
	}
	for _, k := range t.socks {
		c, err := lockConn(k.s)
		if err != nil {
			return fmt.Errorf("fd %d: %w", k.num, err)
		}
		t.conns = append(t.conns, c)
	}
	if err := t.openNS(pid); err != nil {
		return err
	}
	if t.lock, err = netlock.Acquire(t.ns, t.conns, netlock.Options{Log: t.log}); err != nil {
		return err
	}
	for _, k := range t.socks {
		if err := setInt(k.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
			return fmt.Errorf("fd %d (TCP connection %s): %w", k.num, connName(k.s), err)
		}
		k.repaired = true
		if err := readStream(k.fd, k.s.Tcp); err != nil {
			return fmt.Errorf("fd %d (TCP connection %s): %w", k.num, connName(k.s), err)
		}
		// Repair goes off again at once, and back on only right before
		// the kill (Hold): a lazycr killed in between must not leave the
		// process (which ptrace then lets run) with sockets in repair
		// mode, where its reads fail EPERM. Under the lock the recorded
		// state stays what the peer knows: nothing the socket sends from
		// now on (retransmissions, ACKs, window updates) reaches the peer,
		// nothing the peer sends reaches the socket, and the process is
		// frozen.
		if err := repairOff(k); err != nil {
			return err
		}
	}
	return nil
}

// openNS opens pid's network namespace for the locks, once.
func (t *TCPDump) openNS(pid int) error {
	if t.ns.IsOpen() {
		return nil
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("open network namespace of pid %d: %w", pid, err)
	}
	t.ns = ns
	return nil
}

// lockListener holds off new connections to the TCP listener s of the
// frozen process pid (their SYNs are dropped, netlock.Listener) from now
// until the held lock of the image is removed by the restore, or the dump
// is resumed. The frozen process's kernel would otherwise go on completing
// handshakes into an accept queue that dies with the process (its clients
// get a reset: inet_csk_listen_stop); a dropped SYN is retransmitted by
// the client (tcp(7) tcp_syn_retries: after 1 s, then 3 s, 7 s, …) and
// the retransmission meets the restored listener. Call it before the
// accept-queue check (listenQueue), so that no connection slips in
// between: the check sees every connection that completed before the
// lock, the lock stops every later one.
func (t *TCPDump) lockListener(pid int, s *pb.InetSocket) error {
	if t == nil {
		return nil
	}
	l, err := lockListenerOf(s)
	if err != nil {
		return err
	}
	if err := t.openNS(pid); err != nil {
		return err
	}
	lk, err := netlock.Acquire(t.ns, nil, netlock.Options{Log: t.log, Listeners: []netlock.Listener{l}})
	if err != nil {
		return err
	}
	t.listeners = append(t.listeners, l)
	t.llocks = append(t.llocks, lk)
	return nil
}

// repairOff ends repair mode on a dumped socket and gives back
// SO_REUSEADDR (TCP_REPAIR off resets sk_reuse, do_tcp_setsockopt).
func repairOff(k *tcpSock) error {
	if !k.repaired {
		return nil
	}
	errs := []error{setInt(k.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0, "TCP_REPAIR")}
	if k.s.Options.GetReuseaddr() {
		errs = append(errs, setInt(k.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"))
	}
	k.repaired = false
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("resume fd %d (TCP connection %s): %w", k.num, connName(k.s), err)
	}
	return nil
}

// lockListenerOf is the listening socket s for the lock.
func lockListenerOf(s *pb.InetSocket) (netlock.Listener, error) {
	a, err := netip.ParseAddr(s.LocalAddr)
	if err != nil {
		return netlock.Listener{}, fmt.Errorf("local address %q: %w", s.LocalAddr, err)
	}
	return netlock.Listener{Local: netip.AddrPortFrom(a, uint16(s.LocalPort)), V6Only: s.Options.GetIpv6Only()}, nil
}

// lockConn is the 4-tuple of s for the lock.
func lockConn(s *pb.InetSocket) (netlock.Conn, error) {
	l, err := netip.ParseAddr(s.LocalAddr)
	if err != nil {
		return netlock.Conn{}, fmt.Errorf("local address %q: %w", s.LocalAddr, err)
	}
	p, err := netip.ParseAddr(s.PeerAddr)
	if err != nil {
		return netlock.Conn{}, fmt.Errorf("peer address %q: %w", s.PeerAddr, err)
	}
	return netlock.Conn{Local: netip.AddrPortFrom(l, uint16(s.LocalPort)), Remote: netip.AddrPortFrom(p, uint16(s.PeerPort))}, nil
}

// readStream reads a repaired socket's state into st.
func readStream(fd int, st *pb.TcpStream) error {
	state, opts, sndWs, rcvWs, err := tcpInfo(fd)
	if err != nil {
		return err
	}
	fins, ok := finsOf(uint32(state))
	if !ok {
		return fmt.Errorf("%w: state %s under the lock", ErrUnsupported, tcpStates[state])
	}
	st.State = uint32(state)
	st.Options = uint32(opts) & (kabi.TCPI_OPT_TIMESTAMPS | kabi.TCPI_OPT_SACK | kabi.TCPI_OPT_WSCALE)
	if opts&kabi.TCPI_OPT_WSCALE != 0 {
		st.SndWscale, st.RcvWscale = uint32(sndWs), uint32(rcvWs)
	}
	// Queue lengths (tcp(7) ioctls): SIOCINQ = rcv_nxt - copied_seq,
	// SIOCOUTQ = write_seq - snd_una, SIOCOUTQNSD = write_seq - snd_nxt;
	// our FIN is taken out of the last two (tcpfin.go), SIOCINQ never
	// counts the peer's.
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return fmt.Errorf("read SIOCINQ: %w", os.NewSyscallError("ioctl", err))
	}
	if err := refuseUrgent(fd, inq); err != nil {
		return err
	}
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return fmt.Errorf("read SIOCOUTQ: %w", os.NewSyscallError("ioctl", err))
	}
	unsent, err := unix.IoctlGetInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return fmt.Errorf("read SIOCOUTQNSD: %w", os.NewSyscallError("ioctl", err))
	}
	outq, unsent, st.FinUnsent, err = fins.sendData(outq, unsent)
	if err != nil {
		return fmt.Errorf("%s: %w", tcpStates[state], err)
	}
	st.OutqUnsent = uint32(unsent)
	if st.InqSeq, st.Inq, err = readQueue(fd, kabi.TCP_RECV_QUEUE, inq); err != nil {
		return fmt.Errorf("read receive queue: %w", err)
	}
	if st.OutqSeq, st.Outq, err = readQueue(fd, kabi.TCP_SEND_QUEUE, outq); err != nil {
		return fmt.Errorf("read send queue: %w", err)
	}
	if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_NO_QUEUE, "TCP_REPAIR_QUEUE"); err != nil {
		return err
	}
	// In repair mode TCP_MAXSEG reads rx_opt.mss_clamp (do_tcp_getsockopt).
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return fmt.Errorf("read TCP_MAXSEG: %w", os.NewSyscallError("getsockopt", err))
	}
	st.MssClamp = uint32(mss)
	if opts&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("read TCP_TIMESTAMP: %w", os.NewSyscallError("getsockopt", err))
		}
		st.Timestamp = uint32(ts)
	}
	wb := make([]byte, kabi.TCPRepairWindowLen)
	n, err := kabi.GetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, wb)
	if err != nil {
		return fmt.Errorf("read TCP_REPAIR_WINDOW: %w", err)
	}
	w, ok := kabi.DecodeTCPRepairWindow(wb[:n])
	if !ok {
		return fmt.Errorf("read TCP_REPAIR_WINDOW: %d bytes", n)
	}
	st.Window = &pb.TcpWindow{SndWl1: w.SndWl1, SndWnd: w.SndWnd, MaxWindow: w.MaxWindow, RcvWnd: w.RcvWnd, RcvWup: w.RcvWup}
	return readTCPOpts(fd, st)
}

// refuseUrgent refuses a connection with urgent data (send(2) MSG_OOB)
// in its receive queue, read or not. Without SO_OOBINLINE both SIOCINQ and
// recv stop at the urgent mark (tcp_ioctl answers urg_seq - copied_seq,
// tcp_recvmsg breaks there), so the bytes behind it were silently left out
// of the image, and a restored queue cannot carry the urgent pointer (nor
// the hole a byte read with MSG_OOB leaves). With SO_OOBINLINE set SIOCINQ
// counts the whole queue: set for the question, put back after.
func refuseUrgent(fd, inq int) error {
	inline, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE)
	if err != nil {
		return fmt.Errorf("read SO_OOBINLINE: %w", os.NewSyscallError("getsockopt", err))
	}
	if inline != 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE, 1); err != nil {
		return fmt.Errorf("set SO_OOBINLINE: %w", os.NewSyscallError("setsockopt", err))
	}
	all, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if perr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_OOBINLINE, 0); perr != nil {
		return fmt.Errorf("put SO_OOBINLINE back to 0: %w", os.NewSyscallError("setsockopt", perr))
	}
	if err != nil {
		return fmt.Errorf("read SIOCINQ: %w", os.NewSyscallError("ioctl", err))
	}
	if all != inq {
		return fmt.Errorf("%w: urgent data (MSG_OOB) in the receive queue after byte %d of %d: the urgent mark cannot be restored", ErrUnsupported, inq, all)
	}
	return nil
}

// readQueue reads the sequence number and the n bytes of one queue. It
// asks for one byte more than it expects, so that a queue longer than its
// ioctl said is caught (as CRIU does).
func readQueue(fd, queue, n int) (uint32, []byte, error) {
	if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE"); err != nil {
		return 0, nil, err
	}
	seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("read TCP_QUEUE_SEQ: %w", os.NewSyscallError("getsockopt", err))
	}
	if n == 0 {
		return uint32(seq), nil, nil
	}
	buf := make([]byte, n+1)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, fmt.Errorf("peek %d bytes: %w", n, os.NewSyscallError("recvfrom", err))
	}
	if got != n {
		// Urgent data stops recv at its mark (tcp_recvmsg).
		return 0, nil, fmt.Errorf("%w: peeked %d of %d queued bytes (urgent data?)", ErrUnsupported, got, n)
	}
	return uint32(seq), buf[:n], nil
}

// readTCPOpts records the TCP-level options a restore must set again.
func readTCPOpts(fd int, st *pb.TcpStream) error {
	r := &sockoptReader{fd: fd}
	st.Nodelay = r.int(unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY") != 0
	st.Cork = r.int(unix.IPPROTO_TCP, unix.TCP_CORK, "TCP_CORK") != 0
	st.Keepidle = r.int(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE")
	st.Keepintvl = r.int(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL")
	st.Keepcnt = r.int(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT")
	st.UserTimeout = r.int(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT")
	st.NotsentLowat = r.int(unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT")
	st.WindowClamp = r.int(unix.IPPROTO_TCP, unix.TCP_WINDOW_CLAMP, "TCP_WINDOW_CLAMP")
	st.Linger2 = r.int(unix.IPPROTO_TCP, unix.TCP_LINGER2, "TCP_LINGER2")
	st.BufLock = r.int(unix.SOL_SOCKET, unix.SO_BUF_LOCK, "SO_BUF_LOCK")
	st.Congestion = r.string(unix.IPPROTO_TCP, unix.TCP_CONGESTION, "TCP_CONGESTION")
	return r.err()
}

// Resume turns repair off on every connection, gives back SO_REUSEADDR
// (TCP_REPAIR off resets sk_reuse, do_tcp_setsockopt) and releases the
// lock: the connections carry on as if nothing happened. For a failed or
// leave-running dump.
func (t *TCPDump) Resume() error {
	if t == nil {
		return nil
	}
	var errs []error
	for _, k := range t.socks {
		if k.fd < 0 {
			continue
		}
		errs = append(errs, repairOff(k))
		unix.Close(k.fd)
		k.fd = -1
	}
	errs = append(errs, t.release())
	if t.held != "" {
		errs = append(errs, netlock.RemoveHeld(t.ns, t.held, t.log))
		t.held = ""
	}
	t.closeNS()
	return errors.Join(errs...)
}

// Hold installs the held lock the image names, next to the dump's own
// (from now on the connections stay locked even after lazycr exits), and
// puts the sockets back in repair mode, so that the kill closes them
// without a FIN or RST. Call it right before killing the process; on
// failure it undoes both.
func (t *TCPDump) Hold() error {
	if t == nil || len(t.socks) == 0 && len(t.listeners) == 0 || t.held != "" {
		return nil
	}
	if err := netlock.HoldWith(t.ns, t.name, t.conns, t.listeners, t.log); err != nil {
		return err
	}
	t.held = t.name
	for _, k := range t.socks {
		if err := setInt(k.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
			err = fmt.Errorf("fd %d (TCP connection %s): %w", k.num, connName(k.s), err)
			for _, k := range t.socks {
				err = errors.Join(err, repairOff(k))
			}
			err = errors.Join(err, netlock.RemoveHeld(t.ns, t.held, t.log))
			t.held = ""
			return err
		}
		k.repaired = true
	}
	// The held lock drops the listeners' new connections from now on:
	// their own locks go. A lazy migration's target that takes a
	// listener over on this host removes the held lock's listeners
	// (TCPRestore.Live), and must not be left behind a lock of this
	// lazycr's that it cannot remove.
	return t.openListeners()
}

// HeldLock describes the held lock Hold installed, if any: its table
// (for lazycr unlock), how many connections it holds and the listening
// addresses whose new connections it drops.
type HeldLock struct {
	Table     string
	Conns     int
	Listeners []string
}

// Held returns the held lock Hold installed, nil if none.
func (t *TCPDump) Held() *HeldLock {
	if t == nil || t.held == "" {
		return nil
	}
	h := &HeldLock{Table: t.held, Conns: len(t.conns)}
	for _, l := range t.listeners {
		h.Listeners = append(h.Listeners, l.Local.String())
	}
	return h
}

// Close ends the dump's hold on the connections once the process is dead:
// its own lock goes (the held one stays) and its copies of the sockets are
// closed while still in repair mode, so the kernel sends neither FIN nor
// RST.
func (t *TCPDump) Close() error {
	if t == nil {
		return nil
	}
	if t.held == "" && len(t.socks) > 0 {
		return errors.New("close TCP connections: no held lock; resume them instead")
	}
	for _, k := range t.socks {
		if k.fd >= 0 {
			unix.Close(k.fd)
			k.fd = -1
		}
	}
	err := t.release()
	t.closeNS()
	return err
}

// Unhold removes the held lock after Close, once nothing can send the
// connections' packets to this host any more (a migration's source after
// its addresses were released). It acts in lazycr's own network namespace,
// where the source of a migration runs.
func (t *TCPDump) Unhold() error {
	if t == nil || t.name == "" {
		return nil
	}
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open lazycr's network namespace: %w", err)
	}
	defer ns.Close()
	err = netlock.RemoveHeld(ns, t.name, t.log)
	t.held = ""
	return err
}

// UnholdListeners ends the listener half of the held lock once the
// process is dead or is the only copy again, in lazycr's own network
// namespace (as Unhold): a lazy migration's source after the target
// listens (on another host, without --release-addresses: the addresses
// stay here, and a SYN that still arrives here meets no listener either
// way), or after the target gave up its copy (the original, kept
// stopped, accepts new connections again once continued). The
// connections stay held (netlock.UnholdListeners).
func (t *TCPDump) UnholdListeners() error {
	if t == nil || t.name == "" || len(t.listeners) == 0 {
		return nil
	}
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open lazycr's network namespace: %w", err)
	}
	defer ns.Close()
	err = netlock.UnholdListeners(ns, t.name, t.log)
	if err == nil && len(t.conns) == 0 {
		t.held = ""
	}
	return err
}

func (t *TCPDump) release() error {
	var errs []error
	if t.lock != nil {
		errs = append(errs, t.lock.Unlock())
		t.lock = nil
	}
	errs = append(errs, t.openListeners())
	return errors.Join(errs...)
}

// openListeners removes the listeners' own locks.
func (t *TCPDump) openListeners() error {
	var errs []error
	// The listeners' locks open at once (their tables deleted, about 50 µs
	// each), and their sockets, whose close waits for an RCU grace period
	// (about 15 ms each, netlock.Lock.Open), close in the background: a
	// failed, retried or leave-running dump releases the process right
	// after this.
	var closers []func() error
	for _, l := range t.llocks {
		c, err := l.Open()
		errs = append(errs, err)
		closers = append(closers, c)
	}
	t.llocks = nil
	if len(closers) > 0 {
		log := t.log
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

func (t *TCPDump) closeNS() {
	if t.ns.IsOpen() {
		t.ns.Close()
	}
	t.ns = netns.None()
}

// setInt sets an int socket option, naming it in the error.
func setInt(fd, level, opt, v int, name string) error {
	if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
		return fmt.Errorf("set %s=%d: %w", name, v, os.NewSyscallError("setsockopt", err))
	}
	return nil
}

// TCPRestore carries the re-created TCP connections of one restore from
// their creation (in repair mode) to their going live. Pass a fresh one in
// [RestoreOptions]; then exactly one of [TCPRestore.Live] (right before the
// process runs) or [TCPRestore.Abort] (after it was killed). Methods are
// no-ops on a nil TCPRestore or one without connections.
type TCPRestore struct {
	log  zerolog.Logger
	pid  int
	lock string // the held lock of the image, for this restore to remove
	// image is the image's held lock whatever lock is, and local says
	// the image (a lazy migration's, LockFor) comes from this boot and
	// has TCP listeners: in the process's network namespace, if it is
	// the original's, that held lock holds off the listeners the
	// process will serve on (the very sockets, taken over from the
	// frozen original: takeListener, or shared with a tree member that
	// took them), so Live removes its listeners.
	image string
	local bool
	ns    netns.NsHandle // the process's network namespace, opened while it lives
	// owned is the target's own lock of a lazy migration (LockFor), and
	// conns the 4-tuples it locks: a connection must come back on one of
	// them.
	owned *netlock.Lock
	conns []netlock.Conn
	// closeLater is the slow half of releasing owned (netlock.Lock.Open),
	// left for Finish once the process runs.
	closeLater func() error
	socks      []*tcpSock
	done       bool
	// made: a socket for one of the image's connections was created. A
	// restore that fails before (another fd refused, the stub gone)
	// leaves the held lock: the connections are intact in the image,
	// and a retry finds their peers waiting.
	made bool
}

// NewTCPRestore makes the TCP half of a restore.
func NewTCPRestore(log zerolog.Logger) *TCPRestore { return &TCPRestore{log: log, ns: netns.None()} }

// LockFor takes the target's own lock for the connections of table, in
// lazycr's network namespace, for a lazy migration from another host:
// before anything (netfix's address takeover) makes their local addresses
// live here, so that a peer's segment arriving before its socket is
// re-created is dropped, not answered with a reset. Its bound UDP sockets'
// ports too: the port unreachable errors answering datagrams that come
// before their sockets are dropped (netlock.UDPPort). Live and Abort
// release it (and the kernel, if lazycr dies: it is owner-bound).
func (t *TCPRestore) LockFor(table *pb.FdTable) error {
	if t == nil || t.owned != nil {
		return nil
	}
	var conns []netlock.Conn
	var listeners []netlock.Listener
	var udp []netlock.UDPPort
	for _, f := range table.GetFds() {
		s := f.GetInetSocket()
		if f.DupOf != nil {
			continue
		}
		if s.GetType() == unix.SOCK_DGRAM && s.Protocol == unix.IPPROTO_UDP && s.LocalPort != 0 {
			// A datagram that reaches the address once it is live here,
			// before the socket is bound again, would be answered with
			// a port unreachable, and a connected sender would fail
			// ECONNREFUSED: the error is dropped (netlock.UDPPort).
			a, err := netip.ParseAddr(s.LocalAddr)
			if err != nil {
				return fmt.Errorf("fd %d: local address %q: %w", f.Fd, s.LocalAddr, err)
			}
			udp = append(udp, netlock.UDPPort{Local: netip.AddrPortFrom(a, uint16(s.LocalPort)), V6Only: s.Options.GetIpv6Only()})
			continue
		}
		if s.GetListening() && s.Type == unix.SOCK_STREAM {
			l, err := lockListenerOf(s)
			if err != nil {
				return fmt.Errorf("fd %d: %w", f.Fd, err)
			}
			listeners = append(listeners, l)
			continue
		}
		if s.GetTcp() == nil {
			continue
		}
		c, err := lockConn(s)
		if err != nil {
			return fmt.Errorf("fd %d: %w", f.Fd, err)
		}
		conns = append(conns, c)
	}
	if len(conns) == 0 && len(listeners) == 0 && len(udp) == 0 {
		return nil
	}
	if len(listeners) > 0 {
		here, err := BootID()
		if err != nil {
			return err
		}
		t.local = table.BootId != "" && table.BootId == here
	}
	ns, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open lazycr's network namespace: %w", err)
	}
	defer ns.Close()
	// Listeners too: a SYN that reaches this host once the address is
	// here, before the restored listener listens, would be answered
	// with a reset; dropped, it is retransmitted and meets the listener.
	if t.owned, err = netlock.Acquire(ns, conns, netlock.Options{Log: t.log, Listeners: listeners, UDPPorts: udp}); err != nil {
		return err
	}
	t.conns = conns
	return nil
}

// begin records the process and the image's held lock, and opens the
// process's network namespace: Abort runs after the process is gone. With
// a lock of its own (LockFor) the image's held lock is the source host's
// business, not this restore's.
func (t *TCPRestore) begin(pid int, lock string) error {
	t.pid, t.lock, t.image = pid, lock, lock
	if t.owned != nil {
		t.lock = ""
	}
	if t.lock == "" || t.ns.IsOpen() {
		return nil
	}
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("open network namespace of pid %d: %w", pid, err)
	}
	t.ns = ns
	// Without its held lock (removed by `lazycr unlock`, or a restore in
	// another namespace) a peer that sent anything since the dump has
	// been answered with a reset: the connection is restored, and the
	// process will see the reset.
	if held, err := netlock.ListHeld(ns); err != nil || !slices.Contains(held, lock) {
		t.log.Warn().Err(err).Str("table", lock).Msg("the image's held network lock is not here: its TCP peers may have been reset since the dump")
	}
	return nil
}

// Live turns repair off on every re-created connection (which sends a
// window probe), gives each its final buffer sizes and SO_REUSEADDR, and
// then removes the image's held lock: the peers' packets reach the new
// sockets. Stale locks of crashed lazycr processes are swept on the way.
//
// The window probe of repair off goes out while the lock still drops
// every packet, so each connection then sends another one (reprobe): the
// peer answers a probe with an ACK of what it has and its window
// (tcp_send_window_probe sends snd_una - 1; RFC 9293 3.10.7.4), which
// otherwise the restored socket would only learn from its next
// retransmission. A restored socket has no RTT estimate (the repair-mode
// connect takes no sample), so its retransmission timer is the kernel's
// fallback, 3 s (tcp_init_metrics, TCP_TIMEOUT_FALLBACK): data the peer
// had received but whose ACK the lock dropped, or a window update it
// dropped, held the connection still that long.
func (t *TCPRestore) Live() error {
	if t == nil || t.done {
		return nil
	}
	t.done = true
	var errs []error
	for _, k := range t.socks {
		errs = append(errs, goLive(k))
	}
	err := errors.Join(errs...)
	if err == nil {
		err = t.unholdTaken()
	}
	if err == nil {
		err = t.unlock()
	}
	for _, k := range t.socks {
		if err == nil {
			err = reprobe(k)
		}
		unix.Close(k.fd)
		k.fd = -1
	}
	return err
}

// unholdTaken removes, for a lazy migration on the host of its source
// whose image has TCP listeners, the listeners of the image's held lock in
// the process's network namespace: the source locked them at the freeze,
// and in the original's namespace the process serves on the very sockets
// they hold off (taken over from the frozen original, takeListener). In
// another namespace there is no such lock here (the source removes its
// own after DONE). Called before the process runs: a connection that
// completes from here on waits in the taken socket's queue for the
// process.
func (t *TCPRestore) unholdTaken() error {
	if !t.local || t.image == "" {
		return nil
	}
	ns, err := netns.GetFromPid(t.pid)
	if err != nil {
		return fmt.Errorf("open network namespace of pid %d: %w", t.pid, err)
	}
	defer ns.Close()
	if err := netlock.UnholdListeners(ns, t.image, t.log); err != nil {
		return fmt.Errorf("release the source's lock of the listeners taken over: %w", err)
	}
	return nil
}

// reprobe makes the live socket k send a window probe: TCP_REPAIR on and
// off again (the process is not running yet, so nothing sees the moment
// in repair mode). Repair off resets sk_reuse: SO_REUSEADDR is set again.
func reprobe(k *tcpSock) error {
	errs := []error{setInt(k.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR")}
	if errs[0] == nil {
		errs = append(errs, setInt(k.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0, "TCP_REPAIR"))
		if o := k.s.Options; o != nil && o.Reuseaddr {
			errs = append(errs, setInt(k.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("socket fd %d (TCP connection %s): send a window probe: %w", k.num, connName(k.s), err)
	}
	return nil
}

// Finish closes what Live left open so as not to delay the resume (the
// socket of the target's own lock). Call it once the process runs. The
// close waits for an RCU grace period (10–30 ms, netlock.Lock.Open) and
// runs in the background, its error logged: a lazy migration's target
// tells the source RESUMED and starts serving the process's page faults
// only once the restore returns.
func (t *TCPRestore) Finish() error {
	if t == nil || t.closeLater == nil {
		return nil
	}
	f := t.closeLater
	t.closeLater = nil
	go func() {
		if err := f(); err != nil {
			t.log.Warn().Err(err).Msg("close the TCP lock's socket")
		}
	}()
	return nil
}

// goLive ends repair mode on one restored socket and sets what repair
// mode or the queue restore changed: SO_REUSEADDR, the buffer sizes and
// whether they are locked (SO_BUF_LOCK: an unlocked buffer keeps growing
// by TCP autotuning, as it did before the dump).
func goLive(k *tcpSock) error {
	s, st := k.s, k.s.Tcp
	errs := []error{setInt(k.fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0, "TCP_REPAIR")}
	k.repaired = false
	if o := s.Options; o != nil {
		if o.Reuseaddr {
			errs = append(errs, setInt(k.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"))
		}
		// The kernel doubles what is set; the record is the doubled value.
		if o.Sndbuf > 0 {
			errs = append(errs, setInt(k.fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, int(o.Sndbuf/2), "SO_SNDBUFFORCE"))
		}
		if o.Rcvbuf > 0 {
			errs = append(errs, setInt(k.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, int(o.Rcvbuf/2), "SO_RCVBUFFORCE"))
		}
	}
	errs = append(errs, setInt(k.fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK, int(st.BufLock), "SO_BUF_LOCK"))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("socket fd %d (TCP connection %s): %w", k.num, connName(s), err)
	}
	return nil
}

// Abort forgets the re-created connections after the process was killed:
// lazycr's copies are closed still in repair mode, so the kernel sends
// nothing. The held lock is removed too (the image's connections are lost:
// a peer's next segment now meets no socket and is answered with a reset),
// unless the restore failed before it created a socket for any of them:
// then the image's connections are intact, and the lock stays for the
// next restore.
func (t *TCPRestore) Abort() {
	if t == nil {
		return
	}
	defer t.Finish()
	if t.done {
		return
	}
	t.done = true
	for _, k := range t.socks {
		if k.fd >= 0 {
			unix.Close(k.fd)
			k.fd = -1
		}
	}
	if !t.made && t.owned == nil && t.lock != "" {
		t.log.Info().Str("table", t.lock).Msg("restore failed before re-creating the image's TCP connections: the held network lock stays for the next restore (lazycr unlock removes it)")
		t.ns.Close()
		t.ns = netns.None()
		return
	}
	if err := t.unlock(); err != nil {
		t.log.Warn().Err(err).Str("table", t.lock).Msg("remove held network lock after a failed restore")
	} else if t.lock != "" {
		t.log.Warn().Str("table", t.lock).Msg("restore failed: the held network lock is removed, the image's TCP connections are lost")
	}
}

// unlock removes the held lock (and sweeps stale ones) in the process's
// network namespace.
func (t *TCPRestore) unlock() error {
	if t.owned != nil {
		// Packets flow as soon as the table is gone; closing the lock's
		// socket waits for an RCU grace period and is left for Finish,
		// after the process runs.
		closeSocket, err := t.owned.Open()
		t.owned, t.closeLater = nil, closeSocket
		return err
	}
	if t.lock == "" {
		return nil
	}
	defer func() {
		t.ns.Close()
		t.ns = netns.None()
	}()
	// The held lock first: the peers' packets flow again as soon as its
	// delete is committed.
	err := netlock.RemoveHeld(t.ns, t.lock, t.log)
	if _, serr := netlock.Sweep(t.ns, t.log); serr != nil {
		t.log.Warn().Err(serr).Msg("sweep stale network locks")
	}
	return err
}

// tcpMaxBuf is what SO_SNDBUFFORCE/SO_RCVBUFFORCE get while the queues are
// restored: in repair mode the receive queue is restored as one linear skb
// per send(2) and must fit the receive buffer, the send queue the send
// buffer (CRIU does the same, restore_prepare_socket). Live sets the
// recorded sizes.
const tcpMaxBuf = 1 << 30

func (tcpConn) create(r *restorer, f *pb.Fd) (_ uintptr, err error) {
	s := f.GetInetSocket()
	st := s.Tcp
	if r.tcp == nil {
		return 0, fmt.Errorf("socket fd %d: TCP connection %s: this restore cannot re-create TCP connections", f.Fd, connName(s))
	}
	fins, ok := finsOf(st.State)
	if !ok {
		return 0, fmt.Errorf("socket fd %d: TCP connection %s in state %d in the image", f.Fd, connName(s), st.State)
	}
	if err := fins.check(st); err != nil {
		return 0, fmt.Errorf("socket fd %d: TCP connection %s in state %s in the image: %w", f.Fd, connName(s), tcpStates[uint8(st.State)], err)
	}
	if t := r.tcp; t.conns != nil {
		c, err := lockConn(s)
		if err != nil || !slices.Contains(t.conns, c) {
			return 0, fmt.Errorf("socket fd %d: TCP connection %s: its addresses changed since the dump (%v); a connection keeps its 4-tuple: use --net-policy takeover", f.Fd, connName(s), err)
		}
	}
	if int(st.OutqUnsent) > len(st.Outq) {
		return 0, fmt.Errorf("socket fd %d: %d unsent bytes of a %d-byte send queue in the image", f.Fd, st.OutqUnsent, len(st.Outq))
	}
	typ := uintptr(unix.SOCK_STREAM) | unix.SOCK_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := r.rem.Syscall(unix.SYS_SOCKET, uintptr(s.Family), typ, unix.IPPROTO_TCP)
	if err != nil {
		return 0, fmt.Errorf("create socket fd %d (TCP connection %s): %w", f.Fd, connName(s), err)
	}
	r.tcp.made = true
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create socket fd %d: %w", f.Fd, err)
	}
	local, err := r.getfd(fd)
	if err != nil {
		return 0, fmt.Errorf("socket fd %d: %w", f.Fd, err)
	}
	k := &tcpSock{fd: local, num: int(f.Fd), s: s}
	defer func() {
		if err != nil {
			unix.Close(local)
			return
		}
		r.tcp.socks = append(r.tcp.socks, k)
	}()
	if err := repairSocket(local, f.Fd, s, r.rawSocket); err != nil {
		return 0, fmt.Errorf("socket fd %d (TCP connection %s): %w", f.Fd, connName(s), err)
	}
	k.repaired = true
	return fd, nil
}

// rawSocket opens a raw socket in the process's network namespace: made
// by the process (a socket belongs to the namespace of its creator) and
// taken out with pidfd_getfd.
func (r *restorer) rawSocket(family int) (int, error) {
	fd, err := r.rem.Syscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return -1, fmt.Errorf("create raw socket: %w", err)
	}
	defer r.closeRemote(fd)
	return r.getfd(fd)
}

// repairSocket builds the connection of s on the fresh socket fd, in
// repair mode, which it leaves on; raw opens the raw sockets that put
// back the peer's FIN of a half-closed connection.
func repairSocket(fd int, num int32, s *pb.InetSocket, raw rawSocketFunc) error {
	st := s.Tcp
	fins, ok := finsOf(st.State)
	if !ok {
		return fmt.Errorf("%w: TCP state %d", ErrUnsupported, st.State)
	}
	if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
		return err
	}
	// Options first (IPV6_V6ONLY must precede bind); the buffers and
	// SO_REUSEADDR only at Live (repair off resets sk_reuse).
	o := proto.CloneOf(s.Options)
	if o != nil {
		o.Sndbuf, o.Rcvbuf, o.Reuseaddr = 0, 0, false
		o.More = slices.DeleteFunc(o.More, notForConnection)
	}
	if err := setSockopts(fd, num, &pb.InetSocket{Family: s.Family, Type: s.Type, Protocol: s.Protocol, Options: o}); err != nil {
		return err
	}
	if err := setInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, tcpMaxBuf, "SO_SNDBUFFORCE"); err != nil {
		return err
	}
	if err := setInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, tcpMaxBuf, "SO_RCVBUFFORCE"); err != nil {
		return err
	}
	// The sequence numbers are those of the start of each queue: the
	// kernel advances them as the queues are filled (the FINs later).
	recvStart, sendStart := fins.queueStarts(st)
	if err := setQueueSeq(fd, kabi.TCP_RECV_QUEUE, recvStart); err != nil {
		return err
	}
	if err := setQueueSeq(fd, kabi.TCP_SEND_QUEUE, sendStart); err != nil {
		return err
	}
	la, lap, err := sockaddrOf(s.Family, localAddrFor(s), s.LocalPort)
	if err != nil {
		return fmt.Errorf("local %w", err)
	}
	if err := unix.Bind(fd, la); err != nil {
		return fmt.Errorf("bind to %s: %w", lap, os.NewSyscallError("bind", err))
	}
	pa, pap, err := sockaddrOf(s.Family, s.PeerAddr, s.PeerPort)
	if err != nil {
		return fmt.Errorf("peer %w", err)
	}
	if err := unix.Connect(fd, pa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fmt.Errorf("connect to %s in repair mode: %w", pap, os.NewSyscallError("connect", err))
	}
	var opts []kabi.TCPRepairOpt
	if st.Options&kabi.TCPI_OPT_SACK != 0 {
		opts = append(opts, kabi.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if st.Options&kabi.TCPI_OPT_WSCALE != 0 {
		opts = append(opts, kabi.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: st.SndWscale | st.RcvWscale<<16})
	}
	if st.Options&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		opts = append(opts, kabi.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	opts = append(opts, kabi.TCPRepairOpt{Code: unix.TCPOPT_MAXSEG, Val: st.MssClamp})
	if err := kabi.SetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, kabi.EncodeTCPRepairOpts(opts)); err != nil {
		return fmt.Errorf("set TCP_REPAIR_OPTIONS: %w", err)
	}
	if st.Options&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		// The timestamp clock continues from the dumped one (tsoffset).
		if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(st.Timestamp), "TCP_TIMESTAMP"); err != nil {
			return err
		}
	}
	if len(st.Inq) > 0 {
		if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE"); err != nil {
			return err
		}
		if err := sendAll(fd, st.Inq); err != nil {
			return fmt.Errorf("restore receive queue: %w", err)
		}
	}
	sent := st.Outq[:len(st.Outq)-int(st.OutqUnsent)]
	if len(sent) > 0 {
		// Sent but unacknowledged: restored as sent, so that the peer's
		// acknowledgements match and the retransmit timer covers them.
		if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE"); err != nil {
			return err
		}
		if err := sendAll(fd, sent); err != nil {
			return fmt.Errorf("restore send queue: %w", err)
		}
	}
	var window kabi.TCPRepairWindow
	if w := st.Window; w != nil {
		window = kabi.TCPRepairWindow{SndWl1: w.SndWl1, SndWnd: w.SndWnd, MaxWindow: w.MaxWindow, RcvWnd: w.RcvWnd, RcvWup: w.RcvWup}
		if err := setWindow(fd, fins.window(window, recvStart+uint32(len(st.Inq)))); err != nil {
			return err
		}
	}
	if unsent := st.Outq[len(sent):]; len(unsent) > 0 {
		// Never sent: an ordinary send, with repair off for it (the lock
		// drops what goes out now; it is retransmitted once live).
		if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0, "TCP_REPAIR"); err != nil {
			return err
		}
		if err := sendAll(fd, unsent); err != nil {
			return fmt.Errorf("restore unsent data: %w", err)
		}
		if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1, "TCP_REPAIR"); err != nil {
			return err
		}
	}
	if fins.ours || fins.peers {
		lap, pap, err := connEnds(s)
		if err != nil {
			return err
		}
		if err := restoreFins(fd, st, lap, pap, raw); err != nil {
			return err
		}
	}
	if st.Window != nil && (st.OutqUnsent > 0 || fins.ours || fins.peers) {
		// What went out since the window was set (the unsent tail and an
		// unsent FIN, tried and dropped by the lock; the socket's ACK of
		// the peer's FIN) advertised a window from the repair-time
		// buffers (tcp_select_window moves rcv_wup and rcv_wnd), and the
		// injected segments moved snd_wl1 (and, acknowledging our FIN,
		// snd_wnd): the dumped window again, valid now that rcv_nxt is
		// past the peer's FIN.
		if err := setWindow(fd, window); err != nil {
			return err
		}
	}
	if s.Shutdown&1 != 0 && !fins.peers {
		// shutdown(SHUT_RD) only marks the receive side (inet_shutdown;
		// tcp_shutdown acts on SEND_SHUTDOWN only).
		if err := unix.Shutdown(fd, unix.SHUT_RD); err != nil {
			return fmt.Errorf("restore shutdown(SHUT_RD): %w", os.NewSyscallError("shutdown", err))
		}
	}
	return setTCPOpts(fd, st)
}

// connEnds returns the local and peer ends of s as they are on the wire
// (an IPv4 peer of an IPv6 socket as IPv4).
func connEnds(s *pb.InetSocket) (local, peer netip.AddrPort, err error) {
	l, err := netip.ParseAddr(localAddrFor(s))
	if err != nil {
		return local, peer, fmt.Errorf("local address %q: %w", localAddrFor(s), err)
	}
	p, err := netip.ParseAddr(s.PeerAddr)
	if err != nil {
		return local, peer, fmt.Errorf("peer address %q: %w", s.PeerAddr, err)
	}
	return netip.AddrPortFrom(l.Unmap(), uint16(s.LocalPort)), netip.AddrPortFrom(p.Unmap(), uint16(s.PeerPort)), nil
}

// setWindow sets TCP_REPAIR_WINDOW.
func setWindow(fd int, w kabi.TCPRepairWindow) error {
	if err := kabi.SetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, w.Encode()); err != nil {
		return fmt.Errorf("set TCP_REPAIR_WINDOW: %w", err)
	}
	return nil
}

// notForConnection: an option of the generic table (sockopts.go) that a
// re-created connection does not take through setsockopt. The MSS is the
// repair option's (TCP_MAXSEG reads mss_cache, which may exceed what
// setsockopt accepts, MAX_TCP_WINDOW); window_clamp is derived by the
// kernel; listener-only options; and multicast options, which stream
// sockets refuse (EINVAL, ENOPROTOOPT) while reading derived values back.
func notForConnection(m *pb.IntSockopt) bool {
	switch m.Level {
	case unix.IPPROTO_TCP:
		switch m.Name {
		case unix.TCP_MAXSEG, unix.TCP_WINDOW_CLAMP, unix.TCP_DEFER_ACCEPT, unix.TCP_FASTOPEN:
			return true
		}
	case unix.IPPROTO_IP:
		switch m.Name {
		case unix.IP_MULTICAST_TTL, unix.IP_MULTICAST_LOOP, unix.IP_MULTICAST_ALL:
			return true
		}
	case unix.IPPROTO_IPV6:
		switch m.Name {
		case unix.IPV6_MULTICAST_HOPS, unix.IPV6_MULTICAST_LOOP, unix.IPV6_MULTICAST_IF, unix.IPV6_MULTICAST_ALL:
			return true
		}
	}
	return false
}

func setQueueSeq(fd, queue int, seq uint32) error {
	if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue, "TCP_REPAIR_QUEUE"); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(seq))); err != nil {
		return fmt.Errorf("set TCP_QUEUE_SEQ of queue %d to %d: %w", queue, seq, os.NewSyscallError("setsockopt", err))
	}
	return nil
}

// sendAll writes b in chunks; a chunk the kernel refuses is halved down to
// 1 KiB (a repair-mode receive queue is one linear skb per send, which can
// fail ENOMEM when large; CRIU's __send_queue).
func sendAll(fd int, b []byte) error {
	chunk := len(b)
	for len(b) > 0 {
		n, err := unix.SendmsgN(fd, b[:min(chunk, len(b))], nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err != nil || n <= 0 {
			if chunk > 1024 {
				chunk /= 2
				continue
			}
			if err == nil {
				err = errors.New("sent nothing")
			}
			return fmt.Errorf("send %d bytes: %w", min(chunk, len(b)), os.NewSyscallError("sendmsg", err))
		}
		b = b[n:]
	}
	return nil
}

// setTCPOpts sets the recorded TCP-level options where the fresh socket
// differs.
func setTCPOpts(fd int, st *pb.TcpStream) error {
	var errs []error
	setDiff := func(level, opt int, name string, want int32) {
		have, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", name, os.NewSyscallError("getsockopt", err)))
			return
		}
		if int32(have) != want {
			errs = append(errs, setInt(fd, level, opt, int(want), name))
		}
	}
	b := func(v bool) int32 {
		if v {
			return 1
		}
		return 0
	}
	setDiff(unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY", b(st.Nodelay))
	setDiff(unix.IPPROTO_TCP, unix.TCP_CORK, "TCP_CORK", b(st.Cork))
	setDiff(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", st.Keepidle)
	setDiff(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", st.Keepintvl)
	setDiff(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT", st.Keepcnt)
	setDiff(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", st.UserTimeout)
	setDiff(unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", st.NotsentLowat)
	setDiff(unix.IPPROTO_TCP, unix.TCP_LINGER2, "TCP_LINGER2", st.Linger2)
	// window_clamp is recorded, not set: the kernel derives it from the
	// buffers unless the process set it, and the two cannot be told apart.
	if st.Congestion != "" {
		have, err := unix.GetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err == nil && have != st.Congestion {
			err = unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, st.Congestion)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("set TCP_CONGESTION=%s: %w", st.Congestion, os.NewSyscallError("setsockopt", err)))
		}
	}
	return errors.Join(errs...)
}
