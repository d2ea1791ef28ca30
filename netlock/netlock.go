package netlock

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/proc"
)

// Sentinel errors.
var (
	// ErrNoConns reports a lock asked for no connection.
	ErrNoConns = errors.New("no connections to lock")
	// ErrBadConn reports a connection whose 4-tuple cannot be matched: an
	// invalid or unspecified address, port 0, or a local and a remote
	// address of different families.
	ErrBadConn = errors.New("bad connection")
	// ErrNoNetns reports a closed network-namespace handle.
	ErrNoNetns = errors.New("network namespace handle not open")
)

// Conn is one TCP connection, by its addresses as seen inside the locked
// network namespace. IPv4-mapped IPv6 addresses (a dual-stack socket talking
// IPv4) are matched as the IPv4 packets they are on the wire.
type Conn struct {
	Local, Remote netip.AddrPort
}

func (c Conn) String() string { return c.Local.String() + " -> " + c.Remote.String() }

// Options configures [Acquire].
type Options struct {
	// Log receives one info line per lock taken or released, and a warning
	// when the kernel cannot bind the table to its socket.
	Log zerolog.Logger

	// Listeners are listening sockets whose new connections the lock
	// holds off too (their SYNs are dropped, see [Listener]).
	Listeners []Listener

	// UDPPorts are bound UDP sockets about to be re-created whose
	// port-unreachable errors the lock drops (see [UDPPort]).
	UDPPorts []UDPPort

	// noOwner creates the table without NFT_TABLE_F_OWNER, as on a kernel
	// older than 5.12 (tests only).
	noOwner bool
}

// Lock is an installed network lock. Its methods are safe for concurrent use.
//
// Keep a Lock reachable until Unlock: its socket is an *os.File inside
// mdlayher/netlink, and if the Lock is garbage-collected the runtime's
// finalizer closes that socket, which (for an owned table) removes the lock.
type Lock struct {
	table string
	owned bool
	conns int
	ns    string
	log   zerolog.Logger

	// mu guards nft.
	mu sync.Mutex
	// nft is the lasting connection on the socket that created (and, with
	// owned, owns) the table; nil once unlocked.
	nft *nftables.Conn
}

// tableFamily is the nftables family of every lock: inet covers IPv4 and
// IPv6 in one table.
const tableFamily = nftables.TableFamilyINet

// Chain and set names inside a lock's table.
const (
	chainIn  = "in"
	chainOut = "out"
	set4     = "conns4"
	set6     = "conns6"
)

// InjectMark is the packet mark (SO_MARK, socket(7)) that a lock lets
// through: lazycr's own segments, written from a raw socket into a
// connection it is re-creating while that connection is locked (the
// peer's FIN of a half-closed connection, files/tcpfin.go), carry it. The
// kernel keeps the mark of a locally generated packet when it loops back
// to the input hook of the same namespace (a local destination leaves
// through lo), so both chains see it. Setting a mark needs CAP_NET_ADMIN.
const InjectMark = 0x6c7a6372 // "lzcr"

// ackTimeout bounds the wait for the kernel's answers to one batch; they are
// sent before the sendmsg(2) that carried the batch returns, so reaching it
// means a protocol error, not a slow kernel.
const ackTimeout = 10 * time.Second

// seq numbers the locks of this process, so that two locks of one lazycr in
// one namespace get distinct tables.
var seq atomic.Uint64

// Acquire locks conns in the network namespace ns: from its return until
// [Lock.Unlock], every packet of those connections, in either direction, is
// dropped in that namespace. Either the whole lock is installed or nothing
// is. The namespace handle is only used during the call.
//
// Equivalent to `nft -f` of the table shown in the package documentation,
// with `flags owner`.
func Acquire(ns netns.NsHandle, conns []Conn, opts Options) (*Lock, error) {
	nsName := ns.UniqueId()
	if !ns.IsOpen() {
		return nil, fmt.Errorf("lock %d connections: %w", len(conns), ErrNoNetns)
	}
	k, err := lockKeysWith(conns, opts.Listeners, opts.UDPPorts)
	if err != nil {
		return nil, fmt.Errorf("lock %d connections, %d listeners and %d UDP ports in netns %s: %w", len(conns), len(opts.Listeners), len(opts.UDPPorts), nsName, err)
	}
	pid := os.Getpid()
	start, err := proc.ProcessIdentity(pid)
	if err != nil {
		return nil, fmt.Errorf("lock %d connections in netns %s: read start time of pid %d: %w", len(conns), nsName, pid, err)
	}
	name := tableName{pid: pid, start: start, seq: seq.Add(1)}.String()

	owned := !opts.noOwner
	nft, err := install(ns, name, owned, k)
	if owned && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP)) {
		// Kernels before 5.12 know no NFT_TABLE_F_OWNER: nf_tables_newtable
		// rejects flags other than NFT_TABLE_F_DORMANT with EINVAL (later
		// kernels answer unknown flags with EOPNOTSUPP). Retry without the
		// flag; only the flag differs, so if that works the flag was the
		// cause, and the table must be cleaned up by Sweep after a crash.
		if nft2, err2 := install(ns, name, false, k); err2 == nil {
			opts.Log.Warn().Str("table", name).Str("netns", nsName).AnErr("owner_err", err).
				Msg("kernel has no owner-bound nftables tables: a killed lazycr leaves this lock until netlock.Sweep")
			nft, err, owned = nft2, nil, false
		}
	}
	if err != nil {
		return nil, fmt.Errorf("lock %d connections and %d listeners in netns %s: install table inet %s: %w", k.conns(), k.listeners(), nsName, name, err)
	}
	l := &Lock{table: name, owned: owned, conns: k.conns(), ns: nsName, log: opts.Log, nft: nft}
	opts.Log.Info().Str("table", name).Str("netns", nsName).Int("conns", l.conns).Int("listeners", k.listeners()).Int("udp_ports", k.udp.n()).Bool("owned", owned).Msg("network locked")
	return l, nil
}

// Table returns the name of the lock's nftables table (family inet).
func (l *Lock) Table() string { return l.table }

// Owned reports whether the kernel binds the table to the lock's socket, so
// that it disappears with lazycr even if lazycr is killed.
func (l *Lock) Owned() bool { return l.owned }

// Dropped returns how many packets the lock has dropped so far, coming in
// and going out. After Unlock it returns [os.ErrClosed].
func (l *Lock) Dropped() (in, out uint64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nft == nil {
		return 0, 0, fmt.Errorf("read counters of table inet %s: %w", l.table, os.ErrClosed)
	}
	t := &nftables.Table{Name: l.table, Family: tableFamily}
	for _, c := range []struct {
		name string
		n    *uint64
	}{{chainIn, &in}, {chainOut, &out}} {
		rules, err := l.nft.GetRules(t, &nftables.Chain{Name: c.name, Table: t})
		if err != nil {
			return 0, 0, fmt.Errorf("list rules of chain %s in table inet %s: %w", c.name, l.table, err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if ctr, ok := e.(*expr.Counter); ok {
					*c.n += ctr.Packets
				}
			}
		}
	}
	return in, out, nil
}

// Unlock removes the lock's table and closes its socket; packets of the
// connections flow again. It is idempotent, and a table that is already
// gone is success.
//
// Packets flow as soon as the delete is committed (about 0.3 ms here); the
// close that follows takes longer (10–30 ms here) because the kernel's
// NETLINK_URELEASE handler first waits for the destruction of the deleted
// objects, which waits for an RCU grace period (nft_rcv_nl_event calls
// nf_tables_trans_destroy_flush_work).
//
// Equivalent to: nft delete table inet <table>
func (l *Lock) Unlock() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nft == nil {
		return nil
	}
	err := l.deleteTable()
	// For an owned table, closing the socket removes it even if the
	// delete failed (NETLINK_URELEASE, see the package doc).
	if cerr := l.closeSocket(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return err
	}
	l.log.Info().Str("table", l.table).Str("netns", l.ns).Int("conns", l.conns).Msg("network unlocked")
	return nil
}

// Open lets the connections' packets flow again at once (the table is
// deleted, about 0.3 ms) and returns the slow half of Unlock: closing the
// lock's socket (10–30 ms, see Unlock), for the caller to run when it is
// not in a hurry. The lock counts as unlocked; if the delete fails, the
// socket is closed at once (which removes an owned table anyway) and the
// error returned. The returned function is idempotent.
func (l *Lock) Open() (closeSocket func() error, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nft == nil {
		return func() error { return nil }, nil
	}
	if err := l.deleteTable(); err != nil {
		return func() error { return nil }, errors.Join(err, l.closeSocket())
	}
	nft := l.nft
	l.nft = nil
	l.log.Info().Str("table", l.table).Str("netns", l.ns).Int("conns", l.conns).Msg("network unlocked")
	var once sync.Once
	var cerr error
	return func() error {
		once.Do(func() {
			if err := nft.CloseLasting(); err != nil {
				cerr = fmt.Errorf("close nftables socket of table inet %s: %w", l.table, err)
			}
		})
		return cerr
	}, nil
}

// deleteTable deletes the table through the lock's socket; l.mu is held.
func (l *Lock) deleteTable() error {
	l.nft.DelTable(&nftables.Table{Name: l.table, Family: tableFamily})
	if err := l.nft.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete table inet %s in netns %s: %w", l.table, l.ns, err)
	}
	return nil
}

// closeSocket closes the lock's socket and forgets it; l.mu is held.
func (l *Lock) closeSocket() error {
	nft := l.nft
	l.nft = nil
	if err := nft.CloseLasting(); err != nil {
		return fmt.Errorf("close nftables socket of table inet %s: %w", l.table, err)
	}
	return nil
}

// keys validates conns and returns the set keys of the IPv4 and IPv6 ones,
// without duplicates.
func keys(conns []Conn) (k4, k6 [][]byte, err error) {
	if len(conns) == 0 {
		return nil, nil, ErrNoConns
	}
	seen := make(map[Conn]bool, len(conns))
	for _, c := range conns {
		n := Conn{
			Local:  netip.AddrPortFrom(c.Local.Addr().Unmap().WithZone(""), c.Local.Port()),
			Remote: netip.AddrPortFrom(c.Remote.Addr().Unmap().WithZone(""), c.Remote.Port()),
		}
		la, ra := n.Local.Addr(), n.Remote.Addr()
		switch {
		case !la.IsValid() || !ra.IsValid() || la.IsUnspecified() || ra.IsUnspecified():
			return nil, nil, fmt.Errorf("connection %s: address missing: %w", c, ErrBadConn)
		case n.Local.Port() == 0 || n.Remote.Port() == 0:
			return nil, nil, fmt.Errorf("connection %s: port 0: %w", c, ErrBadConn)
		case la.Is4() != ra.Is4():
			return nil, nil, fmt.Errorf("connection %s: mixed address families: %w", c, ErrBadConn)
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		if la.Is4() {
			k4 = append(k4, setKey(n))
		} else {
			k6 = append(k6, setKey(n))
		}
	}
	return k4, k6, nil
}

// setKey is the element of the 4-tuple set for c: local address, local port,
// remote address, remote port, each field padded to a 32-bit register as the
// kernel lays out concatenations (nft_payload_eval zeroes the rest of a
// register it loads fewer than 4 bytes into).
func setKey(c Conn) []byte {
	la, ra := c.Local.Addr().AsSlice(), c.Remote.Addr().AsSlice()
	k := make([]byte, 0, 2*len(la)+8)
	k = append(k, la...)
	k = append(k, byte(c.Local.Port()>>8), byte(c.Local.Port()), 0, 0)
	k = append(k, ra...)
	k = append(k, byte(c.Remote.Port()>>8), byte(c.Remote.Port()), 0, 0)
	return k
}

// install dials an nftables socket in ns and creates the lock's table in one
// batch on it. On success the returned lasting Conn holds that socket.
func install(ns netns.NsHandle, name string, owned bool, k lockKeys) (*nftables.Conn, error) {
	msgs, err := encodeKeys(name, owned, k)
	if err != nil {
		return nil, err
	}
	nft, sock, err := dial(ns)
	if err != nil {
		return nil, err
	}
	if err := sendBatch(sock, msgs); err != nil {
		return nil, errors.Join(err, nft.CloseLasting())
	}
	return nft, nil
}
