package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"

	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// The sock_diag(7) netlink interface reads socket state that getsockopt
// does not show: here sk_shutdown (INET_DIAG_SHUTDOWN), which shutdown(2)
// sets on a UDP socket. Structs from include/uapi/linux/inet_diag.h and
// include/uapi/linux/netlink.h, encoded by hand (little-endian x86-64;
// ports and addresses in inet_diag_sockid are big-endian and unused here).
//
//	nlmsghdr (16)         len u32 | type u16 | flags u16 | seq u32 | pid u32
//	inet_diag_req_v2 (56) family u8 | protocol u8 | ext u8 | pad u8 | states u32 | inet_diag_sockid (48)
//	inet_diag_msg (72)    family u8 | state u8 | timer u8 | retrans u8 | inet_diag_sockid (48) |
//	                      expires u32 | rqueue u32 | wqueue u32 | uid u32 | inode u32
//	then rtattrs          len u16 | type u16 | payload, each padded to 4 bytes
const (
	nlmsgHdrLen      = 16
	inetDiagReqLen   = 56
	inetDiagMsgLen   = 72
	inetDiagInfo     = 2        // INET_DIAG_INFO: asking for it also brings the auxiliary attributes
	inetDiagShutdown = 8        // INET_DIAG_SHUTDOWN: u8 sk_shutdown
	inetDiagMD5Sig   = 18       // INET_DIAG_MD5SIG: the socket's TCP-MD5 keys (to CAP_NET_ADMIN only)
	nlmsgError       = 2        // NLMSG_ERROR
	nlmsgDone        = 3        // NLMSG_DONE
	diagMaxReply     = 16 << 20 // about 40000 TCP sockets with their tcp_info
)

// diagSock is what sock_diag says about one socket.
type diagSock struct {
	shutdown uint8  // INET_DIAG_SHUTDOWN
	rqueue   uint32 // bytes queued for reading (a listener: connections waiting for accept)
	wqueue   uint32 // bytes queued for sending (a listener: its backlog, sk_max_ack_backlog)
	md5      bool   // INET_DIAG_MD5SIG present: the socket has TCP-MD5 keys (RFC 2385)
}

// errDiagShort: a sock_diag reply is cut short or malformed.
var errDiagShort = errors.New("malformed sock_diag reply")

// diagRequest is a dump request for the sockets of family and protocol in
// the TCP states of mask (1 << TCP_LISTEN...; UDP sockets are CLOSE or
// ESTABLISHED).
func diagRequest(family, protocol uint8, states, seq uint32) []byte {
	b := make([]byte, nlmsgHdrLen+inetDiagReqLen)
	binary.LittleEndian.PutUint32(b[0:], uint32(len(b)))
	binary.LittleEndian.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.LittleEndian.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.LittleEndian.PutUint32(b[8:], seq)
	b[16], b[17] = family, protocol
	binary.LittleEndian.PutUint32(b[20:], states)
	return b
}

// diagWalk walks one datagram of a sock_diag dump reply: it calls fn with
// the payload of each SOCK_DIAG_BY_FAMILY message, returns a negative
// NLMSG_ERROR as its errno, skips other types (and a zero NLMSG_ERROR, an
// acknowledgement) and reports whether NLMSG_DONE came (netlink(7)).
func diagWalk(b []byte, fn func(msg []byte) error) (done bool, err error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return false, fmt.Errorf("%w: %d bytes left, a header is %d", errDiagShort, len(b), nlmsgHdrLen)
		}
		n := int(binary.LittleEndian.Uint32(b))
		typ := binary.LittleEndian.Uint16(b[4:])
		if n < nlmsgHdrLen || n > len(b) {
			return false, fmt.Errorf("%w: message length %d of %d bytes", errDiagShort, n, len(b))
		}
		msg := b[nlmsgHdrLen:n]
		if a := (n + 3) &^ 3; a < len(b) {
			b = b[a:]
		} else {
			b = nil
		}
		switch typ {
		case nlmsgDone:
			return true, nil
		case nlmsgError:
			if len(msg) < 4 {
				return false, fmt.Errorf("%w: short NLMSG_ERROR", errDiagShort)
			}
			if e := int32(binary.LittleEndian.Uint32(msg)); e < 0 {
				return false, os.NewSyscallError("sock_diag", syscall.Errno(-e))
			}
		case unix.SOCK_DIAG_BY_FAMILY:
			if err := fn(msg); err != nil {
				return false, err
			}
		}
	}
	return false, nil
}

// diagAttrs calls fn with the type and payload of each rtattr in b (the
// attributes after a sock_diag message).
func diagAttrs(b []byte, fn func(typ uint16, payload []byte)) error {
	for len(b) >= 4 {
		al := int(binary.LittleEndian.Uint16(b))
		at := binary.LittleEndian.Uint16(b[2:])
		if al < 4 || al > len(b) {
			return fmt.Errorf("%w: attribute length %d of %d bytes", errDiagShort, al, len(b))
		}
		fn(at, b[4:al])
		if a := (al + 3) &^ 3; a < len(b) {
			b = b[a:]
		} else {
			b = nil
		}
	}
	return nil
}

// parseDiag decodes one datagram of a sock_diag dump reply into out
// (by socket inode). It reports whether the dump is done; a
// socket without INET_DIAG_SHUTDOWN is an error (the state cannot be read
// exactly), one without an inode is skipped.
func parseDiag(b []byte, out map[uint64]diagSock) (done bool, err error) {
	return diagWalk(b, func(msg []byte) error {
		if len(msg) < inetDiagMsgLen {
			return fmt.Errorf("%w: inet_diag_msg of %d bytes", errDiagShort, len(msg))
		}
		ino := uint64(binary.LittleEndian.Uint32(msg[68:]))
		rq := binary.LittleEndian.Uint32(msg[56:])
		found := false
		v := diagSock{rqueue: rq, wqueue: binary.LittleEndian.Uint32(msg[60:])}
		err := diagAttrs(msg[inetDiagMsgLen:], func(at uint16, p []byte) {
			switch {
			case at == inetDiagShutdown && len(p) >= 1:
				v.shutdown = p[0]
				found = true
			case at == inetDiagMD5Sig:
				v.md5 = true
			}
		})
		if err != nil {
			return err
		}
		if ino == 0 {
			// No fd refers to it: a TIME_WAIT socket (reported with its
			// substate, FIN_WAIT2 for one that got there from FIN_WAIT2,
			// inet_twsk_diag_fill, and without INET_DIAG_SHUTDOWN) or an
			// orphan.
			return nil
		}
		if !found {
			return fmt.Errorf("%w: socket inode %d without INET_DIAG_SHUTDOWN", errDiagShort, ino)
		}
		out[ino] = v
		return nil
	})
}

// diagSockets describes every socket of family and protocol in the network
// namespace of pid, by socket inode.
func diagSockets(pid int, family, protocol uint8) (map[uint64]diagSock, error) {
	s, err := diagOpen(pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	states := ^uint32(0)
	req := diagRequest(family, protocol, states, 1)
	if protocol == unix.IPPROTO_TCP {
		// Full sockets only: time-wait and request sockets carry no
		// shutdown state (ESTABLISHED 1, SYN_SENT 2, FIN_WAIT1 4,
		// FIN_WAIT2 5, CLOSE 7, CLOSE_WAIT 8, LAST_ACK 9, LISTEN 10,
		// CLOSING 11; include/net/tcp_states.h).
		states = 1<<1 | 1<<2 | 1<<4 | 1<<5 | 1<<7 | 1<<8 | 1<<9 | 1<<10 | 1<<11
		req = diagRequest(family, protocol, states, 1)
		// idiag_ext INET_DIAG_INFO: inet_sk_diag_fill adds the protocol's
		// auxiliary attributes (tcp_diag_get_aux: INET_DIAG_MD5SIG) only
		// when it is asked (net/ipv4/inet_diag.c).
		req[nlmsgHdrLen+2] = 1 << (inetDiagInfo - 1)
	}
	out := map[uint64]diagSock{}
	if err := diagDump(s, req, func(b []byte) (bool, error) { return parseDiag(b, out) }); err != nil {
		return nil, err
	}
	return out, nil
}

// diagOpen opens a NETLINK_SOCK_DIAG socket in the network namespace of pid
// (diagSocketIn) with a 10 s receive timeout, so that a dump never hangs.
func diagOpen(pid int) (int, error) {
	s, err := diagSocketIn(pid)
	if err != nil {
		return -1, err
	}
	return diagTimeout(s)
}

// diagOpenOf opens a NETLINK_SOCK_DIAG socket in the network namespace
// the socket sock belongs to (SIOCGSKNS on it opens that namespace: see
// sock_ioctl in net/socket.c), which may be neither lazycr's nor its
// holder's: a lazy migration between network namespaces of one host
// hands the original's path sockets over (unixtake.go). ns is that
// namespace's inode (net:[ns]). The socket has diagOpen's timeout.
func diagOpenOf(sock int) (s int, ns uint64, err error) {
	nsfd, err := unix.IoctlRetInt(sock, unix.SIOCGSKNS)
	if err != nil {
		return -1, 0, fmt.Errorf("open its network namespace: %w", os.NewSyscallError("ioctl SIOCGSKNS", err))
	}
	defer unix.Close(nsfd)
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		return -1, 0, fmt.Errorf("stat its network namespace: %w", os.NewSyscallError("fstat", err))
	}
	self, err := proc.SelfNs("net")
	if err != nil {
		return -1, st.Ino, fmt.Errorf("stat lazycr's network namespace: %w", err)
	}
	if self.Ino == st.Ino && self.Dev == st.Dev {
		s, err = diagSocket()
	} else {
		// The thread that joins it opens the namespace again by
		// this fd, which all of lazycr's threads share.
		s, err = diagSocketJoin(fmt.Sprintf("/proc/self/fd/%d", nsfd), fmt.Sprintf("network namespace net:[%d]", st.Ino))
	}
	if err != nil {
		return -1, st.Ino, err
	}
	s, err = diagTimeout(s)
	return s, st.Ino, err
}

// diagTimeout gives sock_diag socket s a 10 s receive timeout (closing
// it on an error).
func diagTimeout(s int) (int, error) {
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(s)
		return -1, os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	return s, nil
}

// diagDump sends the dump request req on the sock_diag socket s and feeds
// each datagram of the reply to parse until it reports the dump done;
// a reply of more than diagMaxReply bytes is refused.
func diagDump(s int, req []byte, parse func([]byte) (bool, error)) error {
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return os.NewSyscallError("sendto sock_diag", err)
	}
	buf := make([]byte, 64<<10)
	for total := 0; total < diagMaxReply; {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return os.NewSyscallError("recvfrom sock_diag", err)
		}
		total += n
		done, err := parse(buf[:n])
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
	return fmt.Errorf("%w: more than %d bytes", errDiagShort, diagMaxReply)
}

// diagSocketIn opens a NETLINK_SOCK_DIAG socket in the network namespace of
// pid: sock_diag answers for the namespace its socket was created in. When
// that is not lazycr's, the socket is made in it by diagSocketJoin.
func diagSocketIn(pid int) (int, error) {
	if pid == os.Getpid() {
		// lazycr's own sockets (the probes'): made by goroutines on
		// threads in lazycr's namespace. /proc/PID/ns/net would name the
		// main thread's, which may be parked in another (proc.SelfNs).
		return diagSocket()
	}
	var target unix.Stat_t
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	self, err := proc.SelfNs("net")
	if err != nil {
		return -1, fmt.Errorf("stat lazycr's network namespace: %w", err)
	}
	if err := unix.Stat(nsPath, &target); err != nil {
		return -1, fmt.Errorf("stat %s: %w", nsPath, err)
	}
	if self.Ino == target.Ino && self.Dev == target.Dev {
		return diagSocket()
	}
	return diagSocketJoin(nsPath, fmt.Sprintf("network namespace of pid %d", pid))
}

// diagSocket opens a NETLINK_SOCK_DIAG socket in the calling thread's
// network namespace.
func diagSocket() (int, error) {
	s, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1, os.NewSyscallError("socket NETLINK_SOCK_DIAG", err)
	}
	return s, nil
}

// diagSocketJoin opens a NETLINK_SOCK_DIAG socket on a throwaway OS
// thread that joins the network namespace at nsPath (what names it in
// errors) with setns(2) and is never handed back to the Go scheduler (the
// goroutine exits locked, so the thread ends).
func diagSocketJoin(nsPath, what string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{-1, fmt.Errorf("open %s: %w", nsPath, os.NewSyscallError("open", err))}
			return
		}
		err = unix.Setns(ns, unix.CLONE_NEWNET)
		unix.Close(ns)
		if err != nil {
			ch <- result{-1, fmt.Errorf("join the %s: %w", what, os.NewSyscallError("setns", err))}
			return
		}
		fd, err := diagSocket()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}
