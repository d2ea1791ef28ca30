package integration

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUDPServerMigratesNoRefusal: a UDP server bound to the service
// address on host B (udpaddrecho) migrates lazily to host C (--new-pid,
// takeover, the source releasing the address) while a client on A,
// connect(2)ed to it, sends a numbered datagram every 200 µs. Datagrams
// sent while the server is frozen may be lost (UDP), but the client never
// sees an error: once the takeover made the address live on C, a datagram
// that came before the restored socket was bound was answered with an ICMP
// port unreachable, which failed the client's next receive with
// ECONNREFUSED (udp(7)): 2 to 6 times in each of 5 runs before the
// target's lock dropped those errors (netlock.UDPPort). The migrated
// server echoes, and no lock is left on B or C.
func TestUDPServerMigratesNoRefusal(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "udpaddrecho")
	hA, hB, hC, svc := newTreeTCPHosts(t, "uur")
	p := startCmd(t, hB.Command(context.Background(), bin, svc.String()))
	var rep backlogReport
	waitReport(t, p, &rep)
	var c *net.UDPConn
	if err := hA.Do(func() error {
		var err error
		c, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(svc, uint16(rep.Port))))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var (
		mu       sync.Mutex
		echoed   = map[uint64]bool{}
		refused  []string
		sent     uint64
		wg       sync.WaitGroup
		stop     = make(chan struct{})
		readDone = make(chan struct{})
	)
	wg.Go(func() {
		defer close(readDone)
		b := make([]byte, 64)
		for {
			n, err := c.Read(b)
			switch {
			case errors.Is(err, syscall.ECONNREFUSED):
				mu.Lock()
				refused = append(refused, "receive: "+err.Error())
				mu.Unlock()
				continue
			case err != nil:
				return // closed
			case n == 8:
				mu.Lock()
				echoed[binary.BigEndian.Uint64(b)] = true
				mu.Unlock()
			}
		}
	})
	wg.Go(func() {
		for n := uint64(1); ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := c.Write(binary.BigEndian.AppendUint64(nil, n))
			mu.Lock()
			sent = n
			if errors.Is(err, syscall.ECONNREFUSED) {
				refused = append(refused, "send: "+err.Error())
			}
			mu.Unlock()
			time.Sleep(200 * time.Microsecond) // the client's pace, not a synchronisation
		}
	})
	stopped := false
	finish := func() {
		if !stopped {
			stopped = true
			close(stop)
			c.SetReadDeadline(time.Now()) // wakes the reader
			<-readDone
			wg.Wait()
		}
	}
	defer finish()
	echoes := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(echoed)
	}
	waitFor(t, "100 echoes before the migration", func() bool { return echoes() >= 100 })

	src := startLazySource(t, hB, p.pid, hB.Addr.String(), "--release-addresses")
	args := []string{"restore", "--lazy-from", src.addr, "--new-pid", "--net-policy", "takeover", "--net-iface", hC.Iface}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hC, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) })
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	n := echoes()
	waitFor(t, "100 echoes from the migrated server", func() bool { return echoes() >= n+100 })
	requireRunning(t, rp.pid)
	finish()

	mu.Lock()
	lost := int(sent) - len(echoed)
	t.Logf("sent %d datagrams, %d echoed, %d lost (sent while frozen, or in flight at the end)", sent, len(echoed), lost)
	for _, r := range refused {
		t.Errorf("client: %s", r)
	}
	mu.Unlock()
	if t.Failed() {
		_, de := dst.output()
		t.Logf("target:\n%s", de)
	}
	requireNoHeldLocks(t, hB, hC)
}
