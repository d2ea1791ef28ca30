package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/hosts"
	"github.com/lazycr/lazycr/netlock"
	"golang.org/x/sys/unix"
)

// netnsHost makes one host (a named network namespace under /run/netns)
// for a test.
func netnsHost(t *testing.T, prefix string) *hosts.Host {
	t.Helper()
	needRoot(t)
	n, err := hosts.New(hosts.Options{Prefix: prefix})
	if err != nil {
		t.Fatalf("make test network: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("tear down test network: %v", err)
		}
	})
	h, err := n.AddHost("a")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// netnsInode is the inode of pid's network namespace (0: the test's own,
// read on a thread of this goroutine's: the main thread may be one that
// hosts.Host.Do switched, parked when its goroutine ended).
func netnsInode(t *testing.T, pid int) uint64 {
	t.Helper()
	path := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	if pid == 0 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		path = "/proc/thread-self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// startInHost starts tcpecho as a server inside host h and connects the
// test to it from inside h; it returns the process and the test's end.
func startInHost(t *testing.T, h *hosts.Host) (*proc, net.Conn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p := startCmd(t, h.Command(ctx, buildC(t, "tcpecho"), "4", "server"))
	var r tcpReport
	waitReport(t, p, &r)
	var c net.Conn
	if err := h.Do(func() (err error) {
		c, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", r.Port))
		return err
	}); err != nil {
		t.Fatalf("connect to tcpecho in %s: %v", h.NsName, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(2 * lazycrTimeout)); err != nil {
		t.Fatal(err)
	}
	echo(t, c, "before")
	return p, c
}

// echo sends s on c and reads it back.
func echo(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
	buf := make([]byte, len(s))
	for got := 0; got < len(s); {
		n, err := c.Read(buf[got:])
		if err != nil {
			t.Fatalf("read the echo of %q: %v", s, err)
		}
		got += n
	}
	if string(buf) != s {
		t.Fatalf("echo of %q: %q", s, buf)
	}
}

// TestRestoreNetnsRefused (QA2 Q14): a process dumped in a named network
// namespace (ip netns) is refused by a restore run from another one while
// its namespace exists, naming it and the ip netns exec command, and
// nothing is left behind; the image records the name. Run there (ip netns
// exec), the restore puts it back in that namespace with its TCP
// connection, which goes on.
func TestRestoreNetnsRefused(t *testing.T) {
	t.Parallel()
	h := netnsHost(t, "rnsa")
	p, c := startInHost(t, h)
	ino := netnsInode(t, p.pid)
	if ino == netnsInode(t, 0) {
		t.Fatalf("tcpecho pid %d runs in the test's network namespace", p.pid)
	}
	dir := dumpKill(t, p)
	if ns := show(t, dir).process(t, p.pid).GetNamespaces(); ns.GetNet() != ino || ns.GetNetName() != h.NsName {
		t.Errorf("image namespaces %v; want net %d named %s", ns, ino, h.NsName)
	}
	if out, _, _ := runLazycr(t, "show", dir); !strings.Contains(out, fmt.Sprintf("net:[%d] (%s)", ino, h.NsName)) {
		t.Errorf("lazycr show does not name network namespace %s:\n%s", h.NsName, out)
	}

	_, errOut, code := runLazycr(t, "restore", "-D", dir)
	requireExit1(t, "restore from another network namespace", errOut, code,
		"network namespace "+h.NsName+` \(net:\[`+strconv.FormatUint(ino, 10)+`\]\)`, "ip netns exec "+h.NsName+" lazycr restore", "--netns-change")
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid)); err == nil {
		t.Fatalf("pid %d exists after a refused restore", p.pid)
	}
	ns, err := h.NetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if held, err := netlock.ListHeld(ns); err != nil || len(held) != 1 {
		t.Fatalf("held locks in %s after the refused restore: %v, %v; want the dump's", h.NsName, held, err)
	}

	cmd := h.Command(context.Background(), lazycrPath, "restore", "-D", dir)
	var out, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ip netns exec %s lazycr restore -D %s: %v\n%s", h.NsName, dir, err, stderr.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("lazycr restore: stdout %q is not a pid", out.String())
	}
	adopt(t, pid)
	if got := netnsInode(t, pid); got != ino {
		t.Errorf("restored pid %d is in net:[%d], want net:[%d] (%s)", pid, got, ino, h.NsName)
	}
	echo(t, c, "after the restore in "+h.NsName)
}

// TestRestoreNetnsChange (QA2 Q14): --netns-change restores a process of
// another network namespace in lazycr's, and releases the held network
// lock it left there: its TCP peer there is reset at its next segment
// instead of waiting forever behind the lock.
func TestRestoreNetnsChange(t *testing.T) {
	t.Parallel()
	h := netnsHost(t, "rnsb")
	p, c := startInHost(t, h)
	dir := dumpKill(t, p)
	ns, err := h.NetNS()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if held, err := netlock.ListHeld(ns); err != nil || len(held) != 1 {
		t.Fatalf("held locks in %s after the dump: %v, %v; want one", h.NsName, held, err)
	}
	out, errOut, code := runLazycr(t, "restore", "-D", dir, "--netns-change")
	if code != 0 {
		t.Fatalf("lazycr restore --netns-change: exit %d\n%s", code, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("lazycr restore: stdout %q is not a pid", out)
	}
	adopt(t, pid)
	// Its connection's peer is not in this namespace: the restored
	// socket's first segment may be reset and the process end at once,
	// which is as much a sign that it runs here.
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err == nil && st.Ino != netnsInode(t, 0) {
		t.Errorf("restored pid %d is in net:[%d], want lazycr's net:[%d]", pid, st.Ino, netnsInode(t, 0))
	}
	if held, err := netlock.ListHeld(ns); err != nil || slices.ContainsFunc(held, netlock.IsHeldName) {
		t.Errorf("held locks left in %s after restore --netns-change: %v, %v", h.NsName, held, err)
	}
	// The peer's next segment meets no socket in its namespace: a reset.
	if _, err := c.Write([]byte("x")); err == nil {
		_, err = c.Read(make([]byte, 1))
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the peer in %s after restore --netns-change: read %v, want a reset", h.NsName, err)
		}
	}
}
