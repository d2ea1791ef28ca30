package migrate

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/proc"
)

// TCP states that hold no 4-tuple a connection could conflict with:
// TIME_WAIT (a repaired connect may reuse it), CLOSE, LISTEN
// (include/net/tcp_states.h).
const (
	tcpTimeWait = 6
	tcpClose    = 7
	tcpListen   = 10
)

// checkConnectionsFree refuses, before anything is built, a lazy
// migration of established TCP connections (of any process of the tree)
// whose 4-tuple a socket of this network namespace still holds: on one
// host the frozen original keeps its connections until the target is
// done, and the repaired connect(2) of the copy would fail EADDRNOTAVAIL
// (__inet_check_established finds the original's socket). The source then
// releases the original, whose connections carry on.
func checkConnectionsFree(set *image.Set) error {
	type conn struct{ local, peer netip.AddrPort }
	want := map[conn]string{}
	for _, p := range set.Tree.GetProcesses() {
		for _, f := range set.Fds[p.Pid].GetFds() {
			s := f.GetInetSocket()
			if s.GetTcp() == nil || f.DupOf != nil {
				continue
			}
			l, err1 := netip.ParseAddr(s.LocalAddr)
			r, err2 := netip.ParseAddr(s.PeerAddr)
			if err1 != nil || err2 != nil {
				continue // refused with its fd by the restore
			}
			c := conn{netip.AddrPortFrom(l.Unmap(), uint16(s.LocalPort)), netip.AddrPortFrom(r.Unmap(), uint16(s.PeerPort))}
			want[c] = fmt.Sprintf("pid %d fd %d (TCP connection %s -> %s)", p.Pid, f.Fd, c.local, c.peer)
		}
	}
	if len(want) == 0 {
		return nil
	}
	for _, table := range []string{"tcp", "tcp6"} {
		socks, err := proc.ReadNetSockets(os.Getpid(), table)
		if err != nil {
			return fmt.Errorf("check TCP connections: %w", err)
		}
		for _, k := range socks {
			if k.State == tcpListen || k.State == tcpClose || k.State == tcpTimeWait {
				continue
			}
			c := conn{netip.AddrPortFrom(k.Local.Addr().Unmap(), k.Local.Port()), netip.AddrPortFrom(k.Remote.Addr().Unmap(), k.Remote.Port())}
			if what, ok := want[c]; ok {
				return fmt.Errorf("restore %s lazily: the connection still exists in this network namespace (socket:[%d], the frozen original's if this is its host): a lazy migration cannot move an established connection within one network namespace, the original holds it until the target is done; migrate into another network namespace (host), or use dump -D / restore -D", what, k.Inode)
			}
		}
	}
	return nil
}
