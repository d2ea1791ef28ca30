package proc

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/sys/unix"
)

// maxNetSockets bounds the lines of a /proc/net socket table.
const maxNetSockets = 1 << 22

// NetSocket is one line of /proc/PID/net/{tcp,tcp6,udp,udp6} (see proc(5)
// and tcp4_seq_show / udp4_format_sock in the kernel).
type NetSocket struct {
	Local, Remote netip.AddrPort
	State         uint8 // TCP_* state (udp uses 7 unconnected, 1 connected)
	TxQueue       uint64
	RxQueue       uint64
	UID           uint32
	Inode         uint64 // matches "socket:[INO]" of an fd link
}

// parseNetAddr parses "0100007F:B3EA" (v4) or 32 hex digits + port (v6). The
// kernel prints each 32-bit word of the address in host (little-endian)
// order.
func parseNetAddr(b []byte, family int) (netip.AddrPort, bool) {
	a, p, found := bytes.Cut(b, []byte(":"))
	if !found || len(p) != 4 {
		return netip.AddrPort{}, false
	}
	port, ok := parseHex(p)
	if !ok {
		return netip.AddrPort{}, false
	}
	words := 1
	if family == unix.AF_INET6 {
		words = 4
	}
	if len(a) != 8*words {
		return netip.AddrPort{}, false
	}
	var raw [16]byte
	for i := range words {
		w, ok := parseHex(a[i*8 : i*8+8])
		if !ok {
			return netip.AddrPort{}, false
		}
		binary.LittleEndian.PutUint32(raw[i*4:], uint32(w))
	}
	var addr netip.Addr
	if words == 1 {
		addr = netip.AddrFrom4([4]byte(raw[:4]))
	} else {
		addr = netip.AddrFrom16(raw)
	}
	return netip.AddrPortFrom(addr, uint16(port)), true
}

// ParseNetSockets parses a /proc/net/{tcp,udp}[6] table for family
// unix.AF_INET or unix.AF_INET6. The first line must be the header. file
// names the table in errors.
func ParseNetSockets(r io.Reader, family int) ([]NetSocket, error) {
	file := "net/udp or net/tcp"
	if family == unix.AF_INET6 {
		file = "net/udp6 or net/tcp6"
	} else if family != unix.AF_INET {
		return nil, fmt.Errorf("parse net sockets: family %d: %w", family, ErrMalformed)
	}
	lr := newLineReader(r, file, 1024, maxNetSockets)
	out := []NetSocket{}
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		f := bytes.Fields(line)
		if lr.line == 1 {
			if len(f) == 0 || string(f[0]) != "sl" {
				return nil, lr.malformed("no header")
			}
			continue
		}
		if len(f) < 10 {
			return nil, lr.malformed("%d fields", len(f))
		}
		var s NetSocket
		var ok1, ok2, ok3, ok4 bool
		s.Local, ok1 = parseNetAddr(f[1], family)
		s.Remote, ok2 = parseNetAddr(f[2], family)
		st, ok3 := parseHex(f[3])
		tx, rx, found := bytes.Cut(f[4], []byte(":"))
		s.TxQueue, ok4 = parseHex(tx)
		var ok5, ok6, ok7 bool
		s.RxQueue, ok5 = parseHex(rx)
		uid, ok6 := parseDec(f[7])
		s.Inode, ok7 = parseDec(f[9])
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 || !ok7 || !found || st > 0xff || uid > 0xffffffff {
			return nil, lr.malformed("socket line")
		}
		s.State, s.UID = uint8(st), uint32(uid)
		out = append(out, s)
	}
	if lr.err != nil {
		return nil, lr.err
	}
	if lr.line == 0 {
		return nil, malformed(file, 0, "empty")
	}
	return out, nil
}

// ReadNetSockets reads /proc/PID/net/NAME, where name is "tcp", "tcp6",
// "udp" or "udp6", in the network namespace of pid.
func ReadNetSockets(pid int, name string) ([]NetSocket, error) {
	family := unix.AF_INET
	switch name {
	case "tcp", "udp":
	case "tcp6", "udp6":
		family = unix.AF_INET6
	default:
		return nil, fmt.Errorf("read net sockets of pid %d: unknown table %q", pid, name)
	}
	return readParsed(pidPath(pid, "net/"+name), func(r io.Reader) ([]NetSocket, error) {
		return ParseNetSockets(r, family)
	})
}
