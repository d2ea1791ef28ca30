package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// unixSocket is an AF_UNIX socket (unix(7)), stream, seqpacket or
// datagram. This file holds the kind and the unnamed connected pairs
// (socketpair(2)) whose both ends are the process's: asyncio's self-pipe,
// a worker's control channel. Restore makes a new pair, writes back the
// stream bytes each end had waiting to be read, and gives both ends their
// shutdown state and options. Listeners, the connections accepted from
// them or waiting in their queue, and bound or unconnected sockets are in
// unixlisten.go, peers outside the dump in unixext.go, queued datagrams
// and seqpacket messages in unixmsg.go, the take-over of a lazy
// migration on the same host in unixtake.go. Refused: queued file
// descriptors (SCM_RIGHTS) or credentials boundaries, and SO_PEEK_OFF or
// SO_PASSSEC set. In a tree, the peer may be another member's (nginx's
// master holds both ends of each worker's channel, the worker shares one
// end's description); a pair split across members (socketpair then fork)
// is made by restore/tree.go with ConfigurePair, and unixlisten.go refuses
// a listener's connections held by another member.
type unixSocket struct{}

func (unixSocket) name() string { return "unix" }

func (unixSocket) claims(l *liveFd) bool {
	if l.link != proc.KindSocket {
		return false
	}
	d, err := unix.GetsockoptInt(l.local, unix.SOL_SOCKET, unix.SO_DOMAIN)
	return err == nil && d == unix.AF_UNIX
}

// refuseUnix is the dump's refusal of a unix socket it cannot record.
func refuseUnix(format string, args ...any) error {
	return fmt.Errorf("%w: fd kind unix socket: "+format, append([]any{ErrUnsupported}, args...)...)
}

func (unixSocket) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	fd := l.local
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("read SO_TYPE of socket:[%d]: %w", l.ino, os.NewSyscallError("getsockopt", err))
	}
	if d.unixDiag == nil {
		if err := d.loadUnixDiag(); err != nil {
			return fmt.Errorf("read the state of socket:[%d]: %w", l.ino, err)
		}
	}
	diag, err := d.unixDiagOf(l)
	if err != nil {
		return err
	}
	for _, o := range []struct {
		opt  int
		what string
		def  int
	}{{unix.SO_PEEK_OFF, "SO_PEEK_OFF", -1}, {unix.SO_PASSSEC, "SO_PASSSEC", 0}} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt)
		if err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
			return fmt.Errorf("read %s of socket:[%d]: %w", o.what, l.ino, os.NewSyscallError("getsockopt", err))
		}
		if err == nil && v != o.def {
			return refuseUnix("socket:[%d] has %s %d", l.ino, o.what, v)
		}
	}
	s := &pb.UnixSocket{Inode: l.ino, Peer: diag.peer, Type: int32(typ), Shutdown: uint32(diag.shutdown)}
	if diag.named {
		s.Name = []byte(diag.name)
	}
	var errs []error
	geti := func(opt int, what string) int {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s of socket:[%d]: %w", what, l.ino, os.NewSyscallError("getsockopt", err)))
		}
		return v
	}
	s.Sndbuf = int32(geti(unix.SO_SNDBUF, "SO_SNDBUF"))
	s.Rcvbuf = int32(geti(unix.SO_RCVBUF, "SO_RCVBUF"))
	s.Passcred = geti(unix.SO_PASSCRED, "SO_PASSCRED") != 0
	for _, t := range []struct {
		opt  int
		what string
		dst  *int64
	}{{unix.SO_RCVTIMEO, "SO_RCVTIMEO", &s.RcvtimeoUs}, {unix.SO_SNDTIMEO, "SO_SNDTIMEO", &s.SndtimeoUs}} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s of socket:[%d]: %w", t.what, l.ino, os.NewSyscallError("getsockopt", err)))
			continue
		}
		*t.dst = tv.Sec*1e6 + tv.Usec
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	switch {
	case diag.listening():
		err = d.dumpUnixListener(l, diag, s) // unixlisten.go
	case diag.peer != 0 && !d.holdsSocket(diag.peer) && !d.opts.TreeSockets[diag.peer]:
		err = d.dumpUnixExternal(l, diag, s) // unixext.go
	case diag.peer != 0:
		err = d.dumpUnixConnected(l, diag, s)
	case diag.state == tcpEstablished && typ != unix.SOCK_DGRAM:
		// A connected stream socket without a peer inode. (A datagram
		// socket others connected to is TCP_ESTABLISHED too:
		// unix_dgram_connect marks both.)
		err = d.dumpUnixPending(l, diag, s) // unixlisten.go
	case diag.state == tcpEstablished:
		// A datagram socket connected to one that is gone, or one that
		// others connected to (unixdead.go tells them apart).
		err = d.dumpUnixDeadPeer(l, diag, s)
	default:
		err = d.dumpUnixUnconnected(l, diag, s) // unixlisten.go
	}
	if err != nil {
		return err
	}
	if diag.listening() || diag.state == tcpEstablished {
		c, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			return fmt.Errorf("read SO_PEERCRED of socket:[%d]: %w", l.ino, os.NewSyscallError("getsockopt", err))
		}
		s.PeerCred = &pb.UnixCred{Pid: c.Pid, Uid: c.Uid, Gid: c.Gid}
	}
	if !s.Listening && s.External == nil { // a client end outside has none (reconnectable), a server end's is dropped with it
		if typ == unix.SOCK_STREAM {
			s.Data, err = peekUnix(fd, typ, l.ino)
		} else {
			s.Messages, err = d.peekUnixMessages(l, diag, s) // unixmsg.go
		}
		if err != nil {
			return err
		}
	}
	out.Kind = &pb.Fd_UnixSocket{UnixSocket: s}
	return nil
}

// loadUnixDiag reads sock_diag's view of the unix sockets: those of the
// process's network namespace and of every other network namespace one
// of the process's unix sockets belongs to (after a lazy migration
// between network namespaces of one host, the original's path listener
// and its group are taken over: unixtake.go), so that a socket finds its
// listener or peer whatever the order of the fds.
func (d *dumper) loadUnixDiag() error {
	m, err := unixSockets(d.pid)
	if err != nil {
		return err
	}
	d.unixDiag = m
	for _, f := range d.fds {
		k, _, ino := proc.Kind(f.Target)
		if _, ok := d.unixDiag[ino]; ok || k != proc.KindSocket {
			continue
		}
		local, err := unix.PidfdGetfd(d.pidfd, f.Num, 0)
		if err != nil {
			continue // the fd's own dump says why
		}
		if dom, err := unix.GetsockoptInt(local, unix.SOL_SOCKET, unix.SO_DOMAIN); err == nil && dom == unix.AF_UNIX {
			err = d.addUnixDiagOf(local, ino)
		}
		unix.Close(local)
		if err != nil {
			return err
		}
	}
	return nil
}

// addUnixDiagOf adds the unix sockets of the network namespace of the
// socket sock (socket:[ino], not in the process's) to d.unixDiag.
func (d *dumper) addUnixDiagOf(sock int, ino uint64) error {
	m, ns, err := unixSocketsOf(sock)
	if err != nil {
		return fmt.Errorf("socket:[%d] is not in the network namespace of pid %d, and sock_diag of its own (net:[%d]) cannot be read: %w", ino, d.pid, ns, err)
	}
	if _, ok := m[ino]; !ok {
		return fmt.Errorf("sock_diag lists socket:[%d] neither in the network namespace of pid %d nor in its own (net:[%d])", ino, d.pid, ns)
	}
	for i, u := range m {
		if _, ok := d.unixDiag[i]; !ok {
			d.unixDiag[i] = u
		}
	}
	d.opts.Log.Debug().Uint64("socket", ino).Uint64("netns", ns).
		Msgf("socket:[%d] is in network namespace net:[%d], not the process's: its unix sockets read there", ino, ns)
	return nil
}

// unixDiagOf returns what sock_diag says about l's socket, in the
// process's network namespace or in its own (loadUnixDiag). A path socket of
// another namespace is restored in the process's, as the lazy migration
// took it: it is reached through the filesystem from every network
// namespace (unix(7)). An abstract name is not (it belongs to a network
// namespace): refused.
func (d *dumper) unixDiagOf(l *liveFd) (unixDiag, error) {
	diag, ok := d.unixDiag[l.ino]
	if !ok {
		// Not listed at the start: a socket the process got since.
		if err := d.addUnixDiagOf(l.local, l.ino); err != nil {
			return diag, fmt.Errorf("read the state of socket:[%d]: %w", l.ino, err)
		}
		diag = d.unixDiag[l.ino]
	}
	if diag.named && strings.HasPrefix(diag.name, "\x00") {
		if err := sameNetns(l.local, d.pid); err != nil {
			return diag, refuseUnix("socket:[%d] has the abstract name %s, which belongs to another network namespace than the process's (%v): a restore would bind it in the process's", l.ino, unixName([]byte(diag.name)), err)
		}
	}
	return diag, nil
}

// dumpUnixConnected records a socket connected to a peer the dump holds:
// an unnamed pair, or a connection accepted from a listener of the dump
// (its accepted end has the listener's name, unix_stream_connect copies
// it), or a datagram socket connected to a bound one.
func (d *dumper) dumpUnixConnected(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	peerDiag, ok := d.unixDiag[diag.peer]
	if !ok {
		return refuseUnix("socket:[%d]'s peer socket:[%d] is not listed by sock_diag", l.ino, diag.peer)
	}
	if s.Type == unix.SOCK_DGRAM {
		if peerDiag.peer != l.ino && !peerDiag.named {
			return refuseUnix("socket:[%d] is connected to socket:[%d], which is neither named nor connected back to it", l.ino, diag.peer)
		}
		return nil
	}
	if peerDiag.peer != l.ino {
		return refuseUnix("socket:[%d]'s peer socket:[%d] is not connected back to it", l.ino, diag.peer)
	}
	switch {
	case !diag.named && !peerDiag.named:
		return nil // a pair
	case diag.named && !peerDiag.named:
		if d.selfConnected(diag, l.ino, diag.peer) { // unixlisten.go
			s.Accepted, s.SelfConnected = true, true
			return nil
		}
		ln, err := d.unixListenerOf(l.ino, diag)
		if err != nil {
			return err
		}
		s.Listener, s.Accepted = ln, true
		return nil
	case !diag.named && peerDiag.named:
		if d.selfConnected(peerDiag, diag.peer, l.ino) {
			s.SelfConnected = true
			return nil
		}
		ln, err := d.unixListenerOf(diag.peer, peerDiag)
		if err != nil {
			return err
		}
		s.Listener = ln
		return nil
	}
	return refuseUnix("socket:[%d] is bound to %s and connected to socket:[%d] named %s (a bound client)", l.ino, unixName(s.Name), diag.peer, unixName([]byte(peerDiag.name)))
}

// holdsSocket reports whether socket:[ino] is one of the process's fds.
func (d *dumper) holdsSocket(ino uint64) bool {
	for _, f := range d.fds {
		if k, _, i := proc.Kind(f.Target); k == proc.KindSocket && i == ino {
			return true
		}
	}
	return false
}

// peekUnix returns the bytes waiting to be read at a unix socket without
// consuming them (MSG_PEEK). A stream socket's bytes are taken whole; a
// datagram or seqpacket socket with anything queued is refused (its
// message boundaries are not carried), and so is a queue holding file
// descriptors or a credentials boundary (the peek then stops short or
// brings control messages, unix(7)); such a state is often passing.
func peekUnix(fd, typ int, ino uint64) ([]byte, error) {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("read the queue length of socket:[%d]: %w", ino, os.NewSyscallError("ioctl SIOCINQ", err))
	}
	if n == 0 {
		return nil, nil
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("%w: %w: fd kind unix socket: socket:[%d] has %d bytes of messages queued", ErrUnsupported, ErrTransient, ino, n)
	}
	buf := make([]byte, n)
	oob := make([]byte, unix.CmsgSpace(64*4))
	got, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("peek at socket:[%d]: %w", ino, os.NewSyscallError("recvmsg", err))
	}
	if oobn > 0 {
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if fds, err := unix.ParseUnixRights(&m); err == nil {
					for _, f := range fds {
						unix.Close(f) // the peek gave lazycr copies
					}
				}
			}
		}
		return nil, fmt.Errorf("%w: %w: fd kind unix socket: socket:[%d] has file descriptors or credentials queued", ErrUnsupported, ErrTransient, ino)
	}
	if got != n {
		return nil, fmt.Errorf("%w: %w: fd kind unix socket: socket:[%d]: a peek read %d of %d queued bytes (a message boundary)", ErrUnsupported, ErrTransient, ino, got, n)
	}
	return buf, nil
}

func (unixSocket) owns(f *pb.Fd) bool { return f.GetUnixSocket() != nil }

func (unixSocket) show(f *pb.Fd) string {
	s := f.GetUnixSocket()
	t := map[int32]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket"}[s.Type]
	d := fmt.Sprintf("unix %s socket:[%d]", t, s.Inode)
	switch {
	case s.Listening:
		d += fmt.Sprintf(" listening on %s, backlog %d", unixName(s.Name), s.Backlog)
		if len(s.Pending) > 0 {
			d += fmt.Sprintf(", %d connections waiting", len(s.Pending))
		}
		if len(s.PendingExternal) > 0 {
			d += fmt.Sprintf(", %d from outside the dump waiting", len(s.PendingExternal))
		}
	case s.PeerClosed:
		d += fmt.Sprintf(" connected to %s, which has closed", unixName(s.DeadPeerName))
	case s.External != nil && s.Accepted:
		d += fmt.Sprintf(" accepted on %s from socket:[%d] outside the dump (held by pids %v)", unixName(s.Name), s.External.Inode, s.External.Pids)
	case s.External != nil:
		d += fmt.Sprintf(" connected to %s (socket:[%d] outside the dump, held by pids %v)", unixName(s.External.Name), s.External.Inode, s.External.Pids)
	case s.SelfConnected && s.Accepted:
		d += fmt.Sprintf(" accepted from %s (a listener not in the image), peer socket:[%d]", unixName(s.Name), s.Peer)
	case s.SelfConnected:
		d += fmt.Sprintf(" connected to socket:[%d] accepted from a listener not in the image", s.Peer)
	case s.Accepted:
		d += fmt.Sprintf(" accepted from %s (socket:[%d]), peer socket:[%d]", unixName(s.Name), s.Listener, s.Peer)
	case s.Listener != 0 && s.Peer == 0:
		d += fmt.Sprintf(" waiting in the queue of socket:[%d]", s.Listener)
	case s.Listener != 0:
		d += fmt.Sprintf(" connected to socket:[%d] accepted from socket:[%d]", s.Peer, s.Listener)
	case s.Peer != 0 && len(s.Name) == 0 && s.Type != unix.SOCK_DGRAM:
		d += fmt.Sprintf(" pair with socket:[%d]", s.Peer)
	default:
		if len(s.Name) > 0 {
			d += " bound to " + unixName(s.Name)
		}
		if s.Peer != 0 {
			d += fmt.Sprintf(" connected to socket:[%d]", s.Peer)
		} else if len(s.Name) == 0 {
			d += " unconnected"
		}
	}
	if len(s.Data) > 0 {
		d += fmt.Sprintf(", %d bytes waiting", len(s.Data))
	}
	if len(s.Messages) > 0 {
		d += fmt.Sprintf(", %d messages waiting", len(s.Messages))
	}
	if s.Shutdown != 0 {
		d += fmt.Sprintf(", shutdown %d", s.Shutdown)
	}
	if s.Passcred {
		d += ", passcred"
	}
	return d
}

// unixName prints a socket name: a path as it is, an abstract name as @
// and its bytes (quoted where not printable), unix(7)'s notation.
func unixName(name []byte) string {
	switch {
	case len(name) == 0:
		return "(unnamed)"
	case name[0] == 0:
		q := strconv.Quote(string(name[1:]))
		if q[1:len(q)-1] == string(name[1:]) {
			return "@" + string(name[1:])
		}
		return "@" + q
	}
	return string(name)
}

// unixRestore is the unix sockets of one Restore run: every image record
// by inode (the first fd of each description) and the sockets made so
// far, at their temporary numbers. Sockets that are made together (a
// pair, a listener with its connections) are made when the first of them
// is needed.
type unixRestore struct {
	byIno map[uint64]*pb.Fd
	made  map[uint64]uintptr
	taken map[uint64]bool // taken over from the frozen original (unixtake.go), complete as they are
}

// unixSockets returns the restore's unix sockets state.
func (r *restorer) unixState() *unixRestore {
	if r.usocks == nil {
		r.usocks = &unixRestore{byIno: map[uint64]*pb.Fd{}, made: map[uint64]uintptr{}, taken: map[uint64]bool{}}
	}
	return r.usocks
}

// isPair: s is one end of an unnamed pair (socketpair(2)).
func isPair(s *pb.UnixSocket) bool {
	return s.Peer != 0 && s.Listener == 0 && !s.Listening && s.External == nil && len(s.Name) == 0 && len(s.Pending) == 0 && !s.SelfConnected
}

// unixPair is one socket pair at restore: the image fds of each end.
type unixPair struct {
	ends   [2][]*pb.Fd // by inode: ends[0] the lower
	inodes [2]uint64
	made   bool
	fds    [2]uintptr // temporary numbers in the process
}

func pairKey(s *pb.UnixSocket) (uint64, int) {
	if s.Inode < s.Peer {
		return s.Inode, 0
	}
	return s.Peer, 1
}

func (unixSocket) prepare(r *restorer, f *pb.Fd) {
	s := f.GetUnixSocket()
	u := r.unixState()
	if _, ok := u.byIno[s.Inode]; !ok {
		u.byIno[s.Inode] = f
	}
	if !isPair(s) {
		return
	}
	key, i := pairKey(s)
	p := r.pairs[key]
	if p == nil {
		p = &unixPair{}
		r.pairs[key] = p
	}
	p.ends[i] = append(p.ends[i], f)
	p.inodes[i] = s.Inode
}

func (unixSocket) create(r *restorer, f *pb.Fd) (uintptr, error) {
	s := f.GetUnixSocket()
	u := r.unixState()
	if fd, ok := u.made[s.Inode]; ok {
		return fd, nil
	}
	switch {
	case s.External != nil:
		return r.makeUnixExternal(f) // unixext.go
	case s.PeerClosed:
		return r.makeUnixDeadPeer(f) // unixdead.go
	case s.SelfConnected:
		if err := r.makeUnixSelfConnected(f); err != nil { // unixtake.go
			return 0, err
		}
	case s.Listening:
		if err := r.makeUnixListener(s.Inode); err != nil { // unixlisten.go
			return 0, err
		}
	case s.Listener != 0:
		if err := r.makeUnixListener(s.Listener); err != nil {
			return 0, err
		}
	case isPair(s) && s.Type != unix.SOCK_DGRAM, isPair(s) && r.isDgramPair(s):
		key, i := pairKey(s)
		p := r.pairs[key]
		if !p.made {
			if err := r.makePair(p); err != nil {
				return 0, err
			}
		}
		return p.fds[i], nil
	default:
		return r.makeUnixSingle(f) // unixlisten.go
	}
	fd, ok := u.made[s.Inode]
	if !ok {
		return 0, fmt.Errorf("fd %d: unix socket:[%d] was not made with its listener socket:[%d]", f.Fd, s.Inode, s.Listener)
	}
	return fd, nil
}

// isDgramPair: datagram socket s and its peer are connected to each other
// and both unnamed, as socketpair(2) makes them.
func (r *restorer) isDgramPair(s *pb.UnixSocket) bool {
	pf := r.unixState().byIno[s.Peer]
	if pf == nil {
		return true // makePair names the missing peer
	}
	ps := pf.GetUnixSocket()
	return ps.Peer == s.Inode && len(ps.Name) == 0
}

// makePair creates the socket pair in the process (non-blocking while
// lazycr writes the queued bytes; each end then gets its recorded flags
// from the generic flag step), then options, data and shutdown states
// (fillPair).
func (r *restorer) makePair(p *unixPair) error {
	p.made = true
	for i := range p.ends {
		if len(p.ends[i]) == 0 {
			other := p.ends[1-i][0]
			return fmt.Errorf("fd %d: unix socket:[%d]'s peer socket:[%d] is not in the image", other.Fd, other.GetUnixSocket().Inode, other.GetUnixSocket().Peer)
		}
	}
	s0, s1 := p.ends[0][0].GetUnixSocket(), p.ends[1][0].GetUnixSocket()
	what := fmt.Sprintf("unix socket pair of fds %d and %d", p.ends[0][0].Fd, p.ends[1][0].Fd)
	if s0.Type != s1.Type {
		return fmt.Errorf("%s: types %d and %d differ in the image", what, s0.Type, s1.Type)
	}
	addr, err := r.rem.Put(scratchArgs, make([]byte, 8))
	if err != nil {
		return err
	}
	if _, err := r.rem.Syscall(unix.SYS_SOCKETPAIR, unix.AF_UNIX, uintptr(s0.Type)|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, addr); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	a, b, err := r.pair()
	if err != nil {
		return err
	}
	if p.fds[0], err = r.moveHigh(a); err != nil {
		r.closeRemote(b)
		return fmt.Errorf("create %s: %w", what, err)
	}
	if p.fds[1], err = r.moveHigh(b); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	return r.fillPair([2]*pb.Fd{p.ends[0][0], p.ends[1][0]}, p.fds, what)
}

// fillPair gives the two connected ends fds (image records ends) their
// options, the stream bytes waiting at each (written into the other), and
// their shutdown states. Shutdown is applied after the data and on both
// ends: unix_shutdown also marks the peer (SEND on one end is RCV on the
// other), and the recorded states already contain what each end's
// shutdown gave the other, so applying both gives both exactly.
func (r *restorer) fillPair(ends [2]*pb.Fd, fds [2]uintptr, what string) error {
	var local [2]int
	var err error
	for i := range local {
		if local[i], err = r.getfd(fds[i]); err != nil {
			if i == 1 {
				unix.Close(local[0])
			}
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	defer unix.Close(local[0])
	defer unix.Close(local[1])
	return ConfigurePair(local, ends, what)
}

// ConfigurePair gives a fresh socket pair (lazycr's fds local, of a pair
// made non-blocking) the state of image fds ends: options, the bytes or
// messages waiting at each end (written into the other), then the
// shutdown states. restore/tree.go's split pairs use it too.
func ConfigurePair(local [2]int, ends [2]*pb.Fd, what string) error {
	socks := [2]*pb.UnixSocket{ends[0].GetUnixSocket(), ends[1].GetUnixSocket()}
	for i, s := range socks {
		if err := setUnixOpts(local[i], ends[i].Fd, s); err != nil {
			return err
		}
	}
	for i, s := range socks {
		if err := writeStream(local[1-i], s.Data, fmt.Sprintf("fd %d (%s)", ends[i].Fd, what)); err != nil {
			return err
		}
	}
	for i, s := range socks {
		if err := sendUnixMessages(local[1-i], nil, s.Messages, ends[i].Fd); err != nil { // unixmsg.go
			return err
		}
	}
	for i, s := range socks {
		if err := shutdownUnix(local[i], ends[i].Fd, s); err != nil {
			return err
		}
	}
	return nil
}

// writeStream writes data, the bytes waiting at where, into its peer fd.
func writeStream(fd int, data []byte, where string) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write %d bytes waiting at %s: %w", len(data), where, os.NewSyscallError("write", err))
		}
		data = data[n:]
	}
	return nil
}

// shutdownUnix applies the recorded sk_shutdown of s to fd (image fd num).
func shutdownUnix(fd int, num int32, s *pb.UnixSocket) error {
	how := -1
	switch s.Shutdown {
	case 0:
	case 1:
		how = unix.SHUT_RD
	case 2:
		how = unix.SHUT_WR
	case 3:
		how = unix.SHUT_RDWR
	default:
		return fmt.Errorf("fd %d: shutdown state %#x in the image", num, s.Shutdown)
	}
	if how >= 0 {
		if err := unix.Shutdown(fd, how); err != nil {
			return fmt.Errorf("shut down fd %d (how %d): %w", num, how, os.NewSyscallError("shutdown", err))
		}
	}
	return nil
}

// setUnixOpts gives one end its buffer sizes (the kernel doubles what is
// set, the image has the doubled value; socket(7)) and SO_PASSCRED, where
// they differ from the fresh socket's.
func setUnixOpts(fd int, num int32, s *pb.UnixSocket) error {
	for _, o := range []struct {
		opt  int
		what string
		want int
		set  int
	}{
		{unix.SO_SNDBUF, "SO_SNDBUF", int(s.Sndbuf), int(s.Sndbuf / 2)},
		{unix.SO_RCVBUF, "SO_RCVBUF", int(s.Rcvbuf), int(s.Rcvbuf / 2)},
		{unix.SO_PASSCRED, "SO_PASSCRED", b2i(s.Passcred), b2i(s.Passcred)},
	} {
		have, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, o.opt)
		if err != nil {
			return fmt.Errorf("read %s of fd %d: %w", o.what, num, os.NewSyscallError("getsockopt", err))
		}
		if have == o.want || (o.opt != unix.SO_PASSCRED && o.want <= 0) {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.set); err != nil {
			return fmt.Errorf("set %s=%d on fd %d: %w", o.what, o.set, num, os.NewSyscallError("setsockopt", err))
		}
	}
	for _, t := range []struct {
		opt  int
		what string
		us   int64
	}{{unix.SO_RCVTIMEO, "SO_RCVTIMEO", s.RcvtimeoUs}, {unix.SO_SNDTIMEO, "SO_SNDTIMEO", s.SndtimeoUs}} {
		if t.us <= 0 {
			continue
		}
		tv := unix.NsecToTimeval(t.us * 1000)
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt, &tv); err != nil {
			return fmt.Errorf("set %s=%dµs on fd %d: %w", t.what, t.us, num, os.NewSyscallError("setsockopt", err))
		}
	}
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
