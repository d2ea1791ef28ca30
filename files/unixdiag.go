package files

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// AF_UNIX sockets through sock_diag(7) (include/uapi/linux/unix_diag.h):
// the peer of a connected socket, its shutdown state, its name (a bound
// socket's, or the listener's for a socket accepted from it), the inode
// of a path socket's file, a listener's pending connections and backlog
// and a socket's queue lengths (getsockname(2) of an unnamed socket
// returns only the family, which x/sys/unix cannot tell from an empty
// abstract name).
//
//	unix_diag_req (24)  family u8 | protocol u8 | pad u16 | states u32 | ino u32 | show u32 | cookie [2]u32
//	unix_diag_msg (16)  family u8 | type u8 | state u8 | pad u8 | ino u32 | cookie [2]u32
//	then rtattrs        UNIX_DIAG_NAME sun_path | UNIX_DIAG_VFS ino u32, dev u32 |
//	                    UNIX_DIAG_PEER u32 | UNIX_DIAG_ICONS [n]u32 |
//	                    UNIX_DIAG_RQLEN rqueue u32, wqueue u32 | UNIX_DIAG_SHUTDOWN u8 | ...
//
// UNIX_DIAG_RQLEN is, for a listener, the number of connections waiting
// to be accepted and the backlog (sk_max_ack_backlog); for any other
// socket the bytes waiting to be read and those sent but not yet read by
// the peer (sk_diag_show_rqlen in net/unix/diag.c). UNIX_DIAG_ICONS lists,
// for a listener, the inode of the connecting socket of each pending
// connection, in accept order (sk_diag_dump_icons).
const (
	unixDiagReqLen   = 24
	unixDiagMsgLen   = 16
	udiagShowName    = 0x01 // UDIAG_SHOW_NAME
	udiagShowVFS     = 0x02 // UDIAG_SHOW_VFS
	udiagShowPeer    = 0x04 // UDIAG_SHOW_PEER
	udiagShowIcons   = 0x08 // UDIAG_SHOW_ICONS
	udiagShowRqlen   = 0x10 // UDIAG_SHOW_RQLEN
	unixDiagName     = 0    // UNIX_DIAG_NAME: present only for a named socket
	unixDiagVFS      = 1    // UNIX_DIAG_VFS: a socket bound to a path
	unixDiagPeer     = 2    // UNIX_DIAG_PEER
	unixDiagIcons    = 3    // UNIX_DIAG_ICONS
	unixDiagRqlen    = 4    // UNIX_DIAG_RQLEN
	unixDiagShutdown = 6    // UNIX_DIAG_SHUTDOWN
	maxUnixDiag      = 1 << 20
	maxUnixIcons     = 1 << 16 // pending connections of one listener (SOMAXCONN is 4096)
	tcpListen        = 10      // TCP_LISTEN, a unix listener's state (include/net/tcp_states.h)
)

// unixDiag is what sock_diag says about one unix socket.
type unixDiag struct {
	typ      uint8
	state    uint8
	peer     uint64
	shutdown uint8
	named    bool   // bound to a path or an abstract name, or accepted from a listener that is
	name     string // sun_path as the kernel keeps it: abstract names start with NUL; a path's trailing NUL is cut
	vfsIno   uint64 // the inode of a path socket's file (0: none)
	vfsDev   uint32 // its device, new_encode_dev() as in stat(2)'s st_dev
	icons    []uint64
	rqueue   uint32
	wqueue   uint32
}

// listening reports whether the socket is a listener.
func (u unixDiag) listening() bool { return u.state == tcpListen }

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
		v := unixDiag{typ: msg[1], state: msg[2]}
		var bad error
		err := diagAttrs(msg[unixDiagMsgLen:], func(at uint16, p []byte) {
			switch {
			case at == unixDiagName:
				v.named = true
				if len(p) > 0 && p[0] != 0 {
					// A path: the kernel keeps its NUL (unix_mkname_bsd).
					for i, c := range p {
						if c == 0 {
							p = p[:i]
							break
						}
					}
				}
				v.name = string(p)
			case at == unixDiagVFS && len(p) >= 8:
				v.vfsIno = uint64(binary.LittleEndian.Uint32(p))
				v.vfsDev = binary.LittleEndian.Uint32(p[4:])
			case at == unixDiagPeer && len(p) >= 4:
				v.peer = uint64(binary.LittleEndian.Uint32(p))
			case at == unixDiagIcons:
				if len(p)/4 > maxUnixIcons {
					bad = fmt.Errorf("%w: socket inode %d with %d pending connections", errDiagShort, ino, len(p)/4)
					return
				}
				v.icons = make([]uint64, 0, len(p)/4)
				for i := 0; i+4 <= len(p); i += 4 {
					v.icons = append(v.icons, uint64(binary.LittleEndian.Uint32(p[i:])))
				}
			case at == unixDiagRqlen && len(p) >= 8:
				v.rqueue = binary.LittleEndian.Uint32(p)
				v.wqueue = binary.LittleEndian.Uint32(p[4:])
			case at == unixDiagShutdown && len(p) >= 1:
				v.shutdown = p[0]
			}
		})
		if err != nil {
			return err
		}
		if bad != nil {
			return bad
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
	return unixSocketsOn(s)
}

// unixSocketsOf describes every unix socket in the network namespace the
// socket sock belongs to (diagOpenOf), by inode; ns is its inode.
func unixSocketsOf(sock int) (m map[uint64]unixDiag, ns uint64, err error) {
	s, ns, err := diagOpenOf(sock)
	if err != nil {
		return nil, ns, err
	}
	defer unix.Close(s)
	m, err = unixSocketsOn(s)
	return m, ns, err
}

// unixSocketsOn dumps the unix sockets of the network namespace of the
// sock_diag socket s.
func unixSocketsOn(s int) (map[uint64]unixDiag, error) {
	req := make([]byte, nlmsgHdrLen+unixDiagReqLen)
	binary.LittleEndian.PutUint32(req[0:], uint32(len(req)))
	binary.LittleEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.LittleEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.LittleEndian.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	binary.LittleEndian.PutUint32(req[20:], ^uint32(0)) // every state
	// UNIX_DIAG_SHUTDOWN is always sent (sk_diag_fill).
	binary.LittleEndian.PutUint32(req[28:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRqlen)
	out := map[uint64]unixDiag{}
	if err := diagDump(s, req, func(b []byte) (bool, error) { return parseUnixDiag(b, out) }); err != nil {
		return nil, err
	}
	return out, nil
}
