package integration

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
)

// A busy listener (qa8 Q8): clients open new connections so often that
// every freeze of the server finds one waiting in its accept queue. A
// queued connection is a passing state (files/inet.go listenQueue): the
// dump lets the process run a moment and freezes it again. Before, each
// refused try dropped the listener's lock with the try, so during every
// pause new handshakes completed and the next freeze found a fresh
// connection queued, over every try; the lazy migration's last try then
// kept the queue, which on another host dies with the original: its
// client was reset. Now the refused listener stays locked over the pauses
// (dump/retry.go): new SYNs wait to be retransmitted while the process
// accepts its queue, and the next try finds it empty.

// busyLoops is how many clients open connections back to back at once:
// the server serves one connection at a time, so the others wait in its
// accept queue nearly all the time.
const busyLoops = 4

// busyClients are busyLoops clients, each opening one connection after
// another (startBusyClients).
type busyClients struct {
	mu      sync.Mutex
	served  int
	errs    []error
	wg      sync.WaitGroup
	quit    chan struct{}
	stopped bool
}

// startBusyClients runs busyLoops loops of client, each calling it again
// as soon as it returned, until stop.
func startBusyClients(client func() error) *busyClients {
	b := &busyClients{quit: make(chan struct{})}
	for range busyLoops {
		b.wg.Go(func() {
			for {
				select {
				case <-b.quit:
					return
				default:
				}
				err := client()
				b.mu.Lock()
				if err != nil {
					b.errs = append(b.errs, err)
				} else {
					b.served++
				}
				b.mu.Unlock()
			}
		})
	}
	return b
}

// serveMore waits until n more clients than now were served; false if
// they were not within progressTimeout.
func (b *busyClients) serveMore(n int) bool {
	b.mu.Lock()
	want := b.served + n
	b.mu.Unlock()
	deadline := time.Now().Add(progressTimeout)
	for {
		b.mu.Lock()
		got := b.served
		b.mu.Unlock()
		if got >= want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// stop ends the loops, waits for them and returns how many clients were
// served and the errors of the others.
func (b *busyClients) stop() (int, []error) {
	if !b.stopped {
		b.stopped = true
		close(b.quit)
		b.wg.Wait()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.served, b.errs
}

// listenBacklog reads the backlog of the TCP listener on port in host h:
// for a listening socket ss's Send-Q is sk_max_ack_backlog (tcp_diag).
//
// Equivalent to: ss -ltnH sport = :PORT (inside h)
func listenBacklog(t *testing.T, h *hosts.Host, port int) int {
	t.Helper()
	out, err := h.Command(context.Background(), "ss", "-ltnH", "sport = :"+strconv.Itoa(port)).Output()
	if err != nil {
		t.Fatalf("ss -ltn in host %s: %v", h.Name, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 || f[0] != "LISTEN" {
		t.Fatalf("host %s: no listener on port %d: %q", h.Name, port, out)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatalf("host %s: ss line %q: %v", h.Name, out, err)
	}
	return n
}

// TestBusyListenerMigratesHosts: a server (tcpbacklog loop, on the service
// address) on host B
// with busyLoops clients on host A opening new connections back to back
// migrates lazily to host C (--new-pid, takeover, the source releasing the
// service address). Every client is served, by the original or by the
// migrated process: none is reset; the source never keeps a queue on its
// last try; the restored listener's backlog is the original's; no lock is
// left on B or C. Before the fix the source logged "to be accepted over
// every try" and a client was reset (connection reset by peer).
func TestBusyListenerMigratesHosts(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "tcpbacklog")
	hA, hB, hC, svc := newTreeTCPHosts(t, "lbz")
	// On the service address: the takeover moves the addresses the
	// sockets are bound to (a listener on 0.0.0.0 with no connection
	// at the freeze names none).
	p := startCmd(t, hB.Command(context.Background(), bin, "loop", svc.String()))
	var rep backlogReport
	waitReport(t, p, &rep)
	addr := netip.AddrPortFrom(svc, uint16(rep.Port)).String()
	backlog := listenBacklog(t, hB, rep.Port)

	b := startBusyClients(func() error { return listenClient(hA, addr, lazycrTimeout) })
	defer b.stop()
	waitTick(t, p, "served", 50)

	src := startLazySource(t, hB, p.pid, hB.Addr.String(), "--release-addresses")
	args := []string{"restore", "--lazy-from", src.addr, "--new-pid", "--net-policy", "takeover", "--net-iface", hC.Iface}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hC, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) })
	rp.continueOutput(p, true)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	// Clients go on against the migrated server until it served more.
	if !b.serveMore(20) {
		_, se := src.output()
		_, de := dst.output()
		t.Fatalf("the clients got no 20 replies in %v after the migration (restored pid %d state %s)\nsource:\n%s\ntarget:\n%s",
			progressTimeout, rp.pid, procState(rp.pid), se, de)
	}
	requireRunning(t, rp.pid)
	served, errs := b.stop()

	_, se := src.output()
	tries := strings.Count(se, "passing state refused")
	t.Logf("%d clients served, %d failed; the source was refused %d times", served, len(errs), tries)
	for _, err := range errs {
		t.Errorf("client: %v", err)
	}
	if strings.Contains(se, "to be accepted over every try") {
		t.Errorf("the source kept a listener's queue on its last try (lost on another host):\n%s", se)
	}
	if got := listenBacklog(t, hC, rep.Port); got != backlog {
		t.Errorf("restored listener's backlog %d, want %d (the original's)", got, backlog)
	}
	if err := listenClient(hA, addr, progressTimeout); err != nil {
		t.Errorf("client after the migration: %v", err)
	}
	requireNoHeldLocks(t, hB, hC)
}

// TestBusyListenerPlainDump: the server (tcpbacklog loop on 127.0.0.1)
// with busyLoops clients opening new connections back to back is dumped
// (killed) and restored: the dump goes through, and every client is
// served, by the original or the restored process (those that connect in
// between wait in SYN_SENT behind the held lock). Before the fix the
// dump was refused after 5 tries (qa8 Q8: "same cause makes a plain dump
// of a busy server refuse").
func TestBusyListenerPlainDump(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "tcpbacklog"), "loop")
	var rep backlogReport
	waitReport(t, p, &rep)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(rep.Port))
	b := startBusyClients(func() error {
		c, err := net.DialTimeout("tcp", addr, lazycrTimeout)
		if err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "hello\n"); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		line, err := readReply(c)
		if err != nil || !strings.HasPrefix(line, "ok ") {
			return fmt.Errorf("reply %q, %v; want ok N", line, err)
		}
		return nil
	})
	defer b.stop()
	waitTick(t, p, "served", 50)
	q := restoreFrom(t, p, dumpKill(t, p))
	if !b.serveMore(20) {
		t.Fatalf("the clients got no 20 replies in %v after the restore (pid %d state %s)", progressTimeout, q.pid, procState(q.pid))
	}
	requireRunning(t, q.pid)
	served, errs := b.stop()
	t.Logf("%d clients served, %d failed", served, len(errs))
	for _, err := range errs {
		t.Errorf("client: %v", err)
	}
}

// nftRuleset is `nft list ruleset` inside host h.
func nftRuleset(t *testing.T, h *hosts.Host) string {
	t.Helper()
	out, err := h.Command(context.Background(), "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list ruleset in host %s: %v\n%s", h.Name, err, out)
	}
	return string(out)
}

// TestBusyListenerFailedDumpLeavesNothing: a server in host B that does
// not accept (tcpbacklog gate) keeps two connections queued over every
// try, so the listener stays locked over the pauses between the tries.
// A refused plain dump, a refused --leave-running dump and a dump
// interrupted (SIGINT) in a pause each leave B's ruleset empty (`nft list
// ruleset`) and the server running; once its gate opens it serves the
// queued clients and a new one.
func TestBusyListenerFailedDumpLeavesNothing(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "tcpbacklog")
	netw, err := hosts.New(hosts.Options{Prefix: "lbf"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netw.Close() })
	hB, err := netw.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	gofile := filepath.Join(tmp, "go")
	p := startCmd(t, hB.Command(context.Background(), bin, "gate", gofile))
	var rep backlogReport
	waitReport(t, p, &rep)
	var cs []net.Conn
	for i := range 2 {
		if err := hB.Do(func() error {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(rep.Port)))
			if err != nil {
				return err
			}
			cs = append(cs, c)
			_, err = fmt.Fprintf(c, "hello %d\n", i)
			return err
		}); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	if rs := nftRuleset(t, hB); strings.TrimSpace(rs) != "" {
		t.Fatalf("host B has a ruleset before the dump:\n%s", rs)
	}

	pid := strconv.Itoa(p.pid)
	for _, c := range []struct {
		name  string
		extra []string
		sig   bool
	}{
		{"refused", nil, false},
		{"leave-running", []string{"--leave-running"}, false},
		{"interrupted", nil, true},
	} {
		dir := filepath.Join(tmp, "img-"+c.name)
		args := append([]string{"dump", "--pid", pid, "-D", dir}, c.extra...)
		r := startLazyRun(t, "lazycr "+strings.Join(args, " "), lazyCmd(t, hB, args...))
		want := []string{"new connections stay held off until the next try"}
		if c.sig {
			r.waitLine(t, true, `the "passing state refused" log line`, lazycrTimeout, func(l string) bool {
				return strings.Contains(l, "passing state refused")
			})
			if err := r.cmd.Process.Signal(unix.SIGINT); err != nil {
				t.Fatal(err)
			}
			want = append(want, "interrupted")
		} else {
			want = append(want, fmt.Sprintf(`tcp-listen 127\.0\.0\.1:%d\): 2 connections wait to be accepted`, rep.Port), "after 5 tries")
		}
		r.wait(t, lazycrTimeout)
		_, se := r.output()
		requireExit1(t, c.name+" dump", se, r.code, want...)
		if rs := nftRuleset(t, hB); strings.TrimSpace(rs) != "" {
			t.Errorf("%s dump left a ruleset in host B:\n%s", c.name, rs)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("%s dump left %s behind (%v)", c.name, dir, err)
		}
		requireRunning(t, p.pid)
	}
	requireProgress(t, p, "wait")

	if err := os.WriteFile(gofile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for i, c := range cs {
		line, err := readReply(c)
		if err != nil || !strings.HasPrefix(line, "ok ") {
			t.Errorf("queued client %d: reply %q, %v; want ok N", i, line, err)
		}
	}
	if err := listenClient(hB, net.JoinHostPort("127.0.0.1", strconv.Itoa(rep.Port)), progressTimeout); err != nil {
		t.Errorf("new client after the failed dumps: %v", err)
	}
}
