package files

import (
	"errors"
	"fmt"
	"os"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Datagrams and seqpacket messages waiting to be read at a unix socket
// (unix(7)). The dump reads them without consuming them: MSG_PEEK with
// SO_PEEK_OFF set to 0 on the socket (socket(7): each peek then moves the
// offset past what it read, and a datagram socket's next peek starts at
// the next message, __skb_try_recv_from_queue), one message per peek, and
// puts SO_PEEK_OFF back to -1 (the dump refuses any other value), so the
// process sees no change. Restore sends them again, in order, before the
// process runs:
//
//   - at one end of a connection both ends of which are in the image
//     (a pair, an accepted seqpacket connection), through the other end,
//     which is who sent them (the only socket that can);
//   - at a bound datagram socket, from an unnamed socket in the process's
//     network namespace, to its name: recorded only if every message came
//     from an unnamed sender (msg_name empty), so the receiver sees the
//     same sender address (none).
//
// Refused: messages carrying file descriptors or credentials, a receiver
// with SO_PASSCRED (each message carries its sender's pid and ids, which a
// replay would change), a message from a named sender to a bound socket, a
// zero-length datagram (the peek offset cannot step over it), and more
// than maxUnixMessages messages.
const (
	maxUnixMessages   = 4096
	maxUnixMessageLen = 4 << 20 // larger than any SO_SNDBUF lets through
)

// peekUnixMessages reads the messages waiting at l (see above).
func (d *dumper) peekUnixMessages(l *liveFd, diag unixDiag, s *pb.UnixSocket) (msgs [][]byte, err error) {
	fd := l.local
	transient := func(format string, args ...any) error {
		return fmt.Errorf("%w: %w: fd kind unix socket: socket:[%d] "+format, append([]any{ErrUnsupported, ErrTransient, l.ino}, args...)...)
	}
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Poll(pfd, 0); err != nil {
		return nil, fmt.Errorf("poll socket:[%d]: %w", l.ino, os.NewSyscallError("poll", err))
	}
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ) // the first message's length
	if err != nil {
		return nil, fmt.Errorf("read the queue length of socket:[%d]: %w", l.ino, os.NewSyscallError("ioctl SIOCINQ", err))
	}
	if n == 0 && diag.shutdown&1 != 0 && s.Type == unix.SOCK_SEQPACKET && pfd[0].Revents&unix.POLLIN != 0 {
		// SIOCINQ of a seqpacket socket is the bytes of every queued
		// message: none, but zero-length messages may wait before the
		// end of stream (see below).
		zero, err := peekZeroLength(fd, l.ino)
		if err != nil {
			return nil, err
		}
		if zero {
			return nil, transient("has a zero-length message queued")
		}
		return nil, nil
	}
	if pfd[0].Revents&unix.POLLIN == 0 || (n == 0 && diag.shutdown&1 != 0) {
		return nil, nil // nothing queued (a receive shutdown makes POLLIN too)
	}
	if n == 0 {
		return nil, transient("has a zero-length message queued")
	}
	// A connection rebuilt with both ends: a seqpacket one, or an unnamed
	// datagram pair (restored by socketpair, unixsock.go).
	connection := s.Peer != 0 && d.unixDiag[s.Peer].peer == l.ino &&
		(s.Type == unix.SOCK_SEQPACKET || len(s.Name) == 0 && !d.unixDiag[s.Peer].named)
	switch {
	case s.Passcred:
		return nil, transient("has messages queued and SO_PASSCRED set (each carries its sender's credentials)")
	case !connection && (s.Type != unix.SOCK_DGRAM || len(s.Name) == 0):
		return nil, transient("has messages queued and neither a peer in the dump nor a name to send them to again")
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("set SO_PEEK_OFF of socket:[%d]: %w", l.ino, os.NewSyscallError("setsockopt", err))
	}
	defer func() {
		if perr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1); perr != nil {
			err = errors.Join(err, fmt.Errorf("put SO_PEEK_OFF of socket:[%d] back to -1: %w", l.ino, os.NewSyscallError("setsockopt", perr)))
			msgs = nil
		}
	}()
	// A seqpacket socket whose peer shut down writing answers a peek past
	// its last message with 0, as it answers a zero-length message
	// (unix_dgram_recvmsg: an empty queue with RCV_SHUTDOWN is end of
	// stream). SO_PASSCRED tells them apart: every queued message then
	// carries its sender's credentials (unix(7), SCM_CREDENTIALS; the
	// kernel records them with every message it queues), the end of
	// stream none. Set only while peeking (SO_PASSCRED set by the process
	// is refused above), nobody can send meanwhile (the peer shut down).
	endOfStream := s.Type == unix.SOCK_SEQPACKET && diag.shutdown&1 != 0
	if endOfStream {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return nil, fmt.Errorf("set SO_PASSCRED of socket:[%d]: %w", l.ino, os.NewSyscallError("setsockopt", err))
		}
		defer func() {
			if perr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 0); perr != nil {
				err = errors.Join(err, fmt.Errorf("put SO_PASSCRED of socket:[%d] back to 0: %w", l.ino, os.NewSyscallError("setsockopt", perr)))
				msgs = nil
			}
		}()
	}
	buf := make([]byte, maxUnixMessageLen)
	oob := make([]byte, unix.CmsgSpace(64*4)+unix.CmsgSpace(unix.SizeofUcred))
	for {
		got, oobn, flags, from, err := unix.Recvmsg(fd, buf, oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC|unix.MSG_TRUNC)
		if errors.Is(err, unix.EAGAIN) {
			return msgs, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("peek at socket:[%d]: %w", l.ino, os.NewSyscallError("recvmsg", err))
		}
		if endOfStream && got == 0 && oobn == 0 {
			return msgs, nil // end of stream, no message (see above)
		}
		if oobn > 0 {
			if other := closeRights(oob[:oobn]); other || !endOfStream {
				return nil, transient("has file descriptors or credentials queued")
			}
		}
		switch {
		case got == 0:
			return nil, transient("has a zero-length message queued (after %d)", len(msgs))
		case flags&unix.MSG_TRUNC != 0 || got > len(buf):
			return nil, transient("has a message of %d bytes queued", got)
		case len(msgs) == maxUnixMessages:
			return nil, transient("has more than %d messages queued", maxUnixMessages)
		}
		if sa, ok := from.(*unix.SockaddrUnix); ok && sa.Name != "" && !connection {
			return nil, transient("has a message queued from %s, a named sender it cannot be sent from again", sa.Name)
		}
		msgs = append(msgs, append([]byte(nil), buf[:got]...))
	}
}

// peekZeroLength reports whether a message waits at fd, a seqpacket
// socket shut down for receiving with no byte queued: a peek then
// returns 0 for a zero-length message and for the end of stream alike,
// but only a message comes with its sender's credentials under
// SO_PASSCRED (set for the peek, and put back: the process's own
// setting is read from the socket first).
func peekZeroLength(fd int, ino uint64) (zero bool, err error) {
	had, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED)
	if err != nil {
		return false, fmt.Errorf("read SO_PASSCRED of socket:[%d]: %w", ino, os.NewSyscallError("getsockopt", err))
	}
	if had == 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
			return false, fmt.Errorf("set SO_PASSCRED of socket:[%d]: %w", ino, os.NewSyscallError("setsockopt", err))
		}
		defer func() {
			if perr := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 0); perr != nil {
				err = errors.Join(err, fmt.Errorf("put SO_PASSCRED of socket:[%d] back to 0: %w", ino, os.NewSyscallError("setsockopt", perr)))
			}
		}()
	}
	oob := make([]byte, unix.CmsgSpace(64*4)+unix.CmsgSpace(unix.SizeofUcred))
	for {
		_, oobn, _, _, err := unix.Recvmsg(fd, make([]byte, 1), oob, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("peek at socket:[%d]: %w", ino, os.NewSyscallError("recvmsg", err))
		}
		if oobn > 0 {
			closeRights(oob[:oobn])
		}
		return oobn > 0, nil
	}
}

// closeRights closes the file descriptors a peek gave lazycr; it reports
// whether oob held anything but credentials (or could not be parsed).
func closeRights(oob []byte) (other bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return true
	}
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, f := range fds {
				unix.Close(f)
			}
		}
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_CREDENTIALS {
			other = true
		}
	}
	return other
}

// sendUnixMessages sends msgs (waiting at image fd num) through sender,
// lazycr's copy of a socket connected to it (to, when not nil, names the
// receiver).
func sendUnixMessages(sender int, to unix.Sockaddr, msgs [][]byte, num int32) error {
	for i, m := range msgs {
		for {
			err := unix.Sendmsg(sender, m, nil, to, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("send message %d of %d (%d bytes) waiting at fd %d: %w", i+1, len(msgs), len(m), num, os.NewSyscallError("sendmsg", err))
			}
			break
		}
	}
	return nil
}

// sendToBound sends the messages of image fd f, a bound datagram socket,
// to it again from an unnamed socket made in the process (its network
// namespace: an abstract name is looked up there) and used from lazycr.
func (r *restorer) sendToBound(f *pb.Fd) error {
	s := f.GetUnixSocket()
	if len(s.Messages) == 0 {
		return nil
	}
	tmp, err := r.newUnixSocket(f.Fd, unix.SOCK_DGRAM)
	if err != nil {
		return err
	}
	defer r.closeRemote(tmp)
	local, err := r.getfd(tmp)
	if err != nil {
		return fmt.Errorf("unix socket fd %d: %w", f.Fd, err)
	}
	defer unix.Close(local)
	total := 0
	for _, m := range s.Messages {
		total += len(m) + 1024 // and each skb's overhead
	}
	if err := unix.SetsockoptInt(local, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, total); err != nil {
		return fmt.Errorf("unix socket fd %d: make room for %d queued bytes: %w", f.Fd, total, os.NewSyscallError("setsockopt SO_SNDBUFFORCE", err))
	}
	name := string(s.Name)
	switch {
	case name[0] == 0:
		name = "@" + name[1:] // x/sys/unix's abstract notation; the length is kept
	case !sameMountNS(r.pid):
		if name = fmt.Sprintf("/proc/%d/root%s", r.pid, name); len(name) > 107 {
			return fmt.Errorf("unix socket fd %d: send the messages queued at %s again: the path through /proc is %d bytes, more than sun_path holds", f.Fd, s.Name, len(name))
		}
	}
	return sendUnixMessages(local, &unix.SockaddrUnix{Name: name}, s.Messages, f.Fd)
}
