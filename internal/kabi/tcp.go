package kabi

import "encoding/binary"

// TCP repair ABI from include/uapi/linux/tcp.h (Linux ≥ 3.5; the window
// since 4.8) and include/uapi/linux/sockios.h.
const (
	// TCP_REPAIR_QUEUE values: which queue TCP_QUEUE_SEQ, recv(2) and
	// send(2) act on in repair mode.
	TCP_NO_QUEUE   = 0
	TCP_RECV_QUEUE = 1
	TCP_SEND_QUEUE = 2

	// TCP_AO_INFO (Linux ≥ 6.7): getsockopt fails ENOENT on a socket
	// without TCP-AO keys.
	TCP_AO_INFO = 40

	// tcpi_options bits of struct tcp_info.
	TCPI_OPT_TIMESTAMPS = 1
	TCPI_OPT_SACK       = 2
	TCPI_OPT_WSCALE     = 4
	TCPI_OPT_ECN        = 8
	TCPI_OPT_ECN_SEEN   = 16
	TCPI_OPT_SYN_DATA   = 32
	TCPI_OPT_USEC_TS    = 64

	// TCPInfoMinLen is how much of struct tcp_info the TCP repair needs:
	// state, ca_state, retransmits, probes, backoff, options, then one byte
	// holding snd_wscale:4 (low nibble) and rcv_wscale:4.
	TCPInfoMinLen = 8

	// TCPRepairWindowLen is sizeof(struct tcp_repair_window): five u32.
	TCPRepairWindowLen = 20
	// TCPRepairOptLen is sizeof(struct tcp_repair_opt): opt_code, opt_val.
	TCPRepairOptLen = 8
)

// TCPRepairWindow is struct tcp_repair_window (TCP_REPAIR_WINDOW).
type TCPRepairWindow struct {
	SndWl1, SndWnd, MaxWindow, RcvWnd, RcvWup uint32
}

// Encode lays w out as the kernel reads it (little-endian on x86-64).
func (w TCPRepairWindow) Encode() []byte {
	b := make([]byte, TCPRepairWindowLen)
	for i, v := range []uint32{w.SndWl1, w.SndWnd, w.MaxWindow, w.RcvWnd, w.RcvWup} {
		binary.LittleEndian.PutUint32(b[4*i:], v)
	}
	return b
}

// DecodeTCPRepairWindow reads a struct tcp_repair_window; ok is false when
// b is short.
func DecodeTCPRepairWindow(b []byte) (w TCPRepairWindow, ok bool) {
	if len(b) < TCPRepairWindowLen {
		return w, false
	}
	u := func(i int) uint32 { return binary.LittleEndian.Uint32(b[4*i:]) }
	return TCPRepairWindow{u(0), u(1), u(2), u(3), u(4)}, true
}

// TCPRepairOpt is struct tcp_repair_opt (TCP_REPAIR_OPTIONS): a TCPOPT_*
// code and its value.
type TCPRepairOpt struct {
	Code, Val uint32
}

// EncodeTCPRepairOpts lays out an array of struct tcp_repair_opt.
func EncodeTCPRepairOpts(opts []TCPRepairOpt) []byte {
	b := make([]byte, TCPRepairOptLen*len(opts))
	for i, o := range opts {
		binary.LittleEndian.PutUint32(b[8*i:], o.Code)
		binary.LittleEndian.PutUint32(b[8*i+4:], o.Val)
	}
	return b
}
