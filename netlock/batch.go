package netlock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// nftTableFOwner is NFT_TABLE_F_OWNER from <linux/netfilter/nf_tables.h>
// (enum nft_table_flags); x/sys/unix does not define it.
const nftTableFOwner = 0x2

// ownerFlag is the table flag an owned lock asks for; tests set a flag the
// kernel does not know, to exercise the fallback of old kernels.
var ownerFlag uint32 = nftTableFOwner

// nftMsg is the netlink message type of nf_tables message m
// (NFNL_SUBSYS_NFTABLES in the high byte, see <linux/netfilter/nfnetlink.h>).
func nftMsg(m int) netlink.HeaderType {
	return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | m)
}

// nfgenmsg is the struct nfgenmsg header of every nfnetlink message: family,
// version NFNETLINK_V0, resource id (big endian).
func nfgenmsg(family byte, resID uint16) []byte {
	return []byte{family, unix.NFNETLINK_V0, byte(resID >> 8), byte(resID)}
}

// encodeLock returns the messages (without the batch begin and end) that
// create the lock's table: NEWTABLE encoded here (with owned, the
// NFT_TABLE_F_OWNER flag), then the sets, chains and rules as
// github.com/google/nftables encodes them.
func encodeLock(name string, owned bool, k4, k6 [][]byte) ([]netlink.Message, error) {
	return encodeKeys(name, owned, lockKeys{c4: k4, c6: k6})
}

// encodeKeys is encodeLock for the connections and listeners of k.
func encodeKeys(name string, owned bool, k lockKeys) ([]netlink.Message, error) {
	var flags [4]byte
	if owned {
		binary.BigEndian.PutUint32(flags[:], ownerFlag)
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: append([]byte(name), 0)},
		{Type: unix.NFTA_TABLE_FLAGS, Data: flags[:]},
	})
	if err != nil {
		return nil, fmt.Errorf("encode table %s: %w", name, err)
	}
	table := netlink.Message{
		Header: netlink.Header{
			Type:  nftMsg(unix.NFT_MSG_NEWTABLE),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create | netlink.Excl,
		},
		Data: append(nfgenmsg(byte(tableFamily), 0), attrs...),
	}
	rest, err := record(func(c *nftables.Conn) error { return addLockObjects(c, name, k) })
	if err != nil {
		return nil, fmt.Errorf("encode table %s: %w", name, err)
	}
	return append([]netlink.Message{table}, rest...), nil
}

// elemsPerMsg bounds the elements of one NEWSETELEM message: 512 IPv6
// elements take about 27 KiB, well below the 64 KiB of one attribute.
const elemsPerMsg = 512

// family describes where one IP family keeps the fields of the 4-tuple.
type family struct {
	nfproto      byte
	set          string
	setID        uint32
	saddr, daddr uint32 // offsets in the network header
	alen         uint32 // address length
	addr         nftables.SetDatatype
}

var (
	fam4 = family{nfproto: unix.NFPROTO_IPV4, set: set4, setID: 1, saddr: 12, daddr: 16, alen: 4, addr: nftables.TypeIPAddr}
	fam6 = family{nfproto: unix.NFPROTO_IPV6, set: set6, setID: 2, saddr: 8, daddr: 24, alen: 16, addr: nftables.TypeIP6Addr}
)

// addLockObjects queues on c the sets (with their elements), the two base
// chains and one rule per chain and family present, then the listeners'
// sets and rules (listen.go).
func addLockObjects(c *nftables.Conn, name string, k lockKeys) error {
	t := &nftables.Table{Name: name, Family: tableFamily}
	accept := nftables.ChainPolicyAccept
	in := c.AddChain(&nftables.Chain{
		Name: chainIn, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	})
	out := c.AddChain(&nftables.Chain{
		Name: chainOut, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRaw, Policy: &accept,
	})
	for _, fk := range []struct {
		f    family
		keys [][]byte
	}{{fam4, k.c4}, {fam6, k.c6}} {
		if len(fk.keys) == 0 {
			continue
		}
		f := fk.f
		s := &nftables.Set{
			Table: t, ID: f.setID, Name: f.set, Concatenation: true,
			KeyType: nftables.MustConcatSetType(f.addr, nftables.TypeInetService, f.addr, nftables.TypeInetService),
		}
		if err := addSet(c, s, fk.keys); err != nil {
			return err
		}
		// Incoming packets carry the remote end as source, outgoing ones
		// the local end: the set key is local . lport . remote . rport.
		c.AddRule(&nftables.Rule{Table: t, Chain: in, Exprs: f.match(f.daddr, f.saddr, 2, 0)})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: f.match(f.saddr, f.daddr, 0, 2)})
	}
	if err := addListenObjects(c, t, in, k); err != nil {
		return err
	}
	return addUDPObjects(c, t, out, k.udp)
}

// match returns the expressions of
//
//	meta nfproto <f> meta l4proto tcp meta mark != <InjectMark>
//	<addr@a1> . th@p1 . <addr@a2> . th@p2 @<set> counter drop
//
// The concatenation is loaded into consecutive 32-bit registers from
// NFT_REG32_00 on, each field starting a new register, which is how the
// kernel reads a concatenated key of a set lookup.
func (f family) match(a1, a2, p1, p2 uint32) []expr.Any {
	slots := f.alen / 4
	reg := func(slot uint32) uint32 { return unix.NFT_REG32_00 + slot }
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, InjectMark)},
		&expr.Payload{DestRegister: reg(0), Base: expr.PayloadBaseNetworkHeader, Offset: a1, Len: f.alen},
		&expr.Payload{DestRegister: reg(slots), Base: expr.PayloadBaseTransportHeader, Offset: p1, Len: 2},
		&expr.Payload{DestRegister: reg(slots + 1), Base: expr.PayloadBaseNetworkHeader, Offset: a2, Len: f.alen},
		&expr.Payload{DestRegister: reg(2*slots + 1), Base: expr.PayloadBaseTransportHeader, Offset: p2, Len: 2},
		&expr.Lookup{SourceRegister: reg(0), SetName: f.set, SetID: f.setID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// record runs add on an nftables.Conn whose dialer only records what its
// Flush would send, and returns those messages without the batch begin and
// end and with sequence and port id cleared (the real socket sets them).
func record(add func(*nftables.Conn) error) ([]netlink.Message, error) {
	var got []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil {
			// Flush reads one acknowledgement per message: errno 0.
			return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
		}
		got = append(got, req...)
		return nil, nil
	}))
	if err != nil {
		return nil, err
	}
	if err := add(c); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	if len(got) < 2 || got[0].Header.Type != unix.NFNL_MSG_BATCH_BEGIN || got[len(got)-1].Header.Type != unix.NFNL_MSG_BATCH_END {
		return nil, fmt.Errorf("record nftables batch: got %d messages, want begin … end", len(got))
	}
	got = got[1 : len(got)-1]
	for i := range got {
		got[i].Header.Sequence = 0
		got[i].Header.PID = 0
	}
	return got, nil
}

// dial opens a lasting nftables connection in ns and returns it with its
// netlink socket. The socket is created on a goroutine locked to an OS thread
// that enters ns and is then thrown away: the goroutine exits without
// runtime.UnlockOSThread, so the runtime ends the thread.
func dial(ns netns.NsHandle) (*nftables.Conn, *netlink.Conn, error) {
	type result struct {
		nft  *nftables.Conn
		sock *netlink.Conn
		err  error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		if err := netns.Set(ns); err != nil {
			resc <- result{err: fmt.Errorf("enter netns %s: %w", ns.UniqueId(), err)}
			return
		}
		var sock *netlink.Conn
		nft, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
			sock = c
			return nil
		}))
		if err != nil {
			resc <- result{err: fmt.Errorf("open nftables socket in netns %s: %w", ns.UniqueId(), err)}
			return
		}
		resc <- result{nft: nft, sock: sock}
	}()
	r := <-resc
	if r.err != nil {
		return nil, nil, r.err
	}
	if r.sock == nil {
		return nil, nil, errors.Join(fmt.Errorf("open nftables socket in netns %s: no socket", ns.UniqueId()), r.nft.CloseLasting())
	}
	// Acknowledgements of errors carry only the request's header, not its
	// (possibly large) payload (NETLINK_CAP_ACK, netlink(7)). Extended
	// acknowledgements stay off: mdlayher/netlink (1.7.3-pre) misreads a
	// capped one ("not enough data for netlink error code") and loses the
	// errno.
	if err := r.sock.SetOption(netlink.CapAcknowledge, true); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("set NETLINK_CAP_ACK on nftables socket: %w", err), r.nft.CloseLasting())
	}
	return r.nft, r.sock, nil
}

// defaultSndbuf is below the kernel's default socket send buffer
// (net.core.wmem_default, 212992): a batch larger than the send buffer fails
// EMSGSIZE (netlink_sendmsg), so a larger one grows the buffer first.
const defaultSndbuf = 200 << 10

// sendBatch sends msgs as one nfnetlink batch on sock and waits for the
// acknowledgement of each message. The kernel applies the batch whole or
// not at all, and answers every message that asked for an acknowledgement
// before sendmsg returns (nfnetlink_rcv_batch); the first error is returned.
func sendBatch(sock *netlink.Conn, msgs []netlink.Message) error {
	batch := make([]netlink.Message, 0, len(msgs)+2)
	batch = append(batch, netlink.Message{
		Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request},
		Data:   nfgenmsg(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	})
	batch = append(batch, msgs...)
	batch = append(batch, netlink.Message{
		Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request},
		Data:   nfgenmsg(unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES),
	})
	size, acks := 0, 0
	for _, m := range batch {
		size += unix.NLMSG_HDRLEN + (len(m.Data)+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)
		if m.Header.Flags&netlink.Acknowledge != 0 {
			acks++
		}
	}
	if size > defaultSndbuf {
		if err := forceSndbuf(sock, 2*size); err != nil {
			return err
		}
	}
	if _, err := sock.SendMessages(batch); err != nil {
		return fmt.Errorf("send nftables batch of %d messages (%d bytes): %w", len(batch), size, err)
	}
	if err := sock.SetReadDeadline(time.Now().Add(ackTimeout)); err != nil {
		return fmt.Errorf("set deadline on nftables socket: %w", err)
	}
	defer sock.SetReadDeadline(time.Time{})
	for got := 0; got < acks; {
		replies, err := sock.Receive()
		if err != nil {
			return fmt.Errorf("apply nftables batch: %w", err)
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				got++
			}
		}
	}
	return nil
}

// forceSndbuf raises the send buffer of sock to n bytes with SO_SNDBUFFORCE
// (needs CAP_NET_ADMIN, which changing nftables needs anyway; socket(7)).
func forceSndbuf(sock *netlink.Conn, n int) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return fmt.Errorf("grow send buffer of nftables socket to %d: %w", n, err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n)
	}); err != nil {
		return fmt.Errorf("grow send buffer of nftables socket to %d: %w", n, err)
	}
	if serr != nil {
		return fmt.Errorf("grow send buffer of nftables socket to %d: %w", n, os.NewSyscallError("setsockopt SO_SNDBUFFORCE", serr))
	}
	return nil
}

// addSet queues set s with keys as its elements. The element list is one
// netlink attribute, whose length is 16 bits (struct nlattr,
// <linux/netlink.h>): the elements are spread over messages of at most
// elemsPerMsg.
func addSet(c *nftables.Conn, s *nftables.Set, keys [][]byte) error {
	if err := c.AddSet(s, nil); err != nil {
		return fmt.Errorf("add set %s: %w", s.Name, err)
	}
	elems := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		elems[i] = nftables.SetElement{Key: k}
	}
	for chunk := range slices.Chunk(elems, elemsPerMsg) {
		if err := c.SetAddElements(s, chunk); err != nil {
			return fmt.Errorf("add %d elements to set %s: %w", len(chunk), s.Name, err)
		}
	}
	return nil
}

// portSet is a set of port keys (addPortKey): address . port with byAddr
// (addr the family's address type), the port alone otherwise.
func portSet(t *nftables.Table, name string, id uint32, addr nftables.SetDatatype, byAddr bool) *nftables.Set {
	s := &nftables.Set{Table: t, ID: id, Name: name, KeyType: nftables.TypeInetService}
	if byAddr {
		s.Concatenation = true
		s.KeyType = nftables.MustConcatSetType(addr, nftables.TypeInetService)
	}
	return s
}
