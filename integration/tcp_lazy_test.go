package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lazycr/lazycr/hosts"
	"github.com/lazycr/lazycr/netlock"
)

// lazyTCP is the three-host set-up of the lazy TCP tests: tcpecho on B
// (listening on any address) with one connection from the test on A to
// B's service address svc.
type lazyTCP struct {
	ctx        context.Context
	netw       *hosts.Net
	hA, hB, hC *hosts.Host
	svc        netip.Addr
	p          *proc
	port       int
	c          *net.TCPConn
}

func newLazyTCP(t *testing.T) *lazyTCP {
	bin := buildC(t, "tcpecho")
	l := newLazyTCPWith(t, func(ctx context.Context, hB *hosts.Host) (*proc, int) {
		p := startCmd(t, hB.Command(ctx, bin, "4", "server-any"))
		var rep tcpReport
		waitReport(t, p, &rep)
		return p, rep.Port
	})
	waitTick(t, l.p, "conn", 1)
	echoRoundTrip(t, l.c, "before")
	return l
}

// newLazyTCPWith is newLazyTCP for any server: start runs it on B and
// returns it with its port.
func newLazyTCPWith(t testing.TB, start func(ctx context.Context, hB *hosts.Host) (*proc, int)) *lazyTCP {
	buildLazycr()
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	netw, err := hosts.New(hosts.Options{Prefix: "tcpl"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netw.Close() })
	var hs []*hosts.Host
	for _, name := range []string{"a", "b", "c"} {
		h, err := netw.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	hA, hB, hC := hs[0], hs[1], hs[2]
	svc := serviceAddr(t, hB, netw.Subnet)

	p, port := start(ctx, hB)
	var c *net.TCPConn
	deadline := time.Now().Add(reportTimeout)
	for c == nil {
		err := hA.Do(func() error {
			conn, err := net.DialTimeout("tcp", netip.AddrPortFrom(svc, uint16(port)).String(), reportTimeout)
			if err == nil {
				c = conn.(*net.TCPConn)
			}
			return err
		})
		if err != nil && (p.exited() || time.Now().After(deadline)) {
			t.Fatalf("connect to the server on B: %v (exited %v)\n%s", err, p.exited(), p.stderr())
		}
		if c == nil {
			time.Sleep(5 * time.Millisecond) // poll interval: the server is starting
		}
	}
	t.Cleanup(func() { c.Close() })
	return &lazyTCP{ctx: ctx, netw: netw, hA: hA, hB: hB, hC: hC, svc: svc, p: p, port: port, c: c}
}

// migrate runs `lazycr dump --lazy` on B and `lazycr restore --lazy-from`
// on C with policy, and returns the target's error, and the source's and
// target's log files.
func (l *lazyTCP) migrate(t *testing.T, policy string) (targetErr error, srcLog, dstLog, dstOut string) {
	t.Helper()
	dir := t.TempDir()
	const port = 27013 // the page server's, inside B's own fresh namespace
	src := l.hB.Command(l.ctx, lazycrPath, "dump", "--lazy", "--pid", strconv.Itoa(l.p.pid), "--port", strconv.Itoa(port), "--release-addresses")
	srcOut, srcErr := filepath.Join(dir, "source.out"), filepath.Join(dir, "source.log")
	src.Stdout, src.Stderr = mustCreate(t, srcOut), mustCreate(t, srcErr)
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	defer src.Process.Kill()
	var token string
	deadline := time.Now().Add(30 * time.Second)
	for token == "" {
		b, _ := os.ReadFile(srcOut)
		token = string(regexp.MustCompile(`LAZYCR_TOKEN=[0-9a-f]+`).Find(b))
		if time.Now().After(deadline) {
			e, _ := os.ReadFile(srcErr)
			t.Fatalf("the source printed no restore command:\n%s", e)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	dst := l.hC.Command(l.ctx, lazycrPath, "restore", "--lazy-from", netip.AddrPortFrom(l.hB.Addr, port).String(),
		"--new-pid", "--net-policy", policy, "--wait-source", "60s")
	dst.Env = append(os.Environ(), token)
	dstOut, dstErr := filepath.Join(dir, "target.out"), filepath.Join(dir, "target.log")
	dst.Stdout, dst.Stderr = mustCreate(t, dstOut), mustCreate(t, dstErr)
	targetErr = dst.Run()
	if err := src.Wait(); err != nil && targetErr == nil {
		e, _ := os.ReadFile(srcErr)
		t.Fatalf("lazycr dump --lazy on B: %v\n%s", err, e)
	}
	return targetErr, srcErr, dstErr, dstOut
}

// heldOn lists the held locks of host h.
func heldOn(t *testing.T, h *hosts.Host) []string {
	t.Helper()
	ns, err := h.NetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	held, err := netlock.ListHeld(ns)
	if err != nil {
		t.Fatal(err)
	}
	return held
}

// TestTCPLazyMigration: an echo server on host B, with one connection from
// a client on host A (the test), migrates post-copy to host C with the
// takeover policy (its service address moves from B to C). The client keeps
// its one connection: the 16 MiB it streams (in flight in both directions
// during the migration) come back echoed byte for byte; the source held
// its side locked and silent, the target locked its side until the
// connection was live, and no lock is left on B or C.
func TestTCPLazyMigration(t *testing.T) {
	l := newLazyTCP(t)
	hB, c, p := l.hB, l.c, l.p
	const total = 16 << 20
	if err := c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		var off int64
		for off < total {
			for i := range buf {
				buf[i] = streamByte(off + int64(i))
			}
			n, err := c.Write(buf)
			off += int64(n)
			if err != nil {
				written <- err
				return
			}
		}
		written <- c.CloseWrite()
	}()
	// Until the server's socket holds unread and unsent bytes (the test
	// does not read yet).
	deadline := time.Now().Add(progressTimeout)
	for {
		var tx, rx uint64
		var ok bool
		hB.Do(func() error {
			tx, rx, ok = tcpQueuesAt(t, "/proc/thread-self/net/tcp", l.port)
			return nil
		})
		if ok && tx > 0 && rx > 0 {
			t.Logf("at the freeze: the socket on B has %d bytes to send, %d to read", tx, rx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the socket on B never had both queues filled (tx %d rx %d found %v)", tx, rx, ok)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}

	terr, srcErr, dstErr, dstOut := l.migrate(t, "takeover")
	if terr != nil {
		e, _ := os.ReadFile(dstErr)
		t.Fatalf("lazycr restore on C: %v\n%s", terr, e)
	}
	b, _ := os.ReadFile(dstOut)
	npid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("target stdout %q: no pid", b)
	}
	np := adopt(t, npid)
	t.Logf("migrated: pid %d on B is pid %d on C", p.pid, np.pid)
	// The order of events as each side logged them: on C the connection
	// is locked before its address moves there and unlocked only once it
	// is live; on B it is held from the freeze until its address is gone.
	requireOrder(t, dstErr, "network locked", "takeover: "+l.svc.String()+" moved to this host", "network unlocked", "resumed; serving lazy pages")
	requireOrder(t, srcErr, "network lock held for a restore", "target resumed the process", "held network lock removed")

	br := bufio.NewReaderSize(c, 64<<10)
	buf := make([]byte, 64<<10)
	var off int64
	for off < total {
		n, err := br.Read(buf)
		for i := 0; i < n; i++ {
			if buf[i] != streamByte(off+int64(i)) {
				t.Fatalf("echo byte %d is %#x, want %#x (a lost, repeated or reordered byte)", off+int64(i), buf[i], streamByte(off+int64(i)))
			}
		}
		off += int64(n)
		if err != nil {
			t.Fatalf("read echo after %d of %d bytes: %v", off, total, err)
		}
	}
	if err := <-written; err != nil {
		t.Fatalf("write stream: %v", err)
	}
	if n, err := br.Read(buf); err != io.EOF {
		t.Fatalf("after the echo: %d bytes, %v; want EOF", n, err)
	}
	for _, h := range []*hosts.Host{hB, l.hC} {
		if held := heldOn(t, h); len(held) > 0 {
			t.Errorf("host %s keeps held locks %v", h.Name, held)
		}
	}
}

// TestTCPLazyRebindRefused: with the rebind policy the connection's local
// address would change: the target refuses it, the migration is rolled
// back, and the connection on B goes on as before (repair off, locks gone).
func TestTCPLazyRebindRefused(t *testing.T) {
	l := newLazyTCP(t)
	terr, _, dstErr, _ := l.migrate(t, "rebind")
	e, _ := os.ReadFile(dstErr)
	if terr == nil || !strings.Contains(string(e), "use --net-policy takeover") {
		t.Fatalf("restore with rebind: %v, want a refusal naming the takeover policy:\n%s", terr, e)
	}
	echoRoundTrip(t, l.c, "after the refused migration")
	for _, h := range []*hosts.Host{l.hB, l.hC} {
		if held := heldOn(t, h); len(held) > 0 {
			t.Errorf("host %s keeps held locks %v", h.Name, held)
		}
	}
}

// tcpQueuesAt is tcpQueues for the table at path (/proc/net/tcp or tcp6,
// of any network namespace: the two have the same columns).
func tcpQueuesAt(t *testing.T, path string, port int) (tx, rx uint64, ok bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 5 || f[3] != "01" {
			continue
		}
		_, lp, _ := strings.Cut(f[1], ":")
		if p, err := strconv.ParseUint(lp, 16, 16); err != nil || int(p) != port {
			continue
		}
		txs, rxs, _ := strings.Cut(f[4], ":")
		tx, _ = strconv.ParseUint(txs, 16, 64)
		rx, _ = strconv.ParseUint(rxs, 16, 64)
		return tx, rx, true
	}
	return 0, 0, false
}

func mustCreate(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// serviceAddr gives host h a second address (.100 of the subnet), the one a
// takeover migration moves, as the preferred source of the subnet route.
// Equivalent to: ip addr add $svc/24 dev eth0; ip route replace $subnet dev eth0 src $svc
func serviceAddr(t testing.TB, h *hosts.Host, subnet netip.Prefix) netip.Addr {
	t.Helper()
	b := subnet.Masked().Addr().As4()
	b[3] = 100
	svc := netip.AddrFrom4(b)
	hd, err := h.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	link, err := hd.LinkByName(h.Iface)
	if err != nil {
		t.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: svc.AsSlice(), Mask: net.CIDRMask(subnet.Bits(), 32)}}
	if err := hd.AddrReplace(link, addr); err != nil {
		t.Fatal(fmt.Errorf("add %s to host %s: %w", svc, h.Name, err))
	}
	return svc
}

// requireOrder checks that the log file at path has a line containing each
// of msgs, in that order.
func requireOrder(t *testing.T, path string, msgs ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	i := 0
	for _, m := range msgs {
		for i < len(lines) && !strings.Contains(lines[i], m) {
			i++
		}
		if i == len(lines) {
			t.Fatalf("%s: no %q after the earlier steps %q:\n%s", filepath.Base(path), m, msgs, b)
		}
	}
}
