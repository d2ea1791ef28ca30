package files

import (
	"errors"
	"fmt"
	"os"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Unix sockets whose peer has closed: a client whose server went away
// (the bytes it sent before closing still unread, then EOF), a datagram
// socket connected to one that is gone (its next send fails
// ECONNREFUSED, unix_dgram_sendmsg). The socket keeps a pointer to the
// dead peer, so getpeername(2) still names it (unix_getname). Restore
// makes the same state: a peer made for the purpose, with the dead one's
// name, to which the socket connects, that sends what was unread and is
// closed (a temporary listener, accepted from, for a stream socket); a
// path peer's file is removed again. When the name is taken here (the
// server lives on and only closed this connection, a restarted server, a
// stale file) the peer is made under a temporary abstract name instead:
// only getpeername(2) then differs (makeUnixDeadPeer).
// (The dump reads the name with x/sys/unix's Getpeername, which cuts an
// abstract name at a NUL byte inside it.)

// dumpUnixDeadPeer records a connected socket whose peer has closed; a
// datagram socket that getpeername(2) finds unconnected is an unconnected
// one (others connected to it: unix_dgram_connect marks it
// TCP_ESTABLISHED too).
func (d *dumper) dumpUnixDeadPeer(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	sa, err := unix.Getpeername(l.local)
	if errors.Is(err, unix.ENOTCONN) && s.Type == unix.SOCK_DGRAM {
		return d.dumpUnixUnconnected(l, diag, s)
	}
	if err != nil {
		return fmt.Errorf("read the peer of socket:[%d]: %w", l.ino, os.NewSyscallError("getpeername", err))
	}
	if diag.named {
		return refuseUnix("socket:[%d] is bound to %s and its peer has closed (a bound client)", l.ino, unixName(s.Name))
	}
	name := ""
	if u, ok := sa.(*unix.SockaddrUnix); ok {
		name = u.Name
	}
	switch {
	case name == "":
	case name[0] == '@':
		name = "\x00" + name[1:]
	case name[0] != '/':
		return refuseUnix("socket:[%d]'s closed peer was bound to the relative path %q", l.ino, name)
	}
	s.PeerClosed, s.DeadPeerName, s.Peer = true, []byte(name), 0
	return nil
}

// makeUnixDeadPeer makes image fd f, whose peer has closed (see above).
func (r *restorer) makeUnixDeadPeer(f *pb.Fd) (uintptr, error) {
	s := f.GetUnixSocket()
	u := r.unixState()
	if len(s.DeadPeerName) == 0 {
		addr, err := r.rem.Put(scratchArgs, make([]byte, 8))
		if err != nil {
			return 0, err
		}
		if _, err := r.rem.Syscall(unix.SYS_SOCKETPAIR, unix.AF_UNIX, uintptr(s.Type)|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, addr); err != nil {
			return 0, fmt.Errorf("create unix socket fd %d: %w", f.Fd, err)
		}
		a, b, err := r.pair()
		if err != nil {
			return 0, err
		}
		defer r.closeRemote(b) // the peer goes away, as it had
		fd, err := r.moveHigh(a)
		if err != nil {
			return 0, fmt.Errorf("create unix socket fd %d: %w", f.Fd, err)
		}
		u.made[s.Inode] = fd
		return fd, r.fillFromDeadPeer(f, fd, b)
	}
	fd, err := r.newUnixSocket(f.Fd, s.Type)
	if err != nil {
		return 0, err
	}
	u.made[s.Inode] = fd
	peer, err := r.newUnixSocket(f.Fd, s.Type)
	if err != nil {
		return 0, err
	}
	defer r.closeRemote(peer)
	name := s.DeadPeerName
	what := fmt.Sprintf("fd %d: rebuild its closed peer %s", f.Fd, unixName(name))
	// A name taken here (the server lives on, still bound to it, and
	// only closed this connection; a stale socket file) cannot be bound
	// again: the peer is then made under a temporary abstract name of
	// its own, gone with it. Everything the socket shows stays exact
	// (bytes, end of stream, shutdown, SO_PEERCRED's ids) but
	// getpeername(2), which now names the temporary name.
	temp := fmt.Appendf([]byte{0}, "lazycr-deadpeer-%d-%d", r.pid, s.Inode)
	var full string
	if name[0] != 0 {
		full = fmt.Sprintf("/proc/%d/root%s", r.pid, name)
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err == nil {
			r.log.Warn().Int32("fd", f.Fd).Str("peer", unixName(name)).Uint64("inode", st.Ino).
				Msgf("fd %d: its closed peer's path %s exists here (inode %d): the peer is rebuilt under %s, which getpeername(2) returns from now on", f.Fd, unixName(name), st.Ino, unixName(temp))
			name, full = temp, ""
		}
	}
	addr, n, err := r.putSockaddrUnix(name)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	_, err = r.rem.Syscall(unix.SYS_BIND, peer, addr, n)
	if errors.Is(err, unix.EADDRINUSE) && name[0] == 0 && string(name) != string(temp) {
		r.log.Warn().Int32("fd", f.Fd).Str("peer", unixName(name)).
			Msgf("fd %d: its closed peer's abstract name %s is taken here: the peer is rebuilt under %s, which getpeername(2) returns from now on", f.Fd, unixName(name), unixName(temp))
		name = temp
		if addr, n, err = r.putSockaddrUnix(name); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		_, err = r.rem.Syscall(unix.SYS_BIND, peer, addr, n)
	}
	if err != nil {
		return 0, fmt.Errorf("%s: bind %s: %w", what, unixName(name), err)
	}
	if full != "" {
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err == nil {
			defer func() {
				var now unix.Stat_t
				if unix.Lstat(full, &now) == nil && now.Ino == st.Ino && now.Dev == st.Dev {
					_ = unix.Unlink(full) // the rebuilt peer's file; the dead one's was gone
				}
			}()
		}
	}
	if s.Type == unix.SOCK_DGRAM {
		if err := r.connectUnix(fd, f.Fd, name); err != nil {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		return fd, r.fillFromDeadPeer(f, fd, noFd)
	}
	err = r.asCred(s.PeerCred, func() error {
		_, err := r.rem.Syscall(unix.SYS_LISTEN, peer, 1)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("%s: listen: %w", what, err)
	}
	if err := r.connectUnix(fd, f.Fd, name); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	acc, err := r.rem.Syscall(unix.SYS_ACCEPT4, peer, 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		return 0, fmt.Errorf("%s: accept: %w", what, err)
	}
	defer r.closeRemote(acc)
	return fd, r.fillFromDeadPeer(f, fd, acc)
}

// fillFromDeadPeer gives fd (image fd f) its options, has peer (the
// process's fd of the peer made for the purpose, or noFd) send the bytes or
// messages that were waiting at it, then the caller closes peer and fd
// gets its shutdown state.
func (r *restorer) fillFromDeadPeer(f *pb.Fd, fd, peer uintptr) error {
	s := f.GetUnixSocket()
	if peer != noFd && (len(s.Data) > 0 || len(s.Messages) > 0) {
		local, err := r.getfd(peer)
		if err != nil {
			return fmt.Errorf("unix socket fd %d: %w", f.Fd, err)
		}
		defer unix.Close(local)
		if err := writeStream(local, s.Data, fmt.Sprintf("fd %d", f.Fd)); err != nil {
			return err
		}
		if err := sendUnixMessages(local, nil, s.Messages, f.Fd); err != nil {
			return err
		}
	}
	// The shutdown state the dead peer left (SHUTDOWN_MASK for a stream
	// socket) comes with its close; what the socket had of its own is
	// applied now.
	return r.unixOpts(fd, &pb.Fd{Fd: f.Fd, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{
		Sndbuf: s.Sndbuf, Rcvbuf: s.Rcvbuf, Passcred: s.Passcred, RcvtimeoUs: s.RcvtimeoUs, SndtimeoUs: s.SndtimeoUs,
		Shutdown: s.Shutdown &^ deadShutdown(s)}}})
}

// noFd: no peer fd to send from.
const noFd = ^uintptr(0)

// deadShutdown is the part of a socket's sk_shutdown its peer's close set:
// all of it for a stream or seqpacket socket (unix_release_sock), none
// for a datagram one.
func deadShutdown(s *pb.UnixSocket) uint32 {
	if s.Type == unix.SOCK_DGRAM {
		return 0
	}
	return 3
}
