package netlock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestKeysRefuseBadConns(t *testing.T) {
	for _, tc := range []struct {
		name  string
		conns []Conn
		want  error
	}{
		{"none", nil, ErrNoConns},
		{"zero", []Conn{{}}, ErrBadConn},
		{"unspecified", []Conn{{ap("0.0.0.0:1"), ap("10.0.0.1:2")}}, ErrBadConn},
		{"port 0", []Conn{{ap("10.0.0.1:0"), ap("10.0.0.2:2")}}, ErrBadConn},
		{"mixed", []Conn{{ap("10.0.0.1:1"), ap("[fd00::1]:2")}}, ErrBadConn},
	} {
		if _, _, err := keys(tc.conns); !errors.Is(err, tc.want) {
			t.Errorf("%s: keys(%v) = %v, want %v", tc.name, tc.conns, err, tc.want)
		}
	}
}

func TestKeysLayout(t *testing.T) {
	k4, k6, err := keys([]Conn{
		{ap("10.1.2.3:258"), ap("10.4.5.6:772")},
		{ap("[::ffff:10.1.2.3]:258"), ap("[::ffff:10.4.5.6]:772")}, // mapped: the same IPv4 connection
		{ap("[fd00::1]:80"), ap("[fe80::2%eth0]:443")},
	})
	if err != nil {
		t.Fatal(err)
	}
	want4 := []byte{10, 1, 2, 3, 1, 2, 0, 0, 10, 4, 5, 6, 3, 4, 0, 0}
	if len(k4) != 1 || !bytes.Equal(k4[0], want4) {
		t.Fatalf("IPv4 keys %x, want [%x]", k4, want4)
	}
	if len(k6) != 1 || len(k6[0]) != 40 {
		t.Fatalf("IPv6 keys %x, want one of 40 bytes", k6)
	}
	k := k6[0]
	if k[0] != 0xfd || !bytes.Equal(k[16:20], []byte{0, 80, 0, 0}) || k[20] != 0xfe || !bytes.Equal(k[36:40], []byte{1, 187, 0, 0}) {
		t.Fatalf("IPv6 key %x", k)
	}
}

func TestTableNameRoundTrip(t *testing.T) {
	n := tableName{pid: 4242, start: 123456789, seq: 7}
	if got := n.String(); got != "lazycr_4242_123456789_7" {
		t.Fatalf("name %q", got)
	}
	got, err := parseTableName(n.String())
	if err != nil || got != n {
		t.Fatalf("parse %q = %+v, %v", n, got, err)
	}
	for _, bad := range []string{"", "lazycr_", "lazycr_1_2", "lazycr_1_2_3_4", "lazycr_01_2_3", "lazycr_0_2_3",
		"lazycr_-1_2_3", "lazycr_1_x_3", "lazycr_99999999_1_1", "filter", "lazycr_1__3"} {
		if got, err := parseTableName(bad); !errors.Is(err, ErrNotLockTable) || got != (tableName{}) {
			t.Errorf("parse %q = %+v, %v; want ErrNotLockTable", bad, got, err)
		}
	}
}

func FuzzParseTableName(f *testing.F) {
	f.Add("lazycr_1_2_3")
	f.Add("lazycr_4194304_18446744073709551615_0")
	f.Add("lazycr__")
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseTableName(s)
		if (err != nil) != (n == tableName{}) {
			t.Fatalf("parse %q = %+v, %v: error iff zero result", s, n, err)
		}
		if err == nil && n.String() != s {
			t.Fatalf("parse %q = %+v, which prints %q", s, n, n)
		}
	})
}

// TestEncodeLock checks the batch without a kernel: the table message with
// the owner flag first, then the objects of the families present.
func TestEncodeLock(t *testing.T) {
	k4, k6, err := keys([]Conn{{ap("10.0.0.1:1"), ap("10.0.0.2:2")}, {ap("[fd00::1]:1"), ap("[fd00::2]:2")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		owned  bool
		k4, k6 [][]byte
		want   []int
	}{
		{true, k4, nil, []int{unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_NEWCHAIN,
			unix.NFT_MSG_NEWSET, unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_NEWRULE, unix.NFT_MSG_NEWRULE}},
		{false, k4, k6, []int{unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_NEWCHAIN,
			unix.NFT_MSG_NEWSET, unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_NEWRULE, unix.NFT_MSG_NEWRULE,
			unix.NFT_MSG_NEWSET, unix.NFT_MSG_NEWSETELEM, unix.NFT_MSG_NEWRULE, unix.NFT_MSG_NEWRULE}},
	} {
		msgs, err := encodeLock("lazycr_1_2_3", tc.owned, tc.k4, tc.k6)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != len(tc.want) {
			t.Fatalf("owned=%v: %d messages, want %d", tc.owned, len(msgs), len(tc.want))
		}
		for i, m := range msgs {
			if m.Header.Type != nftMsg(tc.want[i]) || m.Header.Flags&netlink.Acknowledge == 0 || m.Header.Sequence != 0 {
				t.Errorf("owned=%v: message %d: header %+v, want type %#x with ack", tc.owned, i, m.Header, nftMsg(tc.want[i]))
			}
			if m.Data[0] != unix.NFPROTO_INET {
				t.Errorf("owned=%v: message %d: family %d, want inet", tc.owned, i, m.Data[0])
			}
		}
		ad, err := netlink.NewAttributeDecoder(msgs[0].Data[4:])
		if err != nil {
			t.Fatal(err)
		}
		var name string
		var flags uint32
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_TABLE_NAME:
				name = ad.String()
			case unix.NFTA_TABLE_FLAGS:
				flags = ad.Uint32()
			}
		}
		wantFlags := uint32(0)
		if tc.owned {
			wantFlags = nftTableFOwner
		}
		if err := ad.Err(); err != nil || name != "lazycr_1_2_3" || flags != wantFlags {
			t.Errorf("owned=%v: table %q flags %#x (%v), want lazycr_1_2_3 flags %#x", tc.owned, name, flags, err, wantFlags)
		}
	}
}

func FuzzParseTableMsg(f *testing.F) {
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte("lazycr_1_2_3\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: []byte{0, 0, 0, 2}},
		{Type: nftaTableOwner, Data: []byte{0, 0, 0x30, 0x39}},
	})
	msg := append([]byte{unix.NFPROTO_INET, 0, 0, 0}, attrs...)
	f.Add(msg)
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		ti, err := parseTableMsg(b)
		if (err != nil) != (ti == tableInfo{}) {
			t.Fatalf("parse %x = %+v, %v: error iff zero result", b, ti, err)
		}
		if err != nil && !errors.Is(err, ErrBadTableMsg) {
			t.Fatalf("parse %x: %v, want ErrBadTableMsg", b, err)
		}
	})
}

func TestParseTableMsg(t *testing.T) {
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte("lazycr_1_2_3\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: []byte{0, 0, 0, 2}},
		{Type: nftaTableOwner, Data: []byte{0, 0, 0x30, 0x39}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseTableMsg(append([]byte{unix.NFPROTO_INET, 0, 0, 0}, attrs...))
	if want := (tableInfo{name: "lazycr_1_2_3", flags: nftTableFOwner, owner: 12345}); err != nil || got != want {
		t.Fatalf("parse = %+v, %v; want %+v", got, err, want)
	}
}

func TestHeldName(t *testing.T) {
	n := HeldName(4242, 99)
	if n != "lazycr_hold_4242_99" || !IsHeldName(n) {
		t.Fatalf("HeldName = %q (held %v)", n, IsHeldName(n))
	}
	if _, err := parseTableName(n); err == nil {
		t.Fatalf("%s parses as an owner's lock table: Sweep would judge it", n)
	}
	for _, bad := range []string{"lazycr_hold_", "lazycr_hold_1", "lazycr_hold_01_2", "lazycr_hold_1_2_3", "lazycr_1_2_3", "lazycr_hold_x_2"} {
		if IsHeldName(bad) {
			t.Errorf("IsHeldName(%q) = true", bad)
		}
	}
}
