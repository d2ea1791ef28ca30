package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// AF_UNIX sockets through sock_diag(7) (include/uapi/linux/unix_diag.h):
// the peer of a connected socket, its shutdown state and whether it has a
// name (getsockname(2) of an unnamed socket returns only the family, which
// x/sys/unix cannot tell from an empty abstract name).
//
//	unix_diag_req (24)  family u8 | protocol u8 | pad u16 | states u32 | ino u32 | show u32 | cookie [2]u32
//	unix_diag_msg (16)  family u8 | type u8 | state u8 | pad u8 | ino u32 | cookie [2]u32
//	then rtattrs        UNIX_DIAG_NAME | UNIX_DIAG_PEER u32 | UNIX_DIAG_SHUTDOWN u8 | ...
const (
	unixDiagReqLen   = 24
	unixDiagMsgLen   = 16
	udiagShowName    = 0x01 // UDIAG_SHOW_NAME
	udiagShowPeer    = 0x04 // UDIAG_SHOW_PEER
	unixDiagName     = 0    // UNIX_DIAG_NAME: present only for a bound socket
	unixDiagPeer     = 2    // UNIX_DIAG_PEER
	unixDiagShutdown = 6    // UNIX_DIAG_SHUTDOWN
	maxUnixDiag      = 1 << 20
)

// unixDiag is what sock_diag says about one unix socket.
type unixDiag struct {
	peer     uint64
	shutdown uint8
	named    bool // bound to a path or an abstract name
}

// parseUnixDiag decodes one datagram of a unix sock_diag dump reply into
// out (by inode). It reports whether the dump is done.
func parseUnixDiag(b []byte, out map[uint64]unixDiag) (bool, error) {
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
			continue
		case unix.SOCK_DIAG_BY_FAMILY:
		default:
			continue
		}
		if len(msg) < unixDiagMsgLen {
			return false, fmt.Errorf("%w: unix_diag_msg of %d bytes", errDiagShort, len(msg))
		}
		if len(out) >= maxUnixDiag {
			return false, fmt.Errorf("%w: more than %d unix sockets", errDiagShort, maxUnixDiag)
		}
		ino := uint64(binary.LittleEndian.Uint32(msg[4:]))
		var v unixDiag
		for attrs := msg[unixDiagMsgLen:]; len(attrs) >= 4; {
			al := int(binary.LittleEndian.Uint16(attrs))
			at := binary.LittleEndian.Uint16(attrs[2:])
			if al < 4 || al > len(attrs) {
				return false, fmt.Errorf("%w: attribute length %d of %d bytes", errDiagShort, al, len(attrs))
			}
			switch {
			case at == unixDiagName:
				v.named = true
			case at == unixDiagPeer && al >= 8:
				v.peer = uint64(binary.LittleEndian.Uint32(attrs[4:]))
			case at == unixDiagShutdown && al >= 5:
				v.shutdown = attrs[4]
			}
			if a := (al + 3) &^ 3; a < len(attrs) {
				attrs = attrs[a:]
			} else {
				attrs = nil
			}
		}
		out[ino] = v
	}
	return false, nil
}

// unixSockets describes every unix socket in the network namespace of pid
// (unix sockets are per network namespace), by inode.
func unixSockets(pid int) (map[uint64]unixDiag, error) {
	s, err := diagSocketIn(pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	tv := unix.Timeval{Sec: 10}
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_RCVTIMEO", err)
	}
	req := make([]byte, nlmsgHdrLen+unixDiagReqLen)
	binary.LittleEndian.PutUint32(req[0:], uint32(len(req)))
	binary.LittleEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.LittleEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.LittleEndian.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	binary.LittleEndian.PutUint32(req[20:], ^uint32(0))                  // every state
	binary.LittleEndian.PutUint32(req[28:], udiagShowName|udiagShowPeer) // UNIX_DIAG_SHUTDOWN is always sent (sk_diag_fill)
	if err := unix.Sendto(s, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto sock_diag", err)
	}
	out := map[uint64]unixDiag{}
	buf := make([]byte, 64<<10)
	for total := 0; total < diagMaxReply; {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("recvfrom sock_diag", err)
		}
		total += n
		done, err := parseUnixDiag(buf[:n], out)
		if err != nil {
			return nil, err
		}
		if done {
			return out, nil
		}
	}
	return nil, fmt.Errorf("%w: more than %d bytes", errDiagShort, diagMaxReply)
}
