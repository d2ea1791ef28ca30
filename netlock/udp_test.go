package netlock

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestUDPKeysOf(t *testing.T) {
	for _, tc := range []struct {
		name           string
		us             []UDPPort
		a4, a6, w4, w6 int
		want           error
	}{
		{"port 0", []UDPPort{{Local: ap("10.0.0.1:0")}}, 0, 0, 0, 0, ErrBadConn},
		{"no address", []UDPPort{{}}, 0, 0, 0, 0, ErrBadConn},
		{"v4", []UDPPort{{Local: ap("10.0.0.1:53")}, {Local: ap("10.0.0.1:53")}}, 1, 0, 0, 0, nil},
		{"mapped", []UDPPort{{Local: ap("[::ffff:10.0.0.1]:53")}}, 1, 0, 0, 0, nil},
		{"v6", []UDPPort{{Local: ap("[fd00::1]:53")}}, 0, 1, 0, 0, nil},
		{"any4", []UDPPort{{Local: ap("0.0.0.0:53")}}, 0, 0, 1, 0, nil},
		{"any6 dual", []UDPPort{{Local: ap("[::]:53")}, {Local: ap("0.0.0.0:53")}}, 0, 0, 1, 1, nil},
		{"any6 only", []UDPPort{{Local: ap("[::]:53"), V6Only: true}}, 0, 0, 0, 1, nil},
	} {
		k, err := udpKeysOf(tc.us)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: udpKeysOf = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && (len(k.a4) != tc.a4 || len(k.a6) != tc.a6 || len(k.w4) != tc.w4 || len(k.w6) != tc.w6) {
			t.Errorf("%s: keys a4 %d a6 %d w4 %d w6 %d, want %d %d %d %d", tc.name, len(k.a4), len(k.a6), len(k.w4), len(k.w6), tc.a4, tc.a6, tc.w4, tc.w6)
		}
	}
	if _, err := lockKeysWith(nil, nil, nil); !errors.Is(err, ErrNoConns) {
		t.Errorf("lockKeysWith(nothing) = %v, want ErrNoConns", err)
	}
}

// TestLockUDPPort: a connected UDP client in cli sends to a port of srv
// no socket is bound to. Locked, the port-unreachable error srv's kernel
// answers is dropped (the lock's counter says so) and the client's
// socket has no error; unlocked, the next datagram's error reaches it
// (ECONNREFUSED, udp(7)). Under the lock a socket bound to the port gets
// the datagrams sent to it. For IPv4 and IPv6 ports on one address and on
// every address, and an IPv6 socket on :: (not V6ONLY) that an IPv4
// client sends to.
func TestLockUDPPort(t *testing.T) {
	requireRoot(t)
	hs := newHosts(t, "srv", "cli")
	srv, cli := hs[0], hs[1]
	ula := addULA(t, srv, cli)
	ns := openNS(t, srv)
	sockaddr := func(a netip.Addr, port int) unix.Sockaddr {
		if a.Is4() {
			return &unix.SockaddrInet4{Addr: a.As4(), Port: port}
		}
		return &unix.SockaddrInet6{Addr: a.As16(), Port: port}
	}
	family := func(a netip.Addr) int {
		if a.Is4() {
			return unix.AF_INET
		}
		return unix.AF_INET6
	}
	for i, tc := range []struct {
		name   string
		bind   netip.Addr // the socket's local address
		v6only bool
		dial   netip.Addr // the client sends to it
	}{
		{"v4", srv.Addr, false, srv.Addr},
		{"any4", netip.IPv4Unspecified(), false, srv.Addr},
		{"v6", ula[0], false, ula[0]},
		{"any6", netip.IPv6Unspecified(), true, ula[0]},
		{"any6 dual", netip.IPv6Unspecified(), false, srv.Addr},
	} {
		port := 40000 + i // free: the namespace is the test's
		var cfd int
		if err := cli.Do(func() error {
			var err error
			if cfd, err = unix.Socket(family(tc.dial), unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err != nil {
				return err
			}
			return unix.Connect(cfd, sockaddr(tc.dial, port))
		}); err != nil {
			t.Fatalf("%s: client: %v", tc.name, err)
		}
		defer unix.Close(cfd)
		soError := func() error {
			v, err := unix.GetsockoptInt(cfd, unix.SOL_SOCKET, unix.SO_ERROR) // reads and clears it
			if err != nil {
				t.Fatal(err)
			}
			if v == 0 {
				return nil
			}
			return unix.Errno(v)
		}
		send := func() {
			if _, err := unix.Write(cfd, []byte("x")); err != nil && !errors.Is(err, unix.ECONNREFUSED) {
				t.Fatalf("%s: send: %v", tc.name, err)
			}
		}

		l, err := Acquire(ns, nil, Options{Log: testLog(t), UDPPorts: []UDPPort{{Local: netip.AddrPortFrom(tc.bind, uint16(port)), V6Only: tc.v6only}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		defer l.Unlock()
		send()
		waitFor(t, tc.name+": the port unreachable dropped", 30*time.Second, func() bool {
			_, out, err := l.Dropped()
			if err != nil {
				t.Fatal(err)
			}
			return out > 0
		})
		// Dropped on srv's way out: it never reaches the client.
		if err := soError(); err != nil {
			t.Errorf("%s: client error while locked: %v, want none", tc.name, err)
		}

		// A socket bound under the lock receives.
		var sfd int
		if err := srv.Do(func() error {
			var err error
			if sfd, err = unix.Socket(family(tc.bind), unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0); err != nil {
				return err
			}
			if tc.bind.Is6() {
				v := 0
				if tc.v6only {
					v = 1
				}
				if err := unix.SetsockoptInt(sfd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
					return err
				}
			}
			return unix.Bind(sfd, sockaddr(tc.bind, port))
		}); err != nil {
			t.Fatalf("%s: bind: %v", tc.name, err)
		}
		send()
		buf := make([]byte, 8)
		waitFor(t, tc.name+": the datagram to the bound socket", 30*time.Second, func() bool {
			n, _, err := unix.Recvfrom(sfd, buf, 0)
			return n == 1 && err == nil
		})
		unix.Close(sfd)

		// Unlocked, the error reaches the client: the test can fail.
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		send()
		waitFor(t, tc.name+": the port unreachable without the lock", 30*time.Second, func() bool {
			if err := soError(); err != nil {
				if !errors.Is(err, unix.ECONNREFUSED) {
					t.Fatalf("%s: client error %v, want ECONNREFUSED", tc.name, err)
				}
				return true
			}
			return false
		})
	}
}
