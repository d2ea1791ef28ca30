package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
)

// Half-closed TCP connections across `dump -D` / `restore -D` (files/tcp.go,
// files/tcpfin.go): halfclose holds two connections to the test, one in
// CLOSE_WAIT (the test shut its side down, bytes still unread) and one in
// FIN_WAIT2 (the program shut its side down, the test still sends), and
// one connection to itself with an end in each. After the restore the
// program reads each rest and the end of stream exactly where it was,
// sends on the CLOSE_WAIT sockets and receives on the FIN_WAIT2 ones; the
// test checks what it receives and that nothing was reset.

// halfClosePeers starts halfclose against a listener of the test and
// returns the process with the test's ends of cw and fw, once the program
// reports its sockets in their states. GOFILE lets it go on.
func halfClosePeers(t *testing.T, bin string, v6 bool, goFile string, startProg func(args ...string) *proc) (*proc, *net.TCPConn, *net.TCPConn) {
	t.Helper()
	fam := "4"
	if v6 {
		fam = "6"
	}
	l, err := net.Listen("tcp", loopbackAddr(v6)+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := startProg(fam, strconv.Itoa(l.Addr().(*net.TCPAddr).Port), goFile)
	l.(*net.TCPListener).SetDeadline(time.Now().Add(reportTimeout))
	var conns [2]*net.TCPConn
	for i := range conns {
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c.(*net.TCPConn)
	}
	cw, fw := conns[0], conns[1]
	var rep tcpReport
	waitReport(t, p, &rep)
	if _, err := cw.Write([]byte("cw-in")); err != nil {
		t.Fatal(err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// fw's bytes and FIN arrive (and are acknowledged) before the dump.
	fw.SetReadDeadline(time.Now().Add(reportTimeout))
	if b, err := io.ReadAll(fw); err != nil || string(b) != "fw-out" {
		t.Fatalf("the test's end of fw read %q, %v; want \"fw-out\" and EOF", b, err)
	}
	waitTick(t, p, "ready", 1)
	return p, cw, fw
}

// checkHalfClosed lets the restored program go and checks both sides.
func checkHalfClosed(t *testing.T, rp *proc, goFile string, cw, fw *net.TCPConn) {
	t.Helper()
	if _, err := fw.Write([]byte("fw-in")); err != nil {
		t.Fatalf("write on the test's end of fw after the restore: %v", err)
	}
	if err := fw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitTick(t, rp, "done", 1)
	cw.SetReadDeadline(time.Now().Add(lazycrTimeout))
	if b, err := io.ReadAll(cw); err != nil || string(b) != "cw-back" {
		t.Fatalf("the test's end of cw read %q, %v; want \"cw-back\" and EOF", b, err)
	}
	for name, c := range map[string]*net.TCPConn{"cw": cw, "fw": fw} {
		if err := soError(t, c); err != nil {
			t.Errorf("the test's end of %s: %v", name, err)
		}
	}
}

// soError returns the pending socket error of c (a reset shows as
// ECONNRESET), nil if there is none.
func soError(t *testing.T, c *net.TCPConn) error {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	if v != 0 {
		return fmt.Errorf("SO_ERROR %w", unix.Errno(v))
	}
	return nil
}

// TestTCPHalfClosedDumpRestore: IPv4 and IPv6, plain dump and restore on
// one host. Before this was supported the dump refused the CLOSE_WAIT
// sockets ("in state CLOSE_WAIT"), and the never-connected ones ("in
// state CLOSE").
func TestTCPHalfClosedDumpRestore(t *testing.T) {
	bin := buildC(t, "halfclose")
	for _, v6 := range []bool{false, true} {
		name := "ipv4"
		if v6 {
			name = "ipv6"
		}
		t.Run(name, func(t *testing.T) {
			goFile := filepath.Join(t.TempDir(), "go")
			p, cw, fw := halfClosePeers(t, bin, v6, goFile, func(args ...string) *proc { return start(t, bin, args...) })
			dir := dumpKill(t, p)
			states := map[uint32]int{}
			fresh := 0
			for _, f := range show(t, dir).fds(t, p.pid).Fds {
				s := f.GetInetSocket()
				if st := s.GetTcp(); st != nil {
					states[st.State]++
				} else if s != nil && !s.Listening {
					fresh++
				}
			}
			// CLOSE_WAIT 8 (cw, b), FIN_WAIT2 5 (fw, a).
			if states[8] != 2 || states[5] != 2 || fresh != 2 {
				t.Fatalf("image holds TCP connections in states %v and %d other sockets, want two CLOSE_WAIT (8), two FIN_WAIT2 (5) and two never connected", states, fresh)
			}
			rp := restoreFrom(t, p, dir)
			checkHalfClosed(t, rp, goFile, cw, fw)
		})
	}
}

// TestTCPHalfClosedLeaveRunning: a --leave-running dump of half-closed
// connections gives them back as they were (repair off, lock released).
func TestTCPHalfClosedLeaveRunning(t *testing.T) {
	bin := buildC(t, "halfclose")
	goFile := filepath.Join(t.TempDir(), "go")
	p, cw, fw := halfClosePeers(t, bin, false, goFile, func(args ...string) *proc { return start(t, bin, args...) })
	img := dumpLeaveRunning(t, p.pid)
	if n := len(img.fds(t, p.pid).Fds); n == 0 {
		t.Fatal("empty fd table in the image")
	}
	checkHalfClosed(t, p, goFile, cw, fw)
}

// TestTCPHalfClosedLazyMigration: halfclose serves on host B, the test's
// two connections come from host A to B's service address; the process
// migrates post-copy to host C (takeover), its half-closed connections
// (and its connection to itself) with it, locked on both sides meanwhile.
func TestTCPHalfClosedLazyMigration(t *testing.T) {
	bin := buildC(t, "halfclose")
	goFile := filepath.Join(t.TempDir(), "go")
	l := newLazyTCPWith(t, func(ctx context.Context, hB *hosts.Host) (*proc, int) {
		p := startCmd(t, hB.Command(ctx, bin, "4", "server", goFile))
		var rep tcpReport
		waitReport(t, p, &rep)
		return p, rep.Port
	})
	cw := l.c
	var fw *net.TCPConn
	if err := l.hA.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(l.svc, uint16(l.port)).String(), reportTimeout)
		if err == nil {
			fw = c.(*net.TCPConn)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	if _, err := cw.Write([]byte("cw-in")); err != nil {
		t.Fatal(err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	fw.SetReadDeadline(time.Now().Add(reportTimeout))
	if b, err := io.ReadAll(fw); err != nil || string(b) != "fw-out" {
		t.Fatalf("the test's end of fw read %q, %v; want \"fw-out\" and EOF", b, err)
	}
	waitTick(t, l.p, "ready", 1)

	terr, srcErr, dstErr, dstOut := l.migrate(t, "takeover")
	if terr != nil {
		e, _ := os.ReadFile(dstErr)
		s, _ := os.ReadFile(srcErr)
		t.Fatalf("lazycr restore on C: %v\n%s\nsource:\n%s", terr, e, s)
	}
	b, _ := os.ReadFile(dstOut)
	npid, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("target stdout %q: no pid", b)
	}
	np := adopt(t, npid)
	np.continueOutput(l.p, true)
	t.Logf("migrated: pid %d on B is pid %d on C", l.p.pid, np.pid)
	checkHalfClosed(t, np, goFile, cw, fw)
	for _, h := range []*hosts.Host{l.hB, l.hC} {
		if held := heldOn(t, h); len(held) > 0 {
			t.Errorf("host %s keeps held locks %v", h.Name, held)
		}
	}
}
