package main

import (
	"errors"
	"net"
	"strings"
	"testing"
)

// TestAdvertisedHost (QA3 R11): the printed restore command names the host
// only when it resolves to an address another host can reach; a name that
// /etc/hosts maps to loopback, or that does not resolve, gives the first
// global unicast address of the namespace instead (IPv4 first).
func TestAdvertisedHost(t *testing.T) {
	addrs := func(ips ...string) func() ([]net.Addr, error) {
		return func() ([]net.Addr, error) {
			var out []net.Addr
			for _, s := range ips {
				_, n, _ := net.ParseCIDR(s)
				ip, _, _ := net.ParseCIDR(s)
				n.IP = ip
				out = append(out, n)
			}
			return out, nil
		}
	}
	resolves := func(ips ...string) func(string) ([]string, error) {
		return func(string) ([]string, error) { return ips, nil }
	}
	fails := func(string) ([]string, error) { return nil, errors.New("no such host") }
	for _, tc := range []struct {
		name   string
		lookup func(string) ([]string, error)
		addrs  func() ([]net.Addr, error)
		want   string
	}{
		{"resolves to a real address", resolves("10.0.0.5"), addrs("127.0.0.1/8", "10.0.0.5/24"), "vm"},
		{"resolves to loopback", resolves("127.0.0.1"), addrs("127.0.0.1/8", "fe80::1/64", "2001:db8::7/64", "10.233.7.1/24"), "10.233.7.1"},
		{"127.0.1.1 (Debian)", resolves("127.0.1.1", "::1"), addrs("127.0.0.1/8", "2001:db8::7/64"), "2001:db8::7"},
		{"does not resolve", fails, addrs("127.0.0.1/8", "192.168.1.9/24"), "192.168.1.9"},
		{"only loopback here", resolves("127.0.0.1"), addrs("127.0.0.1/8", "::1/128"), "vm"},
	} {
		if got := advertisedHost("vm", tc.lookup, tc.addrs); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRestoreCommandSecret (qa6 G3): the printed restore command carries a
// secret dump made itself, never one the user gave in $LAZYCR_TOKEN (it was
// echoed to stdout, which job runners keep in their logs) nor a --token file's.
func TestRestoreCommandSecret(t *testing.T) {
	addr := &net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 27000}
	tok := []byte("0123456789abcdef")
	o := &dumpOptions{address: "10.0.0.1", port: 27000}
	if got, want := restoreCommand(addr, o, tok, true), "LAZYCR_TOKEN=30313233343536373839616263646566 lazycr restore --lazy-from 10.0.0.1:27000"; got != want {
		t.Errorf("made secret: %q, want %q", got, want)
	}
	got := restoreCommand(addr, o, tok, false)
	if strings.Contains(got, "3031323334") || !strings.Contains(got, "$LAZYCR_TOKEN") {
		t.Errorf("secret from $LAZYCR_TOKEN: %q prints it or does not say the target needs it", got)
	}
	o.conn.tokenFile = "/etc/lazycr/token"
	if got := restoreCommand(addr, o, tok, false); strings.Contains(got, "3031323334") || !strings.Contains(got, "--token /etc/lazycr/token") {
		t.Errorf("--token file: %q", got)
	}
}
