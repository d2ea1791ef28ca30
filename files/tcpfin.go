package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/netlock"
	"golang.org/x/sys/unix"
)

// Half-closed TCP connections (tcpConn, tcp.go). The transition diagram
// (RFC 9293 3.3.2; CRIU's soccr/soccr.c draws the same):
//
//	ESTABLISHED --our FIN--> FIN_WAIT1 --its ACK--> FIN_WAIT2 --peer's FIN--> TIME_WAIT (no fd)
//	ESTABLISHED --peer's FIN--> CLOSE_WAIT --our FIN--> LAST_ACK --its ACK--> CLOSE
//	FIN_WAIT1 --peer's FIN--> CLOSING --ACK of ours--> TIME_WAIT
//
// Dump: a FIN takes one sequence number, so TCP_QUEUE_SEQ counts it
// (rcv_nxt is one past the peer's FIN, write_seq one past ours), and
// SIOCOUTQ/SIOCOUTQNSD (write_seq - snd_una, write_seq - snd_nxt) count our
// FIN while it is unacknowledged or unsent; SIOCINQ never counts the
// peer's (tcp_inq subtracts it once SOCK_DONE is set). The image keeps the
// kernel's sequence numbers and the data bytes only.
//
// Restore: the connection is built ESTABLISHED with its queues starting
// where the data starts (the FINs backed off), then the FINs are put back
// in the order the state was reached. Ours by shutdown(SHUT_WR) in repair
// mode: tcp_send_fin queues it; with TCP_REPAIR_QUEUE = TCP_SEND_QUEUE
// tcp_write_xmit marks it sent without transmitting it (the "repair" path),
// as it was at the dump; an unsent one goes the normal way: the kernel
// transmits it at once, the lock drops it at the output hook, which
// tcp_transmit_skb sees as an error, so it stays queued unsent, and it
// goes out once the connection is live. The peer's FIN cannot be queued by any socket option: it
// is a FIN|ACK segment written from a raw socket (raw(7), IP_HDRINCL) with
// the peer's address as source into the repaired socket, which handles it
// like any received segment (tcp_rcv_established → tcp_data_queue →
// tcp_fin). An acknowledgement of our FIN (FIN_WAIT2) is injected the same
// way. The connection is locked meanwhile (netlock: the held lock of a
// plain dump stays from the dump until [TCPRestore.Live], a lazy target
// locks before the socket exists), so there is no "before the lock" to
// inject in: injected segments carry [netlock.InjectMark], which the lock
// lets through, while the socket's own answers (its ACK of the FIN) are
// dropped as before, since the real peer had them before the dump.
const (
	tcpSynSent   = 2
	tcpFinWait1  = 4
	tcpFinWait2  = 5
	tcpClose     = 7
	tcpCloseWait = 8
	tcpLastAck   = 9
	tcpClosing   = 11
)

// Flags of a TCP header (RFC 9293 3.1).
const (
	tcpFlagFIN = 0x01
	tcpFlagACK = 0x10
)

// tcpFins is the FIN accounting of one TCP state.
type tcpFins struct {
	ours      bool // our FIN is queued or sent (SEND_SHUTDOWN)
	oursAcked bool // ... and acknowledged (FIN_WAIT2)
	peers     bool // the peer's FIN arrived (RCV_SHUTDOWN, SOCK_DONE)
	// peersFirst: the peer's FIN came before ours (CLOSE_WAIT → LAST_ACK),
	// so the restore puts it back first; otherwise ours goes first
	// (FIN_WAIT1 → CLOSING).
	peersFirst bool
}

// finsOf returns the FINs of state; ok is false for a state a restore
// cannot rebuild.
func finsOf(state uint32) (f tcpFins, ok bool) {
	switch state {
	case tcpEstablished:
		return tcpFins{}, true
	case tcpFinWait1:
		return tcpFins{ours: true}, true
	case tcpFinWait2:
		return tcpFins{ours: true, oursAcked: true}, true
	case tcpCloseWait:
		return tcpFins{peers: true, peersFirst: true}, true
	case tcpLastAck:
		return tcpFins{ours: true, peers: true, peersFirst: true}, true
	case tcpClosing:
		return tcpFins{ours: true, peers: true}, true
	}
	return tcpFins{}, false
}

// shutdownBits is sk_shutdown as the state implies it: RCV_SHUTDOWN (1)
// once the peer's FIN arrived, SEND_SHUTDOWN (2) once ours is queued.
func (f tcpFins) shutdownBits() uint8 {
	var b uint8
	if f.peers {
		b |= 1
	}
	if f.ours {
		b |= 2
	}
	return b
}

// sendData takes our FIN out of the send queue's ioctl lengths: outq is
// SIOCOUTQ, unsent SIOCOUTQNSD. It returns the data bytes of the queue,
// how many of them were never sent, and whether our FIN was never sent
// (the FIN is the queue's last sequence number, so it is unsent exactly
// when anything is).
func (f tcpFins) sendData(outq, unsent int) (data, dataUnsent int, finUnsent bool, err error) {
	switch {
	case outq < 0 || unsent < 0 || unsent > outq:
		return 0, 0, false, fmt.Errorf("send queue of %d bytes with %d unsent", outq, unsent)
	case !f.ours:
		return outq, unsent, false, nil
	case f.oursAcked:
		if outq != 0 {
			return 0, 0, false, fmt.Errorf("send queue of %d bytes after our FIN was acknowledged", outq)
		}
		return 0, 0, false, nil
	case outq == 0:
		return 0, 0, false, errors.New("no FIN in the send queue of a connection that sent one")
	case unsent > 0:
		return outq - 1, unsent - 1, true, nil
	}
	return outq - 1, 0, false, nil
}

// check refuses an image whose queues do not fit its state: a FIN
// recorded as unsent in a state without one in flight, unsent data before
// a FIN recorded as sent (the restore would mark that data sent with it),
// or data still queued after our FIN was acknowledged.
func (f tcpFins) check(st *pb.TcpStream) error {
	switch {
	case st.FinUnsent && (!f.ours || f.oursAcked):
		return errors.New("an unsent FIN in a state without one in flight")
	case f.ours && !st.FinUnsent && st.OutqUnsent > 0:
		return fmt.Errorf("%d unsent bytes before a FIN that was sent", st.OutqUnsent)
	case f.oursAcked && len(st.Outq) > 0:
		return fmt.Errorf("%d bytes queued after our FIN was acknowledged", len(st.Outq))
	}
	return nil
}

// queueStarts returns the sequence numbers a re-created socket's queues
// start at (TCP_QUEUE_SEQ before connect): where the data starts, the
// FINs backed off, since they are put back after the queues.
func (f tcpFins) queueStarts(st *pb.TcpStream) (recv, send uint32) {
	recv = st.InqSeq - uint32(len(st.Inq))
	send = st.OutqSeq - uint32(len(st.Outq))
	if f.peers {
		recv--
	}
	if f.ours {
		send--
	}
	return recv, send
}

// window returns w for a socket whose rcv_nxt is still before the peer's
// FIN: TCP_REPAIR_WINDOW refuses an rcv_wup after rcv_nxt
// (tcp_repair_set_window), so rcv_wup moves back to rcv_nxt and rcv_wnd
// grows by as much, which keeps the right edge of the advertised window
// (rcv_wup + rcv_wnd) where it was.
func (f tcpFins) window(w kabi.TCPRepairWindow, rcvNxt uint32) kabi.TCPRepairWindow {
	if f.peers && int32(w.RcvWup-rcvNxt) > 0 {
		d := w.RcvWup - rcvNxt
		w.RcvWup -= d
		w.RcvWnd += d
	}
	return w
}

// tcpSegment is one bare TCP segment (no data) lazycr writes into a
// connection it re-creates, as if the peer had sent it.
type tcpSegment struct {
	src, dst netip.AddrPort // src is the peer
	seq, ack uint32
	flags    uint8
	window   uint16 // unscaled, as on the wire
	// ts adds the timestamp option (RFC 7323 3.2) with tsVal and tsEcr.
	ts           bool
	tsVal, tsEcr uint32
}

// encode returns the segment with its IP header (IPv4 or IPv6 after the
// addresses), checksummed, for a raw socket with IP_HDRINCL (raw(7): the
// kernel fills in the IPv4 header checksum and total length; an IPv6 raw
// socket of protocol IPPROTO_RAW sends the header as given).
func (s tcpSegment) encode() []byte {
	tcpLen := 20
	if s.ts {
		tcpLen += 12 // NOP, NOP, kind 8 length 10
	}
	th := make([]byte, tcpLen)
	binary.BigEndian.PutUint16(th[0:], s.src.Port())
	binary.BigEndian.PutUint16(th[2:], s.dst.Port())
	binary.BigEndian.PutUint32(th[4:], s.seq)
	binary.BigEndian.PutUint32(th[8:], s.ack)
	th[12] = byte(tcpLen/4) << 4
	th[13] = s.flags
	binary.BigEndian.PutUint16(th[14:], s.window)
	if s.ts {
		copy(th[20:], []byte{1, 1, 8, 10})
		binary.BigEndian.PutUint32(th[24:], s.tsVal)
		binary.BigEndian.PutUint32(th[28:], s.tsEcr)
	}
	src, dst := s.src.Addr(), s.dst.Addr()
	// Pseudo-header (RFC 9293 3.1, RFC 8200 8.1): addresses, protocol,
	// TCP length.
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	pseudo = append(pseudo, 0, unix.IPPROTO_TCP)
	pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(tcpLen))
	binary.BigEndian.PutUint16(th[16:], inetChecksum(pseudo, th))
	if src.Is4() {
		ip := make([]byte, 20, 20+tcpLen)
		ip[0] = 0x45 // version 4, 5 words
		binary.BigEndian.PutUint16(ip[2:], uint16(20+tcpLen))
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = unix.IPPROTO_TCP
		copy(ip[12:], src.AsSlice())
		copy(ip[16:], dst.AsSlice())
		return append(ip, th...)
	}
	ip := make([]byte, 40, 40+tcpLen)
	ip[0] = 0x60 // version 6
	binary.BigEndian.PutUint16(ip[4:], uint16(tcpLen))
	ip[6] = unix.IPPROTO_TCP
	ip[7] = 64
	copy(ip[8:], src.AsSlice())
	copy(ip[24:], dst.AsSlice())
	return append(ip, th...)
}

// inetChecksum is the Internet checksum (RFC 1071) of the concatenation
// of parts, each of even length but the last.
func inetChecksum(parts ...[]byte) uint16 {
	var sum uint32
	for _, b := range parts {
		for len(b) >= 2 {
			sum += uint32(b[0])<<8 | uint32(b[1])
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// rawSocketFunc opens a raw socket (AF_INET or AF_INET6, IPPROTO_RAW,
// O_CLOEXEC) in the network namespace of the connection being re-created,
// owned by the caller.
type rawSocketFunc func(family int) (int, error)

// injectSegment writes seg into the repaired socket fd from a raw socket
// that raw opens, marked netlock.InjectMark, and waits until fd reached
// state want: a looped-back segment is normally handled before sendto
// returns (in the softirq that runs as the sender re-enables bottom
// halves), but may wait for ksoftirqd under load.
func injectSegment(fd int, raw rawSocketFunc, seg tcpSegment, want uint8) error {
	family := unix.AF_INET6
	var to unix.Sockaddr = &unix.SockaddrInet6{Addr: seg.dst.Addr().As16()}
	if seg.dst.Addr().Is4() {
		family = unix.AF_INET
		to = &unix.SockaddrInet4{Addr: seg.dst.Addr().As4()}
	}
	rs, err := raw(family)
	if err != nil {
		return err
	}
	defer unix.Close(rs)
	if family == unix.AF_INET {
		if err := setInt(rs, unix.IPPROTO_IP, unix.IP_HDRINCL, 1, "IP_HDRINCL"); err != nil {
			return err
		}
	}
	if err := setInt(rs, unix.SOL_SOCKET, unix.SO_MARK, netlock.InjectMark, "SO_MARK"); err != nil {
		return err
	}
	if err := unix.Sendto(rs, seg.encode(), 0, to); err != nil {
		return fmt.Errorf("send segment %s -> %s: %w", seg.src, seg.dst, os.NewSyscallError("sendto", err))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		state, _, _, _, err := tcpInfo(fd)
		if err != nil {
			return err
		}
		if state == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("segment %s -> %s (flags %#x seq %d ack %d) not taken: state %s, want %s",
				seg.src, seg.dst, seg.flags, seg.seq, seg.ack, tcpStates[state], tcpStates[want])
		}
		time.Sleep(100 * time.Microsecond) // poll interval
	}
}

// restoreFins puts the FINs of st back on the repaired socket fd, whose
// queues and window are restored (see the top of this file). local and
// peer are the connection's ends.
func restoreFins(fd int, st *pb.TcpStream, local, peer netip.AddrPort, raw rawSocketFunc) error {
	f, ok := finsOf(st.State)
	if !ok {
		return fmt.Errorf("%w: TCP state %d", ErrUnsupported, st.State)
	}
	if !f.ours && !f.peers {
		return nil
	}
	_, sndUna := f.queueStarts(st)
	// The peer's segments: from its end, acknowledging what it had, with
	// the window it advertised (snd_wnd is kept scaled) and, with
	// timestamps, TSval 0 (tcp_paws_check lets a zero ts_recent match
	// anything, so the peer's next real TSval is accepted whatever it is)
	// and TSecr our clock now. Linux 6.18 also takes such a segment
	// without the option (measured: the repair round trip of
	// TestRepairHalfClosed passes without it), but RFC 7323 3.2 lets a
	// receiver that negotiated timestamps drop it, so it is there.
	seg := tcpSegment{src: peer, dst: local, ack: sndUna}
	if w := st.Window; w != nil {
		seg.window = uint16(min(w.SndWnd>>st.SndWscale, 0xffff))
	}
	if st.Options&kabi.TCPI_OPT_TIMESTAMPS != 0 {
		now, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return fmt.Errorf("read TCP_TIMESTAMP: %w", os.NewSyscallError("getsockopt", err))
		}
		seg.ts, seg.tsEcr = true, uint32(now)
	}
	peerFin := func(want uint8) error {
		s := seg
		s.seq, s.flags = st.InqSeq-1, tcpFlagFIN|tcpFlagACK
		if err := injectSegment(fd, raw, s, want); err != nil {
			return fmt.Errorf("restore the peer's FIN: %w", err)
		}
		return nil
	}
	if f.peersFirst {
		if err := peerFin(tcpCloseWait); err != nil {
			return err
		}
	}
	if f.ours {
		// Sent (or acknowledged): queued as sent, not transmitted. Unsent:
		// the kernel transmits it as usual (the lock drops it; it goes out
		// again once live).
		if !st.FinUnsent {
			if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE"); err != nil {
				return err
			}
		}
		if err := unix.Shutdown(fd, unix.SHUT_WR); err != nil {
			return fmt.Errorf("restore our FIN: %w", os.NewSyscallError("shutdown SHUT_WR", err))
		}
		if err := setInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, kabi.TCP_NO_QUEUE, "TCP_REPAIR_QUEUE"); err != nil {
			return err
		}
	}
	if f.peers && !f.peersFirst {
		if err := peerFin(tcpClosing); err != nil {
			return err
		}
	}
	if f.oursAcked {
		s := seg
		s.seq, s.ack, s.flags = st.InqSeq, st.OutqSeq, tcpFlagACK
		if err := injectSegment(fd, raw, s, tcpFinWait2); err != nil {
			return fmt.Errorf("restore the acknowledgement of our FIN: %w", err)
		}
	}
	state, _, _, _, err := tcpInfo(fd)
	if err != nil {
		return err
	}
	if uint32(state) != st.State {
		return fmt.Errorf("restored connection in state %s, want %s", tcpStates[state], tcpStates[uint8(st.State)])
	}
	return nil
}
