package files

import (
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

func TestParseIgmp(t *testing.T) {
	in := "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n" +
		"1\tlo        :     2      V3\n" +
		"\t\t\t\t070707EF     1 0:00000000\t\t0\n" +
		"\t\t\t\t010000E0     1 0:00000000\t\t0\n" +
		"4\teth0      :     1      V3\n" +
		"\t\t\t\t010000E0     1 0:00000000\t\t0\n"
	got, err := parseIgmp([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mcastGroup{{1, "lo", netip.MustParseAddr("239.7.7.7")}, {1, "lo", netip.MustParseAddr("224.0.0.1")}, {4, "eth0", netip.MustParseAddr("224.0.0.1")}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("group %d: %v, want %v", i, got[i], want[i])
		}
	}
	g6, err := parseIgmp6([]byte("1    lo              ff020000000000000000000000000001     1 0000000C 0\n2    veth-b          ff0200000000000000000000000000fb     1 00000004 0\n"))
	if err != nil || len(g6) != 2 || g6[1] != (mcastGroup{2, "veth-b", netip.MustParseAddr("ff02::fb")}) {
		t.Errorf("igmp6: %v %v", g6, err)
	}
	for _, bad := range []string{"head\n\t\t\t\t070707EF 1\n", "head\nx lo : 1\n", "head\n1 lo : 1\n\t\t\t\tZZ0707EF 1\n"} {
		if _, err := parseIgmp([]byte(bad)); err == nil {
			t.Errorf("parseIgmp(%q): no error", bad)
		}
	}
}

// TestMemberships: a UDP socket that joined 239.7.7.7 on lo (plain) and
// 239.7.7.8 with an include filter of one source is found a member of
// both, not of a group another socket joined; a fresh socket joined
// again from that record reads back the same.
func TestMemberships(t *testing.T) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		a := udpSocket(t, family)
		b := udpSocket(t, unix.AF_INET)
		lo := "lo"
		if err := restoreMemberships(b, 0, mcastRecord("239.7.7.9", lo, false)); err != nil {
			t.Fatal(err)
		}
		want := append(mcastRecord("239.7.7.7", lo, false), mcastRecord("239.7.7.8", lo, true, "127.0.0.5")...)
		if err := restoreMemberships(a, 0, want); err != nil {
			t.Fatal(err)
		}
		b4, err := os.ReadFile("/proc/thread-self/net/igmp")
		if err != nil {
			t.Fatal(err)
		}
		groups, err := parseIgmp(b4)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dumpMemberships(a, family, groups)
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, func(x, y *pb.McastMembership) int { return strings.Compare(x.Group, y.Group) })
		if len(got) != 2 || got[0].Group != "239.7.7.7" || got[0].Include || len(got[0].Sources) != 0 ||
			got[1].Group != "239.7.7.8" || !got[1].Include || len(got[1].Sources) != 1 || got[1].Sources[0] != "127.0.0.5" || got[1].Interface != "lo" {
			t.Errorf("family %d: memberships %v, want 239.7.7.7 and 239.7.7.8 including 127.0.0.5 on lo", family, got)
		}
	}
}

func udpSocket(t *testing.T, family int) int {
	t.Helper()
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func mcastRecord(group, ifname string, include bool, sources ...string) []*pb.McastMembership {
	return []*pb.McastMembership{{Interface: ifname, Group: group, Include: include, Sources: sources}}
}

func FuzzParseIgmp(f *testing.F) {
	f.Add([]byte("Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n1\tlo        :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n"), false)
	f.Add([]byte("1    lo              ff020000000000000000000000000001     1 0000000C 0\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		parse := parseIgmp
		if v6 {
			parse = parseIgmp6
		}
		gs, err := parse(b)
		if err != nil {
			return
		}
		for _, g := range gs {
			if !g.group.IsValid() || g.group.Is4() == v6 {
				t.Fatalf("group %v from %q", g, b)
			}
		}
	})
}
