package netlock

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// madeUpConns returns n distinct connections of family v6 (else IPv4).
func madeUpConns(n int, v6 bool) []Conn {
	local, remote := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("203.0.113.1")
	if v6 {
		local, remote = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8:1::1")
	}
	conns := make([]Conn, n)
	for i := range conns {
		conns[i] = Conn{Local: netip.AddrPortFrom(local, 6379), Remote: netip.AddrPortFrom(remote, uint16(10000+i))}
	}
	return conns
}

// BenchmarkLock measures Acquire and Unlock of n connections in a namespace
// of its own. Per operation: lock-µs (Acquire), flow-µs (Unlock until the
// delete is committed: packets flow again), unlock-µs (all of Unlock, with
// the socket close).
func BenchmarkLock(b *testing.B) {
	requireRoot(b)
	h := newHosts(b, "bench")[0]
	ns := openNS(b, h)
	for _, bc := range []struct {
		n  int
		v6 bool
	}{{1, false}, {100, false}, {1000, false}, {1000, true}} {
		fam := "ipv4"
		if bc.v6 {
			fam = "ipv6"
		}
		b.Run(fmt.Sprintf("conns=%d/%s", bc.n, fam), func(b *testing.B) {
			conns := madeUpConns(bc.n, bc.v6)
			b.ReportAllocs()
			var lockT, flowT, unlockT time.Duration
			ops := 0
			for b.Loop() {
				t0 := time.Now()
				l, err := Acquire(ns, conns, Options{})
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				// Unlock, in its two steps.
				l.mu.Lock()
				err = l.deleteTable()
				t2 := time.Now()
				err = errors.Join(err, l.closeSocket())
				l.mu.Unlock()
				t3 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				lockT += t1.Sub(t0)
				flowT += t2.Sub(t1)
				unlockT += t3.Sub(t1)
				ops++
			}
			us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(ops) }
			b.ReportMetric(us(lockT), "lock-µs")
			b.ReportMetric(us(flowT), "flow-µs")
			b.ReportMetric(us(unlockT), "unlock-µs")
		})
	}
	if got := lockTables(b, ns); len(got) != 0 {
		b.Fatalf("lock tables left: %v", got)
	}
}

// BenchmarkLockListener measures Acquire and Unlock of one listener (what a
// dump adds per TCP listener, before its accept-queue check).
func BenchmarkLockListener(b *testing.B) {
	requireRoot(b)
	h := newHosts(b, "benchl")[0]
	ns := openNS(b, h)
	ls := []Listener{{Local: netip.MustParseAddrPort("127.0.0.1:6379")}}
	var lockT time.Duration
	ops := 0
	for b.Loop() {
		t0 := time.Now()
		l, err := Acquire(ns, nil, Options{Listeners: ls})
		if err != nil {
			b.Fatal(err)
		}
		lockT += time.Since(t0)
		ops++
		if err := l.Unlock(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lockT.Microseconds())/float64(ops), "lock-µs")
	if got := lockTables(b, ns); len(got) != 0 {
		b.Fatalf("lock tables left: %v", got)
	}
}

// BenchmarkLazyListenerFreeze measures what a lazy dump's freeze now pays
// per TCP listener: its own lock before the accept-queue check (Acquire),
// the held lock that replaces it (HoldWith, listeners only) and the open
// of its own lock (Open; its socket's close, about an RCU grace period,
// runs in the background in the dump and is not counted). Per operation:
// lock-µs, hold-µs, open-µs and freeze-µs (their sum).
func BenchmarkLazyListenerFreeze(b *testing.B) {
	requireRoot(b)
	h := newHosts(b, "benchz")[0]
	ns := openNS(b, h)
	ls := []Listener{{Local: netip.MustParseAddrPort("0.0.0.0:6379")}}
	name := HeldName(1, 1)
	var lockT, holdT, openT time.Duration
	ops := 0
	b.ReportAllocs()
	for b.Loop() {
		t0 := time.Now()
		l, err := Acquire(ns, nil, Options{Listeners: ls})
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := HoldWith(ns, name, nil, ls, zerolog.Nop()); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		closeSocket, err := l.Open()
		if err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		lockT += t1.Sub(t0)
		holdT += t2.Sub(t1)
		openT += t3.Sub(t2)
		ops++
		b.StopTimer()
		if err := errors.Join(closeSocket(), RemoveHeld(ns, name, zerolog.Nop())); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(ops) }
	b.ReportMetric(us(lockT), "lock-µs")
	b.ReportMetric(us(holdT), "hold-µs")
	b.ReportMetric(us(openT), "open-µs")
	b.ReportMetric(us(lockT+holdT+openT), "freeze-µs")
	if got := lockTables(b, ns); len(got) != 0 {
		b.Fatalf("lock tables left: %v", got)
	}
}
