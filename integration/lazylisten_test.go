package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
	"github.com/lazycr/lazycr/netlock"
)

// listenClient opens one new connection from host h to addr, sends a line
// and reads the server's reply ("ok N"), all within timeout. A reset, a
// refusal or a wrong reply is an error.
func listenClient(h *hosts.Host, addr string, timeout time.Duration) error {
	var c net.Conn
	if err := h.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	}); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("hello\n")); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	b := make([]byte, 64)
	n, err := c.Read(b)
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	if !strings.HasPrefix(string(b[:n]), "ok ") {
		return fmt.Errorf("reply %q, want ok N", b[:n])
	}
	return nil
}

// clientConnsTo counts the TCP sockets of host h that connect to port
// (SYN_SENT or established), from /proc/net/tcp of h.
func clientConnsTo(t *testing.T, h *hosts.Host, port int) int {
	t.Helper()
	n := 0
	if err := h.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/tcp")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 4 || (f[3] != "01" && f[3] != "02") {
				continue
			}
			_, rp, _ := strings.Cut(f[2], ":")
			if p, err := strconv.ParseUint(rp, 16, 16); err == nil && int(p) == port {
				n++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// lazyListenerClients runs the clients of the lazy listener tests against
// addr from host h: with loop, one opening one new connection after
// another until stop is closed, and, once start is closed, burst clients
// at once. It
// returns a function that waits for them all and returns every client's
// outcome (nil: served).
func lazyListenerClients(h *hosts.Host, addr string, loop bool, burst int, start, stop <-chan struct{}) func() (served int, errs []error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	served := 0
	var errs []error
	record := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		} else {
			served++
		}
	}
	wg.Go(func() {
		for loop {
			select {
			case <-stop:
				return
			default:
			}
			record(listenClient(h, addr, lazycrTimeout))
		}
	})
	wg.Go(func() {
		<-start
		var bw sync.WaitGroup
		for range burst {
			bw.Go(func() { record(listenClient(h, addr, lazycrTimeout)) })
		}
		bw.Wait()
	})
	return func() (int, []error) {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return served, errs
	}
}

// TestLazyListenerNewClientsHosts: a server accepting one new connection
// after another (tcpbacklog loop, on the service address) migrates lazily
// from host B to host C (--new-pid, takeover of the service address, the
// source releasing it after DONE) while a client on host A keeps opening
// new connections to the service address, three of them while the process is
// frozen and before the target exists. Every client is served, by the
// original or by the migrated process: none is reset or refused, and no
// lock is left on B or C. Before, the frozen original's kernel completed
// the handshakes of the clients that came while it was frozen into an
// accept queue that died with it (the lazy dump locked no listener): they
// were reset when the source killed it after DONE.
func TestLazyListenerNewClientsHosts(t *testing.T) {
	t.Parallel()
	testLazyListenerClients(t, "lls", "hosts")
}

// TestLazyListenerTargetFailsHosts: the same migration, but the target
// fails once the process is built, before it runs (failpoint
// restore.resume): the target gives the service address back, the source
// releases the original, and every client (those that connected while it
// was frozen included) is served by the original; it serves new clients
// after the rollback, and no lock is left on B or C.
func TestLazyListenerTargetFailsHosts(t *testing.T) {
	t.Parallel()
	testLazyListenerClients(t, "llf", "fail")
}

// TestLazyListenerNewClientsSameHost: the same server migrates lazily on
// its host B (--new-pid): the target takes the listening socket over from
// the frozen original and removes the source's lock on it before the
// process runs (the target logs the removal before it resumes: without it
// the lock stayed until the source's end), the clients on A that connected
// while it was frozen are served, and no lock is left on B. No looping
// client: a connection the server holds at the freeze is refused on one
// host (TestTCPSameHostLazyRefused).
func TestLazyListenerNewClientsSameHost(t *testing.T) {
	t.Parallel()
	testLazyListenerClients(t, "llh", "samehost")
}

// testLazyListenerClients runs the lazy listener tests: mode "hosts"
// migrates from B to C, "fail" too with the target failing at the
// failpoint restore.resume, "samehost" from B to B.
func testLazyListenerClients(t *testing.T, prefix, mode string) {
	fail := mode == "fail"
	bin := buildC(t, "tcpbacklog")
	hA, hB, hC, svc := newTreeTCPHosts(t, prefix)
	fp := ""
	if fail {
		fp = failpointLazycr(t)
	}
	// Between hosts the server listens on the service address: the
	// takeover moves the addresses the sockets are bound to, and a
	// listener on 0.0.0.0 names none. It worked only when the freeze
	// caught a connection being served (whose local address is the
	// service address); now that a listener refused for its queue stays
	// locked over the pauses between the tries, the process is more
	// often idle at the try that succeeds (the address stayed on B,
	// nothing listened there: "connection refused").
	listen := "any"
	if mode == "hosts" {
		listen = svc.String()
	}
	p := startCmd(t, hB.Command(context.Background(), bin, "loop", listen))
	var rep backlogReport
	waitReport(t, p, &rep)
	addr := netip.AddrPortFrom(svc, uint16(rep.Port)).String()
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Fatalf("client before the migration: %v", err)
	}
	before := clientConnsTo(t, hA, rep.Port)
	start, stop := make(chan struct{}), make(chan struct{})
	// On one host a connection the server holds at the freeze (the
	// loop's) is refused (TestTCPSameHostLazyRefused): the burst only.
	wait := lazyListenerClients(hA, addr, mode != "samehost", 3, start, stop)
	stopped := false
	defer func() {
		if !stopped {
			close(stop)
		}
	}()

	var srcExtra []string
	if mode != "samehost" {
		srcExtra = []string{"--release-addresses"}
	}
	src := startLazySource(t, hB, p.pid, hB.Addr.String(), srcExtra...)
	// Frozen: the burst's connections are opened (SYN sent or, without a
	// lock, handshake completed by the frozen kernel) before the target
	// starts.
	close(start)
	deadline := time.Now().Add(progressTimeout)
	for clientConnsTo(t, hA, rep.Port) < before+3 {
		if time.Now().After(deadline) {
			t.Fatalf("the burst clients on A never opened their connections (%d sockets)", clientConnsTo(t, hA, rep.Port))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	args := []string{"restore", "--lazy-from", src.addr, "--new-pid", "--net-policy", "takeover", "--net-iface", hC.Iface}
	if fail {
		tc := hC.Command(context.Background(), fp, args...)
		tc.Env = append(os.Environ(), "LAZYCR_TOKEN="+lazyTestToken, "LAZYCR_FAILPOINT=restore.resume")
		dst := startLazyRun(t, "target lazycr (failpoint restore.resume) "+strings.Join(args, " "), tc)
		dst.requireExit(t, 1)
		src.requireExit(t, 1)
		if _, de := dst.output(); !strings.Contains(de, "injected") {
			t.Fatalf("the target did not fail at the failpoint:\n%s", de)
		}
		requireRunning(t, p.pid)
	} else if mode == "samehost" {
		args = []string{"restore", "--lazy-from", src.addr, "--new-pid"}
		dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hB, args...))
		rp := adopt(t, lazyResumedPID(t, dst))
		t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) })
		dst.requireExit(t, 0)
		src.requireExit(t, 0)
		requireLazySourceGone(t, p)
		_, de := dst.output()
		requireInOrder(t, "target", de, "took the listening socket", "held network lock removed (it held listeners only)", "resumed; serving lazy pages")
	} else {
		dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hC, args...))
		rp := adopt(t, lazyResumedPID(t, dst))
		t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) })
		dst.requireExit(t, 0)
		src.requireExit(t, 0)
		requireLazySourceGone(t, p)
	}
	close(stop)
	stopped = true
	served, errs := wait()
	for _, err := range errs {
		t.Errorf("client: %v", err)
	}
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Errorf("client after the migration: %v", err)
	}
	t.Logf("%d clients served during the migration, %d failed", served, len(errs))
	requireNoHeldLocks(t, hB, hC)
}

// TestLazyListenerSourceKilled: the source lazycr of a lazy migration of
// the server on host B is killed (SIGKILL) once it froze the server,
// before any target came. The original stays stopped (the guard), and its
// listener stays locked by the held lock: a client on A that connects
// meanwhile is not queued in the stopped original's accept queue (where
// it would be reset if the user then killed it) but kept waiting in
// SYN_SENT. `lazycr unlock --all` on B removes the lock, `kill -CONT` lets
// the original run on, and the waiting client is served by it. Before, a
// lazy dump locked no listener: no held lock was there.
func TestLazyListenerSourceKilled(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "tcpbacklog")
	hA, hB, _, svc := newTreeTCPHosts(t, "llk")
	p := startCmd(t, hB.Command(context.Background(), bin, "loop", "any"))
	var rep backlogReport
	waitReport(t, p, &rep)
	addr := netip.AddrPortFrom(svc, uint16(rep.Port)).String()
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Fatalf("client before the migration: %v", err)
	}
	src := startLazySource(t, hB, p.pid, hB.Addr.String())
	if err := src.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-src.done
	requireStoppedOriginal(t, p)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(st)
	start, err := strconv.ParseUint(strings.Fields(s[strings.LastIndexByte(s, ')')+2:])[19], 10, 64) // field 22
	if err != nil {
		t.Fatal(err)
	}
	want := netlock.HeldName(p.pid, start)
	if held := heldOn(t, hB); !slices.Equal(held, []string{want}) {
		t.Fatalf("held locks on B after the source was killed: %v, want [%s]", held, want)
	}
	served := make(chan error, 1)
	go func() { served <- listenClient(hA, addr, lazycrTimeout) }()
	deadline := time.Now().Add(progressTimeout)
	for clientConnsTo(t, hA, rep.Port) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the client on A never opened its connection")
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	out, err := lazyCmd(t, hB, "unlock", "--all").CombinedOutput()
	if err != nil {
		t.Fatalf("lazycr unlock --all on B: %v\n%s", err, out)
	}
	requireNoHeldLocks(t, hB)
	if err := unix.Kill(p.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Errorf("client that connected while the source was dead: %v", err)
	}
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Errorf("client after the original was continued: %v", err)
	}
}

// TestLazyListenerTreeSameHost: a prefork server (tcpbacklog loop any
// fork: the init of a PID namespace and its child accept on one listening
// socket) migrates lazily on its host B (--pidns). Each process's held
// lock names the listener; the target takes the socket over and removes
// both processes' locks before any runs (two removals logged before the
// resume), the clients on A that connected while the tree was frozen are
// served, and no lock is left on B. Before, only the process that took
// the socket over removed its lock: the other's held new clients off
// until the source's end.
func TestLazyListenerTreeSameHost(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "tcpbacklog")
	hA, hB, _, svc := newTreeTCPHosts(t, "llt")
	cmd := hB.Command(context.Background(), bin, "loop", "any", "fork")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var rep struct {
		backlogReport
		Child int `json:"child"` // in the namespace
	}
	waitReport(t, p, &rep)
	addr := netip.AddrPortFrom(svc, uint16(rep.Port)).String()
	deadline := time.Now().Add(progressTimeout)
	for len(descendants(t, p.pid)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the server has descendants %v, want one child", descendants(t, p.pid))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	kid := descendants(t, p.pid)[0]
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Fatalf("client before the migration: %v", err)
	}
	before := clientConnsTo(t, hA, rep.Port)
	start, stop := make(chan struct{}), make(chan struct{})
	wait := lazyListenerClients(hA, addr, false, 3, start, stop)
	src := startLazySource(t, hB, p.pid, hB.Addr.String())
	close(start)
	for clientConnsTo(t, hA, rep.Port) < before+3 {
		if time.Now().After(deadline) {
			t.Fatalf("the burst clients on A never opened their connections (%d sockets)", clientConnsTo(t, hA, rep.Port))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
	args := []string{"restore", "--lazy-from", src.addr, "--pidns"}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hB, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) }) // the namespace's init
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	waitGone(t, kid)
	close(stop)
	served, errs := wait()
	for _, err := range errs {
		t.Errorf("client: %v", err)
	}
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Errorf("client after the migration: %v", err)
	}
	_, de := dst.output()
	const removed = "held network lock removed (it held listeners only)"
	requireInOrder(t, "target", de, "took the listening socket", removed, removed, "resumed; serving lazy pages")
	t.Logf("%d clients served during the migration, %d failed", served, len(errs))
	requireNoHeldLocks(t, hB)
}
