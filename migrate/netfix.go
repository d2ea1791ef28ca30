package migrate

import (
	"fmt"
	"net/netip"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/netfix"
	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// Sockets lists the inet sockets of the image set's root process.
func Sockets(set *image.Set) []netfix.Socket {
	var out []netfix.Socket
	root := set.Root()
	if root == nil || set.Fds[root.Pid] == nil {
		return nil
	}
	for _, fd := range set.Fds[root.Pid].Fds {
		if s := fd.GetInetSocket(); s != nil {
			out = append(out, netfix.Socket{Fd: fd.Fd, Sock: s})
		}
	}
	return out
}

// Prepare is a restore.Options.Prepare hook: it fixes every socket's local
// address for this host, rewriting the image set in memory.
func (f *NetFixer) Prepare(set *image.Set) error {
	if f.opts.Skip {
		return nil
	}
	socks := Sockets(set)
	if len(socks) == 0 {
		return nil
	}
	res, err := netfix.Fix(f.nl, socks, netfix.Options{Policy: f.opts.Policy, Iface: f.opts.Iface, Log: f.log})
	if err != nil {
		return fmt.Errorf("netfix: %w", err)
	}
	f.Result = res
	byFd := map[int32]*pb.InetSocket{}
	for _, s := range socks {
		byFd[s.Fd] = s.Sock
	}
	for _, sf := range res.Sockets {
		if s := byFd[sf.Fd]; s != nil && sf.New.IsValid() && sf.New != sf.Old {
			s.LocalAddr = sf.New.Addr().String()
			f.log.Info().Int32("fd", sf.Fd).Stringer("old", sf.Old).Stringer("new", sf.New).Str("why", sf.Reason).Msg("socket rebound")
		}
	}
	return nil
}

// Undo reverts the network changes (restore failed after Prepare).
func (f *NetFixer) Undo() error {
	if f.Result == nil || len(f.Result.Changes) == 0 {
		return nil
	}
	return netfix.Undo(f.nl, f.Result.Changes)
}

// Report lists, for people, what netfix did.
func (f *NetFixer) Report() []string {
	if f.Result == nil {
		return nil
	}
	var out []string
	for _, sf := range f.Result.Sockets {
		if sf.New != sf.Old {
			out = append(out, fmt.Sprintf("fd %d: %s -> %s (%s)", sf.Fd, sf.Old, sf.New, sf.Reason))
		}
	}
	for _, c := range f.Result.Changes {
		out = append(out, c.Cmd)
	}
	return out
}

// releaseAddresses removes from this host the local addresses of the
// image's sockets (after a takeover migration moved them to the target).
func releaseAddresses(set *image.Set, log zerolog.Logger) ([]string, error) {
	addrs := netfix.Addresses(Sockets(set))
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
