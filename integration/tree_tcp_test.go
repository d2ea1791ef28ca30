package integration

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTreeTCPNginxKeepAlive: nginx (master + 2 workers) with a keep-alive
// client connection to one worker (an established TCP connection held by
// a member of the tree, not the root) is dumped with `dump -D` and
// restored with `restore -D`: the worker's connection comes back, and the
// client's next GETs on that very connection get the file with its
// checksum; the master and workers keep their pids.
func TestTreeTCPNginxKeepAlive(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := newNginxSite(t, addr)
	p := startWith(t, func(c *exec.Cmd) { c.SysProcAttr = &unix.SysProcAttr{Setsid: true} }, "nginx", s.args()...)
	dial := func() (net.Conn, error) { return net.DialTimeout("tcp", addr, reportTimeout) }
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
	if sum, err := httpGet(c, br, false); err != nil || sum != s.sum {
		t.Fatalf("keep-alive GET: %v, checksum %x", err, sum)
	}
	img := dumpKill(t, p)
	for _, w := range workers {
		waitGone(t, w)
	}
	r := restoreAdopt(t, img)
	if r.pid != p.pid {
		t.Errorf("restored master pid %d, want %d", r.pid, p.pid)
	}
	if got := nginxWorkers(t, r.pid, 2); !slices.Equal(got, workers) {
		t.Errorf("restored workers %v, want %v", got, workers)
	}
	for i := range 3 {
		if sum, err := httpGet(c, br, false); err != nil || sum != s.sum {
			t.Fatalf("keep-alive GET %d after restore: %v, checksum %x, want %x\n%s", i, err, sum, s.sum, s.errorLog())
		}
	}
	if sum, err := fetchOnce(dial); err != nil || sum != s.sum {
		t.Fatalf("GET on a new connection after restore: %v, checksum %x\n%s", err, sum, s.errorLog())
	}
	if strings.Contains(s.errorLog(), "[alert]") || strings.Contains(s.errorLog(), "[emerg]") {
		t.Errorf("nginx's error log:\n%s", s.errorLog())
	}
}

// TestTreeTCPForkingServer: a forking server's child serves a connection
// the root accepted ("worker": the root closed its copy; "shared": the
// root keeps it, one description held by two members). After dump -D
// and restore -D the client's connection carries on: a counter sent while
// the tree was down (held off by the lock, retransmitted) and the next
// ones come back, and the child's own check of the counters holds.
func TestTreeTCPForkingServer(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "treetcp")
	for _, mode := range []string{"worker", "shared"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			p := start(t, bin, mode)
			var rep struct {
				Pid  int `json:"pid"`
				Port int `json:"port"`
			}
			waitReport(t, p, &rep)
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", rep.Port), reportTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(4 * lazycrTimeout)); err != nil {
				t.Fatal(err)
			}
			echo := func(v uint64) {
				t.Helper()
				var b [8]byte
				binary.LittleEndian.PutUint64(b[:], v)
				if _, err := c.Write(b[:]); err != nil {
					t.Fatalf("send %d: %v", v, err)
				}
				readEcho(t, c, v)
			}
			for v := uint64(1); v <= 5; v++ {
				echo(v)
			}
			kids := descendants(t, p.pid)
			if len(kids) != 1 {
				t.Fatalf("the server has descendants %v, want one child", kids)
			}
			t.Cleanup(func() { unix.Kill(kids[0], unix.SIGKILL) })
			dir := dumpKill(t, p)
			waitGone(t, kids[0])
			img := show(t, dir)
			if mode == "shared" && len(img.Tree.GetSharedFiles()) == 0 {
				t.Errorf("the image shares no description between members: %v", img.Tree.GetSharedFiles())
			}
			// Sent while nothing serves it: the lock keeps the packet off
			// the dead socket, the client's kernel sends it again.
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], 6)
			if _, err := c.Write(b[:]); err != nil {
				t.Fatalf("send 6 while the tree is down: %v", err)
			}
			rp := restoreFrom(t, p, dir)
			readEcho(t, c, 6)
			for v := uint64(7); v <= 10; v++ {
				echo(v)
			}
			if got := descendants(t, rp.pid); !slices.Equal(got, kids) {
				t.Errorf("restored server has descendants %v, want %v", got, kids)
			}
			checkSequence(t, rp, "echo")
			if s := rp.stderr(); s != "" {
				t.Errorf("the server complains:\n%s", s)
			}
		})
	}
}

// readEcho reads one 8-byte counter from c, which must be v.
func readEcho(t *testing.T, c net.Conn, v uint64) {
	t.Helper()
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		t.Fatalf("read the echo of %d: %v", v, err)
	}
	if got := binary.LittleEndian.Uint64(b[:]); got != v {
		t.Fatalf("echo %d, want %d", got, v)
	}
}

// TestTreeTCPRestoreFailpoint: a tree restore that fails once every
// member is built, before any runs (failpoint restore.resume), kills the
// whole tree, and the child's re-created connection dies in repair mode
// with its held lock removed (as a single process's does): no held lock
// of the tree is left behind. Before, a member's connections were never
// aborted and its held lock stayed.
func TestTreeTCPRestoreFailpoint(t *testing.T) {
	t.Parallel()
	lazycr := failpointLazycr(t)
	p := start(t, buildC(t, "treetcp"), "worker")
	var rep struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &rep)
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", rep.Port), reportTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	if _, err := c.Write(b[:]); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	readEcho(t, c, 1)
	kids := descendants(t, p.pid)
	if len(kids) != 1 {
		t.Fatalf("the server has descendants %v, want one child", kids)
	}
	t.Cleanup(func() { unix.Kill(kids[0], unix.SIGKILL) })
	dir := dumpKill(t, p)
	waitGone(t, kids[0])
	lock := show(t, dir).fds(t, kids[0]).GetTcpLock()
	if lock == "" || !heldLockExists(t, lock) {
		t.Fatalf("the child's held lock %q is not in place after the dump", lock)
	}
	_, errOut, code := runFailpoint(t, lazycr, "restore.resume", "", "restore", "-D", dir)
	if code != 1 || !strings.Contains(errOut, "injected") {
		t.Fatalf("restore with failpoint restore.resume: exit %d, want 1; stderr:\n%s", code, errOut)
	}
	waitGone(t, p.pid)
	waitGone(t, kids[0])
	if heldLockExists(t, lock) {
		t.Errorf("the child's held lock %s is still there after the failed restore", lock)
	}
}
