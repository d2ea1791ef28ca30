package migrate

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/rs/zerolog"
	"github.com/vishvananda/netlink"

	"github.com/lazycr/lazycr/netfix"
)

// fakeAnnounceNetlink has addresses on links 1 (eth0, Ethernet), 2 (lo)
// and 3 (a NOARP tunnel), and records the announcements.
type fakeAnnounceNetlink struct {
	netfix.Netlink // the rest: unused (a call panics)
	sent           []string
}

func (f *fakeAnnounceNetlink) AddrList(link netlink.Link, family int) ([]netlink.Addr, error) {
	addr := func(ip string, link int) netlink.Addr {
		return netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(24, 32)}, LinkIndex: link}
	}
	return []netlink.Addr{addr("10.0.0.100", 1), addr("10.0.0.2", 1), addr("127.0.0.1", 2), addr("10.1.0.100", 3)}, nil
}

func (f *fakeAnnounceNetlink) LinkByIndex(i int) (netlink.Link, error) {
	l := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: i}}
	switch i {
	case 1:
		l.Name, l.HardwareAddr = "eth0", net.HardwareAddr{2, 0, 0, 0, 0, 1}
	case 2:
		l.Name, l.Flags = "lo", net.FlagLoopback
	case 3:
		l.Name, l.RawFlags = "tun0", 0x80 // IFF_NOARP
	}
	return l, nil
}

func (f *fakeAnnounceNetlink) Announce(link netlink.Link, a netip.Addr) error {
	f.sent = append(f.sent, link.Attrs().Name+" "+a.String())
	return nil
}

// announce sends one gratuitous ARP per wanted address that is here, out
// of its own link, and none for addresses elsewhere or on links without
// ARP.
func TestAnnounce(t *testing.T) {
	h := &fakeAnnounceNetlink{}
	want := []netip.Addr{netip.MustParseAddr("10.0.0.100"), netip.MustParseAddr("10.1.0.100"), netip.MustParseAddr("10.9.9.9")}
	cmds, err := announce(h, want, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(h.sent, []string{"eth0 10.0.0.100"}) {
		t.Errorf("announced %v, want only 10.0.0.100 on eth0", h.sent)
	}
	if !slices.Equal(cmds, []string{"arping -U -c 1 -I eth0 10.0.0.100"}) {
		t.Errorf("reported %q", cmds)
	}
}
