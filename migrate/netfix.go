package migrate

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/netfix"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetOptions say how sockets whose local address does not exist here are
// handled (see package netfix).
type NetOptions struct {
	Policy netfix.Policy
	Iface  string
	// Skip leaves sockets untouched (no netfix at all).
	Skip bool
}

// NetFixer runs netfix on an image set before it is restored and remembers
// what it changed, to report it or undo it.
type NetFixer struct {
	opts   NetOptions
	log    zerolog.Logger
	h      *netlink.Handle
	nl     netfix.Netlink
	Result *netfix.Result
	// pids[i] is the image pid of Result.Sockets[i]'s process; tree: the
	// image set has several processes (Report names them).
	pids []uint32
	tree bool
}

// NewNetFixer opens a netlink handle in the current network namespace.
func NewNetFixer(opts NetOptions, log zerolog.Logger) (*NetFixer, error) {
	f := &NetFixer{opts: opts, log: log}
	if opts.Skip {
		return f, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	f.h = h
	f.nl = netfix.NewNetlink(h, netns.None())
	return f, nil
}

// Close releases the netlink handle.
func (f *NetFixer) Close() {
	if f.h != nil {
		f.h.Close()
	}
}

// Sockets lists the inet sockets of every process of the image set: the
// root's, then those of a tree's other members in image order (a
// description several members share is listed once per member).
func Sockets(set *image.Set) []netfix.Socket {
	var out []netfix.Socket
	for _, p := range set.Tree.GetProcesses() {
		out = append(out, processSockets(set, p.Pid)...)
	}
	return out
}

// processSockets lists the inet sockets of process pid of the image set.
func processSockets(set *image.Set, pid uint32) []netfix.Socket {
	var out []netfix.Socket
	for _, fd := range set.Fds[pid].GetFds() {
		if s := fd.GetInetSocket(); s != nil {
			out = append(out, netfix.Socket{Fd: fd.Fd, Sock: s})
		}
	}
	return out
}

// Prepare is a restore.Options.Prepare hook: it fixes every socket's local
// address for this host, rewriting the image set in memory. Each process
// of a tree is fixed in turn (fd numbers name sockets within one
// process): a tree member's connection needs its address here as much as
// the root's sockets do. A failure undoes what the earlier processes
// changed.
func (f *NetFixer) Prepare(set *image.Set) error {
	if f.opts.Skip {
		return nil
	}
	procs := set.Tree.GetProcesses()
	svc := ServiceAddresses(set)
	if len(svc) > 0 {
		res, err := netfix.Fix(f.nl, nil, netfix.Options{Policy: f.opts.Policy, Iface: f.opts.Iface, Log: f.log, Addresses: svc})
		if err != nil {
			if errors.Is(err, netfix.ErrNoRoute) && f.opts.Policy == netfix.Takeover && f.opts.Iface == "" {
				err = fmt.Errorf("%w (--net-iface names the interface to add the address to)", err)
			}
			return fmt.Errorf("netfix: %w", err)
		}
		f.Result = &netfix.Result{Changes: res.Changes}
	}
	for _, p := range procs {
		socks := processSockets(set, p.Pid)
		if len(socks) == 0 {
			continue
		}
		log := f.log
		if len(procs) > 1 {
			log = f.log.With().Uint32("pid", p.Pid).Logger()
		}
		res, err := netfix.Fix(f.nl, socks, netfix.Options{Policy: f.opts.Policy, Iface: f.opts.Iface, Log: log, Quiet: len(svc) > 0})
		if err != nil {
			if uerr := f.Undo(); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo network changes: %w", uerr))
			}
			f.Result, f.pids = nil, nil
			if errors.Is(err, netfix.ErrNoRoute) && f.opts.Policy == netfix.Takeover && f.opts.Iface == "" {
				// A host without a default route (a bridge of its own):
				// the takeover cannot pick the interface by itself.
				err = fmt.Errorf("%w (--net-iface names the interface to add the address to)", err)
			}
			if len(procs) > 1 {
				return fmt.Errorf("netfix pid %d: %w", p.Pid, err)
			}
			return fmt.Errorf("netfix: %w", err)
		}
		if f.Result == nil {
			f.Result = &netfix.Result{}
		}
		f.Result.Changes = append(f.Result.Changes, res.Changes...)
		byFd := map[int32]*pb.InetSocket{}
		for _, s := range socks {
			byFd[s.Fd] = s.Sock
		}
		for _, sf := range res.Sockets {
			f.Result.Sockets = append(f.Result.Sockets, sf)
			f.pids = append(f.pids, p.Pid)
			if s := byFd[sf.Fd]; s != nil && sf.New.IsValid() && sf.New != sf.Old {
				s.LocalAddr = sf.New.Addr().String()
				log.Info().Int32("fd", sf.Fd).Stringer("old", sf.Old).Stringer("new", sf.New).Str("why", sf.Reason).Msg("socket rebound")
			}
		}
	}
	f.tree = len(procs) > 1
	return nil
}

// Undo reverts the network changes (restore failed after Prepare); a
// second call has nothing left to undo.
func (f *NetFixer) Undo() error {
	if f.Result == nil || len(f.Result.Changes) == 0 {
		return nil
	}
	err := netfix.Undo(f.nl, f.Result.Changes)
	f.Result.Changes = nil
	return err
}

// Report lists, for people, what netfix did.
func (f *NetFixer) Report() []string {
	if f.Result == nil {
		return nil
	}
	var out []string
	for i, sf := range f.Result.Sockets {
		if sf.New != sf.Old {
			who := fmt.Sprintf("fd %d", sf.Fd)
			if f.tree {
				who = fmt.Sprintf("pid %d fd %d", f.pids[i], sf.Fd)
			}
			out = append(out, fmt.Sprintf("%s: %s -> %s (%s)", who, sf.Old, sf.New, sf.Reason))
		}
	}
	for _, c := range f.Result.Changes {
		out = append(out, c.Cmd)
	}
	return out
}

// ServiceAddresses are the image's service addresses (dump
// --net-address, pb.Inventory.ServiceAddresses); one that does not parse
// is left out (dump checked them).
func ServiceAddresses(set *image.Set) []netip.Addr {
	var out []netip.Addr
	for _, s := range set.Inventory.GetServiceAddresses() {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap().WithZone(""))
		}
	}
	return out
}

// addresses are the local addresses of the image's sockets and its
// service addresses.
func addresses(set *image.Set) []netip.Addr {
	out := netfix.Addresses(Sockets(set))
	for _, a := range ServiceAddresses(set) {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// releaseAddresses removes from this host the local addresses of the
// image's sockets and its service addresses (after a takeover migration
// moved them to the target).
func releaseAddresses(set *image.Set, log zerolog.Logger) ([]string, error) {
	addrs := addresses(set)
	var keep []netip.Addr
	for _, a := range addrs {
		if !a.IsLoopback() && !a.IsUnspecified() {
			keep = append(keep, a)
		}
	}
	if len(keep) == 0 {
		return nil, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	changes, err := netfix.Release(netfix.NewNetlink(h, netns.None()), keep, "", log)
	var out []string
	for _, c := range changes {
		out = append(out, c.Cmd)
	}
	return out, err
}

// announceAddresses sends a gratuitous ARP for each IPv4 local address of
// the image's sockets that is on this host, out of the link holding it:
// after a takeover migration was rolled back the target gave the address
// up, but the peers' neighbour caches still name the target's link
// address, and without an announcement they find their way back only when
// those entries go stale (tens of seconds, in which their TCP
// retransmissions are lost). Equivalent to, per address: `arping -U -c 1
// -I $link $addr`. Links without ARP and IPv6 addresses are left alone.
func announceAddresses(set *image.Set, log zerolog.Logger) ([]string, error) {
	var want []netip.Addr
	for _, a := range addresses(set) {
		if a.Is4() {
			want = append(want, a)
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	return announce(netfix.NewNetlink(h, netns.None()), want, log)
}

// announce is announceAddresses on h.
func announce(h netfix.Netlink, want []netip.Addr, log zerolog.Logger) ([]string, error) {
	list, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []string
	var errs []error
	for _, la := range list {
		ip, ok := netip.AddrFromSlice(la.IP)
		if !ok || !slices.Contains(want, ip.Unmap()) {
			continue
		}
		ip = ip.Unmap()
		link, err := h.LinkByIndex(la.LinkIndex)
		if err != nil {
			errs = append(errs, fmt.Errorf("announce %s: find link %d: %w", ip, la.LinkIndex, err))
			continue
		}
		at := link.Attrs()
		if len(at.HardwareAddr) != 6 || at.Flags&net.FlagLoopback != 0 || at.RawFlags&unix.IFF_NOARP != 0 {
			continue
		}
		if err := h.Announce(link, ip); err != nil {
			errs = append(errs, fmt.Errorf("announce %s on %s: %w", ip, at.Name, err))
			continue
		}
		cmd := fmt.Sprintf("arping -U -c 1 -I %s %s", at.Name, ip)
		log.Info().Str("cmd", cmd).Msg("address announced again")
		out = append(out, cmd)
	}
	return out, errors.Join(errs...)
}
