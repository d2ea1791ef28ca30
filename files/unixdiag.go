package files

import (
	"encoding/binary"
	"fmt"

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
	return diagWalk(b, func(msg []byte) error {
		if len(msg) < unixDiagMsgLen {
			return fmt.Errorf("%w: unix_diag_msg of %d bytes", errDiagShort, len(msg))
		}
		if len(out) >= maxUnixDiag {
			return fmt.Errorf("%w: more than %d unix sockets", errDiagShort, maxUnixDiag)
		}
		ino := uint64(binary.LittleEndian.Uint32(msg[4:]))
		var v unixDiag
		err := diagAttrs(msg[unixDiagMsgLen:], func(at uint16, p []byte) {
			switch {
			case at == unixDiagName:
				v.named = true
			case at == unixDiagPeer && len(p) >= 4:
				v.peer = uint64(binary.LittleEndian.Uint32(p))
			case at == unixDiagShutdown && len(p) >= 1:
				v.shutdown = p[0]
			}
		})
		if err != nil {
			return err
		}
		out[ino] = v
		return nil
	})
}

// unixSockets describes every unix socket in the network namespace of pid
// (unix sockets are per network namespace), by inode.
func unixSockets(pid int) (map[uint64]unixDiag, error) {
	s, err := diagOpen(pid)
	if err != nil {
		return nil, err
	}
	defer unix.Close(s)
	req := make([]byte, nlmsgHdrLen+unixDiagReqLen)
	binary.LittleEndian.PutUint32(req[0:], uint32(len(req)))
	binary.LittleEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.LittleEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.LittleEndian.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	binary.LittleEndian.PutUint32(req[20:], ^uint32(0))                  // every state
	binary.LittleEndian.PutUint32(req[28:], udiagShowName|udiagShowPeer) // UNIX_DIAG_SHUTDOWN is always sent (sk_diag_fill)
	out := map[uint64]unixDiag{}
	if err := diagDump(s, req, func(b []byte) (bool, error) { return parseUnixDiag(b, out) }); err != nil {
		return nil, err
	}
	return out, nil
}
