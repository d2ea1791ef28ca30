package netlock

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLockKeysOfListeners(t *testing.T) {
	for _, tc := range []struct {
		name           string
		ls             []Listener
		l4, l6, w4, w6 int
		want           error
	}{
		{"none", nil, 0, 0, 0, 0, ErrNoConns},
		{"port 0", []Listener{{Local: ap("10.0.0.1:0")}}, 0, 0, 0, 0, ErrBadConn},
		{"no address", []Listener{{}}, 0, 0, 0, 0, ErrBadConn},
		{"v4", []Listener{{Local: ap("10.0.0.1:80")}, {Local: ap("10.0.0.1:80")}}, 1, 0, 0, 0, nil},
		{"mapped", []Listener{{Local: ap("[::ffff:10.0.0.1]:80")}}, 1, 0, 0, 0, nil},
		{"v6", []Listener{{Local: ap("[fd00::1]:80")}}, 0, 1, 0, 0, nil},
		{"any4", []Listener{{Local: ap("0.0.0.0:80")}}, 0, 0, 1, 0, nil},
		{"any6 dual", []Listener{{Local: ap("[::]:80")}, {Local: ap("0.0.0.0:80")}}, 0, 0, 1, 1, nil},
		{"any6 only", []Listener{{Local: ap("[::]:80"), V6Only: true}}, 0, 0, 0, 1, nil},
	} {
		k, err := lockKeysOf(nil, tc.ls)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: lockKeysOf = %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && (len(k.l4) != tc.l4 || len(k.l6) != tc.l6 || len(k.w4) != tc.w4 || len(k.w6) != tc.w6) {
			t.Errorf("%s: keys l4 %d l6 %d w4 %d w6 %d, want %d %d %d %d", tc.name, len(k.l4), len(k.l6), len(k.w4), len(k.w6), tc.l4, tc.l6, tc.w4, tc.w6)
		}
	}
}

// TestLockListener: a locked listener gets no new connection (the SYN is
// dropped: the client stays in SYN_SENT, nothing reaches the accept
// queue), while a connection it accepted before keeps exchanging data;
// after Unlock the client's retransmitted SYN connects. For IPv4 and IPv6
// listeners on one address and on every address, and an IPv6 listener on
// :: (not V6ONLY) that an IPv4 client connects to.
func TestLockListener(t *testing.T) {
	requireRoot(t)
	hs := newHosts(t, "srv", "cli")
	srv, cli := hs[0], hs[1]
	ula := addULA(t, srv, cli)
	ns := openNS(t, srv)
	for _, tc := range []struct {
		name   string
		listen netip.Addr // bound by the listener
		v6only bool
		dial   netip.Addr // the client connects to it
	}{
		{"v4", srv.Addr, false, srv.Addr},
		{"any4", netip.IPv4Unspecified(), false, srv.Addr},
		{"v6", ula[0], false, ula[0]},
		{"any6", netip.IPv6Unspecified(), true, ula[0]},
		{"any6 dual", netip.IPv6Unspecified(), false, srv.Addr},
	} {
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
		var lfd, port int
		if err := srv.Do(func() error {
			var err error
			lfd, err = unix.Socket(family(tc.listen), unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return err
			}
			if tc.listen.Is6() {
				v := 0
				if tc.v6only {
					v = 1
				}
				if err := unix.SetsockoptInt(lfd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
					return err
				}
			}
			if err := unix.Bind(lfd, sockaddr(tc.listen, 0)); err != nil {
				return err
			}
			if err := unix.Listen(lfd, 8); err != nil {
				return err
			}
			got, err := unix.Getsockname(lfd)
			switch sa := got.(type) {
			case *unix.SockaddrInet4:
				port = sa.Port
			case *unix.SockaddrInet6:
				port = sa.Port
			}
			return err
		}); err != nil {
			t.Fatalf("%s: listen: %v", tc.name, err)
		}
		defer unix.Close(lfd)
		dial := func() int {
			var fd int
			if err := cli.Do(func() error {
				var err error
				fd, err = unix.Socket(family(tc.dial), unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
				if err != nil {
					return err
				}
				if err := unix.Connect(fd, sockaddr(tc.dial, port)); !errors.Is(err, unix.EINPROGRESS) {
					return err
				}
				return nil
			}); err != nil {
				t.Fatalf("%s: connect: %v", tc.name, err)
			}
			return fd
		}
		state := func(fd int) uint8 {
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				t.Fatal(err)
			}
			return info.State
		}
		const established, synSent = 1, 2
		accept := func() int {
			var nfd int
			waitFor(t, tc.name+": a connection to accept", 30*time.Second, func() bool {
				var err error
				nfd, _, err = unix.Accept4(lfd, unix.SOCK_CLOEXEC)
				return err == nil
			})
			return nfd
		}
		// A connection made before the lock.
		before := dial()
		defer unix.Close(before)
		waitFor(t, tc.name+": the first connection", 30*time.Second, func() bool { return state(before) == established })
		acc := accept()
		defer unix.Close(acc)

		l, err := Acquire(ns, nil, Options{Log: testLog(t), Listeners: []Listener{{Local: netip.AddrPortFrom(tc.listen, uint16(port)), V6Only: tc.v6only}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		defer l.Unlock()
		locked := dial()
		defer unix.Close(locked)
		waitFor(t, tc.name+": the SYN dropped", 30*time.Second, func() bool {
			in, _, err := l.Dropped()
			if err != nil {
				t.Fatal(err)
			}
			return in > 0
		})
		if st := state(locked); st != synSent {
			t.Fatalf("%s: client state while locked: %d, want SYN_SENT", tc.name, st)
		}
		if _, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC); !errors.Is(err, unix.EAGAIN) {
			t.Fatalf("%s: accept while locked: %v, want EAGAIN", tc.name, err)
		}
		// The earlier connection still works: only SYNs are dropped.
		if _, err := unix.Write(before, []byte("x")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		waitFor(t, tc.name+": data on the earlier connection", 30*time.Second, func() bool {
			n, err := unix.Read(acc, buf)
			return n == 1 && err == nil
		})
		if err := l.Unlock(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tc.name+": the retransmitted SYN to connect", 60*time.Second, func() bool { return state(locked) == established })
		unix.Close(accept())
	}
}
