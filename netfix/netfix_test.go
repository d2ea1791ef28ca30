package netfix

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// testHost has four kinds of links: loopback, two Ethernet links with
// IPv4 and IPv6, a third Ethernet link, and a NOARP tunnel.
const testHost = `
link lo - noarp
link eth0 02:00:00:00:00:01
link eth1 02:00:00:00:00:02
link eth2 02:00:00:00:00:03
link wg0 - noarp
addr 127.0.0.1/8 dev lo
addr ::1/128 dev lo
addr 10.0.0.7/24 dev eth0
addr fd00::7/64 dev eth0
addr 10.1.0.1/16 dev eth1
addr 10.1.0.2/16 dev eth1
addr fd01::1/64 dev eth1
addr 10.2.0.1/24 dev eth2
addr 10.8.0.1/24 dev wg0
route 10.0.0.0/24 dev eth0
route fd00::/64 dev eth0
route 10.1.0.0/16 dev eth1
route 192.168.50.0/24 via 10.1.0.254 dev eth1 src 10.1.0.2
route fd01::/64 dev eth1
route 10.2.0.0/24 dev eth2
route 10.8.0.0/24 dev wg0
route 203.0.113.0/24 unreachable
route default via 10.0.0.1 dev eth0 metric 100
route default via fd00::1 dev eth0 metric 100
`

// sk is a socket of the image: "udp" or "tcp", local and peer as
// address:port ("" for none). An IPv4-mapped local address makes an AF_INET6
// socket.
func sk(fd int32, typ, local, peer string, opt ...func(*pb.InetSocket)) Socket {
	l := netip.MustParseAddrPort(local)
	s := &pb.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
		LocalAddr: l.Addr().String(), LocalPort: uint32(l.Port())}
	if l.Addr().Is6() {
		s.Family = unix.AF_INET6
	}
	if typ == "tcp" {
		s.Type, s.Protocol, s.Listening = unix.SOCK_STREAM, unix.IPPROTO_TCP, true
	}
	if peer != "" {
		p := netip.MustParseAddrPort(peer)
		s.PeerAddr, s.PeerPort = p.Addr().String(), uint32(p.Port())
	}
	for _, o := range opt {
		o(s)
	}
	return Socket{Fd: fd, Sock: s}
}

func fixText(fs []SocketFix) []string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("fd %d: %s -> %s", f.Fd, f.Old, f.New))
	}
	return out
}

func cmds(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Cmd)
	}
	return out
}

func lines(s ...string) []string { return s }

func TestFix(t *testing.T) {
	tests := []struct {
		name    string
		extra   string // more host lines
		sockets []Socket
		opts    Options
		fixes   []string // SocketFix as "fd N: old -> new"
		ops     []string // recorded operations, iproute2 text
		err     error    // errors.Is target
		errText []string // substrings of the error
	}{{
		name: "address exists",
		sockets: []Socket{
			sk(3, "udp", "10.0.0.7:53", ""),
			sk(4, "tcp", "[fd00::7]:80", ""),
			sk(5, "udp", "127.0.0.1:9", "127.0.0.1:10"),
			sk(6, "udp", "[::ffff:10.1.0.1]:53", ""),
		},
		opts: Options{Policy: Fail},
	}, {
		name: "unspecified address",
		sockets: []Socket{
			sk(3, "udp", "0.0.0.0:53", ""),
			sk(4, "tcp", "[::]:80", ""),
			sk(5, "udp", "0.0.0.0:0", "10.1.0.9:5000"),
		},
		opts: Options{Policy: Fail},
	}, {
		name:    "rebind bound-only IPv4 takes the default route's source",
		sockets: []Socket{sk(3, "tcp", "10.9.0.2:8080", "")},
		fixes:   lines("fd 3: 10.9.0.2:8080 -> 10.0.0.7:8080"),
	}, {
		name:    "rebind connected UDP IPv4 takes the source toward the peer",
		sockets: []Socket{sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000")},
		fixes:   lines("fd 3: 10.9.0.2:4000 -> 10.1.0.1:4000"),
	}, {
		name:    "rebind uses the route's preferred source",
		sockets: []Socket{sk(3, "udp", "10.9.0.2:4000", "192.168.50.3:5000")},
		fixes:   lines("fd 3: 10.9.0.2:4000 -> 10.1.0.2:4000"),
	}, {
		name:    "rebind bound-only IPv6",
		sockets: []Socket{sk(3, "udp", "[fd09::2]:4000", "")},
		fixes:   lines("fd 3: [fd09::2]:4000 -> [fd00::7]:4000"),
	}, {
		name:    "rebind connected UDP IPv6",
		sockets: []Socket{sk(3, "udp", "[fd09::2]:4000", "[fd01::9]:5000")},
		fixes:   lines("fd 3: [fd09::2]:4000 -> [fd01::1]:4000"),
	}, {
		name:    "rebind IPv4-mapped on an AF_INET6 socket stays mapped",
		sockets: []Socket{sk(3, "udp", "[::ffff:10.9.0.2]:4000", "[::ffff:10.1.0.9]:5000")},
		fixes:   lines("fd 3: [::ffff:10.9.0.2]:4000 -> [::ffff:10.1.0.1]:4000"),
	}, {
		name: "rebind honours SO_BINDTODEVICE",
		extra: `route default via 10.2.0.254 dev eth2 metric 200
`,
		sockets: []Socket{sk(3, "udp", "10.9.0.2:4000", "", func(s *pb.InetSocket) {
			s.Options = &pb.SocketOptions{BindToDevice: "eth2"}
		})},
		fixes: lines("fd 3: 10.9.0.2:4000 -> 10.2.0.1:4000"),
	}, {
		name:    "rebind bound-only without a default route",
		sockets: []Socket{sk(3, "udp", "[fd09::2]:4000", "", func(s *pb.InetSocket) { s.Options = &pb.SocketOptions{BindToDevice: "eth2"} })},
		err:     ErrNoRoute,
		errText: lines("socket fd 3 bound to [fd09::2]:4000", "no default route for IPv6"),
	}, {
		name:    "takeover connected IPv4",
		sockets: []Socket{sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000")},
		opts:    Options{Policy: Takeover},
		fixes:   lines("fd 3: 10.9.0.2:4000 -> 10.9.0.2:4000"),
		ops:     lines("ip addr replace 10.9.0.2/32 dev eth1", "arping -U -c 1 -I eth1 10.9.0.2"),
	}, {
		name:    "takeover inside the interface's subnet uses its prefix",
		sockets: []Socket{sk(3, "udp", "10.0.0.5:4000", "10.0.0.9:5000")},
		opts:    Options{Policy: Takeover},
		fixes:   lines("fd 3: 10.0.0.5:4000 -> 10.0.0.5:4000"),
		ops:     lines("ip addr replace 10.0.0.5/24 dev eth0", "arping -U -c 1 -I eth0 10.0.0.5"),
	}, {
		name:    "takeover bound-only goes to the default route's interface",
		sockets: []Socket{sk(3, "tcp", "10.9.0.2:80", "")},
		opts:    Options{Policy: Takeover},
		fixes:   lines("fd 3: 10.9.0.2:80 -> 10.9.0.2:80"),
		ops:     lines("ip addr replace 10.9.0.2/32 dev eth0", "arping -U -c 1 -I eth0 10.9.0.2"),
	}, {
		name:    "takeover IPv6 without neighbour advertisement",
		sockets: []Socket{sk(3, "udp", "[fd09::2]:4000", "[fd01::9]:5000"), sk(4, "udp", "[fd01::5]:4001", "[fd01::9]:5000")},
		opts:    Options{Policy: Takeover},
		fixes:   lines("fd 3: [fd09::2]:4000 -> [fd09::2]:4000", "fd 4: [fd01::5]:4001 -> [fd01::5]:4001"),
		ops:     lines("ip addr replace fd09::2/128 dev eth1 nodad", "ip addr replace fd01::5/64 dev eth1 nodad"),
	}, {
		name: "takeover of one address shared by sockets is done once",
		sockets: []Socket{
			sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000"),
			sk(4, "tcp", "10.9.0.2:80", ""),
		},
		opts:  Options{Policy: Takeover},
		fixes: lines("fd 3: 10.9.0.2:4000 -> 10.9.0.2:4000"),
		ops:   lines("ip addr replace 10.9.0.2/32 dev eth1", "arping -U -c 1 -I eth1 10.9.0.2"),
	}, {
		name: "takeover on --net-iface routes the peer through it",
		sockets: []Socket{
			sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000"),
			sk(4, "udp", "10.9.0.3:4000", "10.1.0.9:5000"),
		},
		opts:  Options{Policy: Takeover, Iface: "eth2"},
		fixes: lines("fd 3: 10.9.0.2:4000 -> 10.9.0.2:4000", "fd 4: 10.9.0.3:4000 -> 10.9.0.3:4000"),
		ops: lines(
			"ip addr replace 10.9.0.2/32 dev eth2", "ip route replace 10.1.0.9/32 dev eth2", "arping -U -c 1 -I eth2 10.9.0.2",
			"ip addr replace 10.9.0.3/32 dev eth2", "arping -U -c 1 -I eth2 10.9.0.3"),
	}, {
		name:    "takeover on a NOARP link sends no ARP",
		sockets: []Socket{sk(3, "udp", "10.9.0.2:4000", "10.8.0.9:5000")},
		opts:    Options{Policy: Takeover},
		fixes:   lines("fd 3: 10.9.0.2:4000 -> 10.9.0.2:4000"),
		ops:     lines("ip addr replace 10.9.0.2/32 dev wg0"),
	}, {
		name:    "takeover onto a missing --net-iface",
		sockets: []Socket{sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000")},
		opts:    Options{Policy: Takeover, Iface: "eth9"},
		errText: lines("take over 10.9.0.2 for socket fd 3", "find link eth9"),
	}, {
		name:    "fail",
		sockets: []Socket{sk(3, "udp", "10.0.0.7:53", ""), sk(5, "udp", "10.9.0.2:4000", "10.1.0.9:5000")},
		opts:    Options{Policy: Fail},
		err:     ErrAddrNotHere,
		errText: lines("socket fd 5 bound to 10.9.0.2:4000"),
	}, {
		name: "peer without a route, rebind",
		sockets: []Socket{sk(7, "udp", "[fd09::2]:4000", "[fd77::1]:5000", func(s *pb.InetSocket) {
			s.Options = &pb.SocketOptions{BindToDevice: "eth2"}
		})},
		err:     ErrNoRoute,
		errText: lines("find route to peer fd77::1 of socket fd 7", "network is unreachable"),
	}, {
		name:    "peer behind an unreachable route, even when the address exists",
		sockets: []Socket{sk(7, "udp", "10.0.0.7:4000", "203.0.113.9:5000")},
		opts:    Options{Policy: Takeover},
		err:     ErrNoRoute,
		errText: lines("find route to peer 203.0.113.9 of socket fd 7"),
	}, {
		name: "failure undoes the takeovers made",
		sockets: []Socket{
			sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000"),
			sk(4, "udp", "10.9.0.3:4000", "203.0.113.9:5000"),
		},
		opts:    Options{Policy: Takeover, Iface: "eth2"},
		err:     ErrNoRoute,
		errText: lines("peer 203.0.113.9 of socket fd 4"),
		ops: lines(
			"ip addr replace 10.9.0.2/32 dev eth2", "ip route replace 10.1.0.9/32 dev eth2", "arping -U -c 1 -I eth2 10.9.0.2",
			"ip route del 10.1.0.9/32 dev eth2", "ip addr del 10.9.0.2/32 dev eth2"),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testHost + tt.extra
			h := newFakeHost(t, spec)
			var logs bytes.Buffer
			tt.opts.Log = zerolog.New(&logs)
			res, err := Fix(h, tt.sockets, tt.opts)
			if !slices.Equal(h.ops, tt.ops) {
				t.Errorf("operations:\n got %q\nwant %q", h.ops, tt.ops)
			}
			if tt.err != nil || tt.errText != nil {
				if err == nil {
					t.Fatalf("Fix = %v, want error", fixText(res.Sockets))
				}
				if res != nil {
					t.Errorf("Fix returned a result with error %v", err)
				}
				if tt.err != nil && !errors.Is(err, tt.err) {
					t.Errorf("error %v is not %v", err, tt.err)
				}
				for _, s := range tt.errText {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not say %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fixText(res.Sockets); !slices.Equal(got, tt.fixes) {
				t.Errorf("socket fixes:\n got %q\nwant %q", got, tt.fixes)
			}
			if got := cmds(res.Changes); !slices.Equal(got, tt.ops) {
				t.Errorf("Result.Changes:\n got %q\nwant %q", got, tt.ops)
			}
			for _, c := range tt.ops {
				if !strings.Contains(logs.String(), c) {
					t.Errorf("change %q not logged; log:\n%s", c, logs.String())
				}
			}
			// Idempotent: a second run finds everything in place.
			h.ops = nil
			res2, err := Fix(h, tt.sockets, tt.opts)
			if err != nil {
				t.Fatalf("second Fix: %v", err)
			}
			if len(h.ops) != 0 || len(res2.Changes) != 0 {
				t.Errorf("second Fix changed the host: %q", h.ops)
			}
			// Undo twice: the second finds everything gone and succeeds.
			for i := range 2 {
				h.ops = nil
				if err := Undo(h, res.Changes); err != nil {
					t.Fatalf("Undo #%d: %v", i+1, err)
				}
			}
		})
	}
}

func TestUndoTakeover(t *testing.T) {
	h := newFakeHost(t, testHost)
	res, err := Fix(h, []Socket{sk(3, "udp", "10.9.0.2:4000", "10.1.0.9:5000")},
		Options{Policy: Takeover, Iface: "eth2", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for range 2 {
		h.ops = nil
		if err := Undo(h, res.Changes); err != nil {
			t.Fatal(err)
		}
		got = append(got, h.ops...)
	}
	want := lines(
		"ip route del 10.1.0.9/32 dev eth2", "ip addr del 10.9.0.2/32 dev eth2",
		"ip route del 10.1.0.9/32 dev eth2 # ESRCH", "ip addr del 10.9.0.2/32 dev eth2 # EADDRNOTAVAIL")
	if !slices.Equal(got, want) {
		t.Errorf("operations:\n got %q\nwant %q", got, want)
	}
}

func TestRelease(t *testing.T) {
	h := newFakeHost(t, testHost+"addr 10.9.0.2/24 dev eth2\naddr fd09::2/128 dev eth1\n")
	addrs := []netip.Addr{netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("fd09::2"), netip.MustParseAddr("10.9.0.77")}
	changes, err := Release(h, addrs, "", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	want := lines("ip addr del 10.9.0.2/24 dev eth2", "ip addr del fd09::2/128 dev eth1")
	if !slices.Equal(h.ops, want) || !slices.Equal(cmds(changes), want) {
		t.Errorf("Release:\n ops     %q\n changes %q\nwant %q", h.ops, cmds(changes), want)
	}
	// Again: nothing left, nothing done, no error.
	h.ops = nil
	changes, err = Release(h, addrs, "", zerolog.Nop())
	if err != nil || len(h.ops) != 0 || len(changes) != 0 {
		t.Errorf("second Release: %q, %q, %v", h.ops, cmds(changes), err)
	}
	// A link that is gone holds no address.
	if changes, err := Release(h, addrs, "eth9", zerolog.Nop()); err != nil || changes != nil {
		t.Errorf("Release on a missing link: %q, %v", cmds(changes), err)
	}
}

func TestReleaseJoinsErrors(t *testing.T) {
	h := newFakeHost(t, testHost+"addr 10.9.0.2/32 dev eth1\naddr 10.9.0.3/32 dev eth1\n")
	h.failDel = netip.MustParseAddr("10.9.0.2")
	changes, err := Release(h, []netip.Addr{netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.9.0.3")}, "eth1", zerolog.Nop())
	if !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "release address 10.9.0.2") {
		t.Errorf("error %v: want EPERM naming 10.9.0.2", err)
	}
	if want := lines("ip addr del 10.9.0.3/32 dev eth1"); !slices.Equal(cmds(changes), want) {
		t.Errorf("changes %q, want %q", cmds(changes), want)
	}
}

func TestAddresses(t *testing.T) {
	got := Addresses([]Socket{
		sk(3, "udp", "10.9.0.2:1", ""), sk(4, "udp", "[::ffff:10.9.0.2]:2", ""), sk(5, "udp", "0.0.0.0:3", ""),
		sk(6, "udp", "127.0.0.1:4", ""), sk(7, "udp", "[fe80::1]:5", ""), sk(8, "tcp", "[fd09::2]:80", ""),
		sk(9, "udp", "10.0.0.1:4", ""), {Fd: 10},
	})
	want := []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("fd09::2")}
	if !slices.Equal(got, want) {
		t.Errorf("Addresses = %v, want %v", got, want)
	}
}

func TestParsePolicy(t *testing.T) {
	for s, want := range map[string]Policy{"": Rebind, "rebind": Rebind, "Takeover": Takeover, "fail": Fail} {
		if p, err := ParsePolicy(s); err != nil || p != want {
			t.Errorf("ParsePolicy(%q) = %v, %v; want %v", s, p, err, want)
		}
		if want.String() != strings.ToLower(s) && s != "" {
			t.Errorf("%v.String() = %q", want, want.String())
		}
	}
	if _, err := ParsePolicy("move"); err == nil || !strings.Contains(err.Error(), "rebind, takeover, fail") {
		t.Errorf("ParsePolicy(move) error = %v", err)
	}
}

func TestARPAnnouncement(t *testing.T) {
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	b, err := arpAnnouncement(mac, netip.MustParseAddr("10.9.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	want := "0001 0800 06 04 0001 020000000001 0a090002 000000000000 0a090002"
	if got := fmt.Sprintf("%x %x %x %x %x %x %x %x %x", b[0:2], b[2:4], b[4:5], b[5:6], b[6:8], b[8:14], b[14:18], b[18:24], b[24:28]); got != want {
		t.Errorf("ARP announcement\n got %s\nwant %s", got, want)
	}
	if _, err := arpAnnouncement(mac, netip.MustParseAddr("fd00::1")); err == nil {
		t.Error("ARP announcement for IPv6: no error")
	}
	if _, err := arpAnnouncement(nil, netip.MustParseAddr("10.9.0.2")); err == nil {
		t.Error("ARP announcement without a MAC: no error")
	}
}

// TestFixWarnsNothingToTake: a takeover whose servers listen on every
// address and whose sockets name no address moves nothing, and says so,
// naming them; a socket bound to an address to move, or another policy,
// makes no such warning.
func TestFixWarnsNothingToTake(t *testing.T) {
	const warning = "takeover: no socket names an address to move here"
	for _, tc := range []struct {
		name    string
		sockets []Socket
		policy  Policy
		want    []string // in the log; nil: no warning
	}{
		{"wildcard listener and UDP", []Socket{sk(3, "tcp", "0.0.0.0:8080", ""), sk(4, "udp", "[::]:53", ""), sk(5, "udp", "127.0.0.1:9", "")}, Takeover,
			[]string{warning, "fd 3 0.0.0.0:8080", "fd 4 [::]:53"}},
		{"a connection names the address", []Socket{sk(3, "tcp", "0.0.0.0:8080", ""), sk(4, "udp", "10.9.0.2:4000", "10.1.0.9:5000")}, Takeover, nil},
		{"rebind", []Socket{sk(3, "tcp", "0.0.0.0:8080", "")}, Rebind, nil},
		{"unbound client only", []Socket{sk(3, "udp", "0.0.0.0:0", "10.1.0.9:5000")}, Takeover, nil},
	} {
		h := newFakeHost(t, testHost)
		var logs bytes.Buffer
		if _, err := Fix(h, tc.sockets, Options{Policy: tc.policy, Iface: "eth2", Log: zerolog.New(&logs)}); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := logs.String()
		if tc.want == nil && strings.Contains(got, warning) {
			t.Errorf("%s: warned:\n%s", tc.name, got)
		}
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: log lacks %q:\n%s", tc.name, w, got)
			}
		}
	}
}
