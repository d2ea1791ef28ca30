package integration

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
)

// newTreeTCPHosts makes hosts A, B and C of the lazy tree TCP tests, with
// a service address on B.
func newTreeTCPHosts(t *testing.T, prefix string) (hA, hB, hC *hosts.Host, svc netip.Addr) {
	t.Helper()
	needRoot(t)
	buildLazycr()
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	netw, err := hosts.New(hosts.Options{Prefix: prefix})
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
	return hs[0], hs[1], hs[2], serviceAddr(t, hs[1], netw.Subnet)
}

// migrateTreeTCP migrates the tree of pid (the init of a PID namespace on
// B) lazily to C with the takeover policy, the source releasing the
// service address after DONE, and returns the restored root and the
// running target; the caller waits for both halves. whileFrozen, if not
// nil, runs once the tree is frozen, before the target starts.
func migrateTreeTCP(t *testing.T, hB, hC *hosts.Host, pid int, whileFrozen func()) (*proc, *lazyRun, *lazySource) {
	t.Helper()
	src := startLazySource(t, hB, pid, hB.Addr.String(), "--release-addresses")
	if whileFrozen != nil {
		whileFrozen()
	}
	// The listener has no peer to find the interface by, and the hosts
	// have no default route: the takeover is told where to go.
	args := []string{"restore", "--lazy-from", src.addr, "--pidns", "--net-policy", "takeover", "--net-iface", hC.Iface}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hC, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) }) // the namespace's init: its members go with it
	return rp, dst, src
}

// requireNoHeldLocks fails t if a host keeps a held network lock.
func requireNoHeldLocks(t *testing.T, hs ...*hosts.Host) {
	t.Helper()
	for _, h := range hs {
		if held := heldOn(t, h); len(held) > 0 {
			t.Errorf("host %s keeps held locks %v", h.Name, held)
		}
	}
}

// TestTreeTCPLazyNginxHosts: nginx (master + 2 workers) on host B, with a
// keep-alive client on host A whose connection a worker (a member of the
// tree, not the root) holds, migrates lazily to host C (--pidns, takeover
// of the service address). The same client connection keeps getting the
// file with its checksum, during the lazy phase and after it, without an
// error; both workers come back; no held lock is left on B or C (before,
// the lazy dump was refused: TestTreeTCPLazyRefused).
func TestTreeTCPLazyNginxHosts(t *testing.T) {
	t.Parallel()
	hA, hB, hC, svc := newTreeTCPHosts(t, "ttcn")
	const port = 8080 // inside the hosts' own fresh namespaces
	addr := netip.AddrPortFrom(svc, port).String()
	s := newNginxSite(t, addr) // skips without nginx
	path, _ := exec.LookPath("nginx")
	cmd := hB.Command(context.Background(), path, s.args()...)
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	dial := func() (net.Conn, error) {
		var c net.Conn
		err := hA.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, reportTimeout)
			return err
		})
		return c, err
	}
	waitServing(t, p, s, dial)
	workers := nginxWorkers(t, p.pid, 2)
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(4 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	get := func(when string, i int) {
		t.Helper()
		if sum, err := httpGet(c, br, false); err != nil || sum != s.sum {
			t.Fatalf("keep-alive GET %d %s: %v, checksum %x, want %x\n%s", i, when, err, sum, s.sum, s.errorLog())
		}
	}
	get("before the migration", 0)

	rp, dst, src := migrateTreeTCP(t, hB, hC, p.pid, nil)
	get("once the target resumed", 1)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	for _, w := range workers {
		waitGone(t, w)
	}
	if got := nginxWorkers(t, rp.pid, 2); len(got) != 2 {
		t.Errorf("restored workers %v", got)
	}
	if n := lazyNetnsOf(t, rp.pid); n != lazyHostNetns(t, hC) {
		t.Errorf("restored nginx is in network namespace %s, want host C's %s", n, lazyHostNetns(t, hC))
	}
	for i := 2; i < 5; i++ {
		get("after the migration", i)
	}
	if sum, err := fetchOnce(dial); err != nil || sum != s.sum {
		t.Fatalf("GET on a new connection after the migration: %v, checksum %x\n%s", err, sum, s.errorLog())
	}
	if l := s.errorLog(); strings.Contains(l, "[alert]") || strings.Contains(l, "[emerg]") || strings.Contains(l, "[crit]") {
		t.Errorf("nginx's error log:\n%s", l)
	}
	// On C the worker's connection is locked before its address moves
	// there and unlocked once it is live, before anything runs; on B it
	// is held from the freeze until the address is gone.
	_, de := dst.output()
	requireInOrder(t, "target", de, "network locked conns=1", "takeover: "+svc.String()+" moved to this host", "network unlocked", "resumed; serving lazy pages")
	_, se := src.output()
	requireInOrder(t, "source", se, "network lock held for a restore", "target resumed the process", "held network lock removed")
	requireNoHeldLocks(t, hB, hC)
}

// TestTreeTCPLazyForkingServerHosts: the forking server of
// TestTreeTCPForkingServer on host B (the init of a PID namespace), its
// child serving a connection from host A that the root accepted
// ("worker": the root closed its copy; "shared": one description held by
// both members), migrates lazily to host C (--pidns, takeover). The
// client's connection carries on: a counter sent while the tree is frozen
// (dropped by the lock, retransmitted) and the next ones come back, the
// child's own check of the counters holds, and no held lock is left.
func TestTreeTCPLazyForkingServerHosts(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "treetcp")
	for _, mode := range []string{"worker", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			hA, hB, hC, svc := newTreeTCPHosts(t, "ttc"+mode[:1])
			cmd := hB.Command(context.Background(), bin, mode, "any")
			cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
			p := startCmd(t, cmd)
			var rep struct {
				Pid  int `json:"pid"` // 1: the namespace's init
				Port int `json:"port"`
			}
			waitReport(t, p, &rep)
			var c net.Conn
			if err := hA.Do(func() error {
				var err error
				c, err = net.DialTimeout("tcp", netip.AddrPortFrom(svc, uint16(rep.Port)).String(), reportTimeout)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(4 * lazycrTimeout)); err != nil {
				t.Fatal(err)
			}
			send := func(v uint64) {
				t.Helper()
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], v)
				if _, err := c.Write(b[:]); err != nil {
					t.Fatalf("send %d: %v", v, err)
				}
			}
			for v := uint64(1); v <= 5; v++ {
				send(v)
				readEcho(t, c, v)
			}
			kids := descendants(t, p.pid)
			if len(kids) != 1 {
				t.Fatalf("the server has descendants %v, want one child", kids)
			}
			// Sent while the tree is frozen: the source's lock keeps it
			// off, the client's kernel sends it again until it reaches C.
			var sent time.Time
			rp, dst, src := migrateTreeTCP(t, hB, hC, p.pid, func() { sent = time.Now(); send(6) })
			readEcho(t, c, 6)
			gap := time.Since(sent)
			for v := uint64(7); v <= 10; v++ {
				send(v)
				readEcho(t, c, v)
			}
			dst.requireExit(t, 0)
			src.requireExit(t, 0)
			requireLazySourceGone(t, p)
			waitGone(t, kids[0])
			if got := descendants(t, rp.pid); len(got) != 1 {
				t.Errorf("restored server has descendants %v, want one child", got)
			}
			for v := uint64(11); v <= 15; v++ {
				send(v)
				readEcho(t, c, v)
			}
			rp.continueOutput(p, false)
			checkSequence(t, rp, "echo")
			if s := rp.stderr(); s != "" {
				t.Errorf("the server complains:\n%s", s)
			}
			_, de := dst.output()
			requireInOrder(t, "target", de, "network locked", "takeover: "+svc.String()+" moved to this host", "network unlocked", "resumed; serving lazy pages")
			t.Logf("counter sent while frozen echoed after %v; freeze->resume %v", gap.Round(time.Millisecond), parseLazySummary(t, de).freezeToResume)
			_, se := src.output()
			requireInOrder(t, "source", se, "network lock held for a restore", "target resumed the process", "held network lock removed")
			requireNoHeldLocks(t, hB, hC)
		})
	}
}

// TestTreeTCPLazyTargetFails: a lazy tree migration whose target fails
// once every member is built, before any runs (failpoint
// restore.resume), is rolled back: the target aborts the child's
// re-created connection (its lock goes, the socket dies in repair mode
// with neither FIN nor RST) and gives the service address back, the
// source releases the tree, and the client's connection carries on with
// the original child on B, a counter sent meanwhile included. No lock is
// left on either host.
func TestTreeTCPLazyTargetFails(t *testing.T) {
	t.Parallel()
	fp := failpointLazycr(t)
	bin := buildC(t, "treetcp")
	hA, hB, hC, svc := newTreeTCPHosts(t, "ttcf")
	cmd := hB.Command(context.Background(), bin, "worker", "any")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var rep struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &rep)
	var c net.Conn
	if err := hA.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", netip.AddrPortFrom(svc, uint16(rep.Port)).String(), reportTimeout)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(4 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	send := func(v uint64) {
		t.Helper()
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		if _, err := c.Write(b[:]); err != nil {
			t.Fatalf("send %d: %v", v, err)
		}
	}
	send(1)
	readEcho(t, c, 1)
	kids := descendants(t, p.pid)
	if len(kids) != 1 {
		t.Fatalf("the server has descendants %v, want one child", kids)
	}
	src := startLazySource(t, hB, p.pid, hB.Addr.String(), "--release-addresses")
	send(2)
	args := []string{"restore", "--lazy-from", src.addr, "--pidns", "--net-policy", "takeover", "--net-iface", hC.Iface}
	tc := hC.Command(context.Background(), fp, args...)
	tc.Env = append(os.Environ(), "LAZYCR_TOKEN="+lazyTestToken, "LAZYCR_FAILPOINT=restore.resume")
	dst := startLazyRun(t, "target lazycr (failpoint restore.resume) "+strings.Join(args, " "), tc)
	dst.requireExit(t, 1)
	src.requireExit(t, 1)
	_, de := dst.output()
	if !strings.Contains(de, "injected") {
		t.Fatalf("the target did not fail at the failpoint:\n%s", de)
	}
	requireInOrder(t, "target", de, "network locked conns=1", "takeover: "+svc.String()+" moved to this host", "network unlocked")
	rolledBack := time.Now()
	readEcho(t, c, 2)
	t.Logf("the counter sent during the migration came back %v after the rollback", time.Since(rolledBack).Round(time.Millisecond))
	for v := uint64(3); v <= 6; v++ {
		send(v)
		readEcho(t, c, v)
	}
	requireRunning(t, p.pid)
	requireRunning(t, kids[0])
	requireNoHeldLocks(t, hB, hC)
	checkSequence(t, p, "echo")
}

// TestTreeTCPLazyOneHostRefused: a lazy migration of the forking server on
// one host (into a fresh PID namespace, same network namespace) cannot
// move the child's connection, which the frozen original holds until the
// target is done: the target refuses it before building anything, naming
// the member, its fd and the connection; the source releases the tree and
// the client's connection carries on. Before, the restore failed half-way
// with "connect ... in repair mode: cannot assign requested address".
func TestTreeTCPLazyOneHostRefused(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "treetcp")
	buildLazycr()
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	cmd := exec.Command(bin, "worker")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var rep struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &rep)
	c, err := net.DialTimeout("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(rep.Port)).String(), reportTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(4 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	send := func(v uint64) {
		t.Helper()
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v)
		if _, err := c.Write(b[:]); err != nil {
			t.Fatalf("send %d: %v", v, err)
		}
	}
	send(1)
	readEcho(t, c, 1)
	kids := descendants(t, p.pid)
	if len(kids) != 1 {
		t.Fatalf("the server has descendants %v, want one child", kids)
	}
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	send(2)
	args := []string{"restore", "--lazy-from", src.addr, "--pidns"}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, nil, args...))
	dst.requireExit(t, 1)
	src.requireExit(t, 1)
	_, de := dst.output()
	local := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(rep.Port)).String()
	for _, want := range []string{"fd ", "TCP connection " + local + " -> ", "still exists in this network namespace", "another network namespace"} {
		if !strings.Contains(de, want) {
			t.Fatalf("target's error does not say %q:\n%s", want, de)
		}
	}
	if strings.Contains(de, "repair mode") {
		t.Errorf("the target built the connection before refusing it:\n%s", de)
	}
	readEcho(t, c, 2)
	for v := uint64(3); v <= 5; v++ {
		send(v)
		readEcho(t, c, v)
	}
	requireRunning(t, p.pid)
	requireRunning(t, kids[0])
	checkSequence(t, p, "echo")
}

// requireInOrder checks that log (of who) has each of msgs, in that order.
func requireInOrder(t *testing.T, who, log string, msgs ...string) {
	t.Helper()
	rest := log
	for _, m := range msgs {
		i := strings.Index(rest, m)
		if i < 0 {
			t.Fatalf("%s log: no %q after the messages before it:\n%s", who, m, log)
		}
		rest = rest[i+len(m):]
	}
}
