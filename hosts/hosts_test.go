package hosts_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/hosts"
	"github.com/lazycr/lazycr/udpp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces")
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func newNet(t *testing.T, opts hosts.Options, names ...string) (*hosts.Net, []*hosts.Host) {
	t.Helper()
	n, err := hosts.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	var hs []*hosts.Host
	for _, name := range names {
		h, err := n.AddHost(name)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	return n, hs
}

// pingOnce sends one datagram from b to a listening socket in a and one back.
func pingOnce(t *testing.T, a, b *hosts.Host) {
	t.Helper()
	var srv, cli *net.UDPConn
	if err := a.Do(func() (err error) {
		srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: a.Addr.AsSlice()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := b.Do(func() (err error) {
		cli, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if got := cli.LocalAddr().(*net.UDPAddr).AddrPort().Addr(); got != b.Addr {
		t.Fatalf("client source address %s, want %s", got, b.Addr)
	}
	if _, err := cli.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	n, from, err := srv.ReadFromUDPAddrPort(buf)
	if err != nil {
		t.Fatalf("receive in %s: %v", a.Name, err)
	}
	if string(buf[:n]) != "ping" || from.Addr().Unmap() != b.Addr {
		t.Fatalf("got %q from %s, want ping from %s", buf[:n], from, b.Addr)
	}
	if _, err := srv.WriteToUDPAddrPort([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	cli.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err = cli.Read(buf); err != nil || string(buf[:n]) != "pong" {
		t.Fatalf("reply: %q, %v", buf[:n], err)
	}
}

func TestUDPBetweenHosts(t *testing.T) {
	requireRoot(t)
	n, hs := newNet(t, hosts.Options{}, "a", "b")
	a, b := hs[0], hs[1]
	if !n.Subnet.Contains(a.Addr) || !n.Subnet.Contains(b.Addr) || a.Addr == b.Addr {
		t.Fatalf("addresses %s %s in %s", a.Addr, b.Addr, n.Subnet)
	}
	if a.NsName != n.Prefix+"-"+n.RunID+"-a" || a.Iface != "eth0" || a.Peer != "v-a" {
		t.Fatalf("host %+v", a)
	}
	pingOnce(t, a, b)
	pingOnce(t, b, a)
}

func TestAddHostErrors(t *testing.T) {
	requireRoot(t)
	n, _ := newNet(t, hosts.Options{Subnet: netip.MustParsePrefix("10.249.1.0/30")}, "a")
	for name, want := range map[string]error{
		"a": hosts.ErrExists, "": hosts.ErrBadName, "Bad": hosts.ErrBadName, "abcdefghijklmn": hosts.ErrBadName,
	} {
		if _, err := n.AddHost(name); !errors.Is(err, want) {
			t.Errorf("AddHost(%q) = %v, want %v", name, err, want)
		}
	}
	if _, err := n.AddHost("b"); err != nil { // .2: the last one in a /30
		t.Fatal(err)
	}
	if _, err := n.AddHost("c"); !errors.Is(err, hosts.ErrSubnetFull) {
		t.Fatalf("AddHost in full /30: %v", err)
	}
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestCommandInNetns(t *testing.T) {
	requireRoot(t)
	_, hs := newNet(t, hosts.Options{}, "a")
	a := hs[0]
	out, err := a.Command(context.Background(), "readlink", "/proc/self/ns/net").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(out)), fmt.Sprintf("net:[%d]", nsInode(t, a.NsPath())); got != want {
		t.Fatalf("command's netns %s, want %s", got, want)
	}
	out, err = a.Command(context.Background(), "cat", "/proc/self/net/dev").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("eth0:")) {
		t.Fatalf("no eth0 in the host's /proc/net/dev:\n%s", out)
	}
	// ExtraFiles reach the command at fd 3; the command's signal mask is
	// empty (the re-executed Go runtime blocks nothing at execve).
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := a.Command(context.Background(), "sh", "-c", "grep SigBlk /proc/self/status >&3")
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Run()
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "SigBlk:\t0000000000000000\n" {
		t.Fatalf("fd 3 got %q, %v", got, err)
	}
	// A missing command fails at Start, as with exec.Command.
	if err := a.Command(context.Background(), "no-such-command-lzcr").Run(); !errors.Is(err, exec.ErrNotFound) {
		t.Fatalf("missing command: %v", err)
	}
	// Cancelling the context kills the command itself (same PID).
	ctx, cancel := context.WithCancel(context.Background())
	cmd = a.Command(ctx, "sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sleep to exec", 10*time.Second, func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		return string(b) == "sleep\n"
	})
	cancel()
	if err := cmd.Wait(); err == nil {
		t.Fatal("sleep was not killed")
	}
}

func TestCommandPIDNS(t *testing.T) {
	requireRoot(t)
	_, hs := newNet(t, hosts.Options{PIDNS: true}, "a")
	a := hs[0]
	out, err := a.Command(context.Background(), "sh", "-c", "echo $$; readlink /proc/self/ns/net; ls /proc | grep -c '^[0-9]'").Output()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(out))
	want := []string{"1", fmt.Sprintf("net:[%d]", nsInode(t, a.NsPath()))}
	if len(f) != 3 || f[0] != want[0] || f[1] != want[1] {
		t.Fatalf("got %q, want pid 1 and %s", out, want[1])
	}
	if k, _ := strconv.Atoi(f[2]); k > 3 {
		t.Fatalf("/proc shows %d processes, want only the new PID namespace's", k)
	}
	// The host's /proc was not touched.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", os.Getpid())); err != nil {
		t.Fatalf("our /proc: %v", err)
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// nsUsers lists tasks whose network namespace has inode ino.
func nsUsers(ino uint64) []string {
	var users []string
	tasks, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, p := range tasks {
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && st.Ino == ino {
			users = append(users, p)
		}
	}
	return users
}

func TestCloseCleansUp(t *testing.T) {
	requireRoot(t)
	fds := countFDs(t)
	n, err := hosts.New(hosts.Options{})
	if err != nil {
		t.Fatal(err)
	}
	paths := []string{filepath.Join(hosts.NetnsDir, n.BridgeNsName)}
	for _, name := range []string{"a", "b"} {
		h, err := n.AddHost(name)
		if err != nil {
			n.Close()
			t.Fatal(err)
		}
		paths = append(paths, h.NsPath())
	}
	hs := n.Hosts()
	pingOnce(t, hs[0], hs[1])
	var inodes []uint64
	for _, p := range paths {
		inodes = append(inodes, nsInode(t, p))
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.AddHost("c"); !errors.Is(err, hosts.ErrClosed) {
		t.Fatalf("AddHost after Close: %v", err)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	// The threads Do used die asynchronously after their goroutine ends.
	for _, ino := range inodes {
		waitFor(t, fmt.Sprintf("no task in netns %d", ino), 10*time.Second, func() bool { return len(nsUsers(ino)) == 0 })
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == "v-a" || i.Name == "v-b" || i.Name == hosts.BridgeName {
			t.Errorf("interface %s in the root namespace", i.Name)
		}
	}
	if got := countFDs(t); got != fds {
		t.Errorf("%d fds open, want %d", got, fds)
	}
}

func TestParallelNets(t *testing.T) {
	requireRoot(t)
	// Same subnet and host names on purpose: nothing is shared.
	subnet := netip.MustParsePrefix("10.248.7.0/24")
	var wg sync.WaitGroup
	nets := make([][]*hosts.Host, 2)
	errs := make([]error, 2)
	for i := range nets {
		wg.Go(func() {
			n, err := hosts.New(hosts.Options{Subnet: subnet})
			if err != nil {
				errs[i] = err
				return
			}
			t.Cleanup(func() { n.Close() })
			for _, name := range []string{"a", "b"} {
				h, err := n.AddHost(name)
				if err != nil {
					errs[i] = err
					return
				}
				nets[i] = append(nets[i], h)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if nets[0][0].NsName == nets[1][0].NsName {
		t.Fatalf("both nets named %s", nets[0][0].NsName)
	}
	for _, hs := range nets {
		pingOnce(t, hs[0], hs[1])
	}
}

func TestHandle(t *testing.T) {
	requireRoot(t)
	_, hs := newNet(t, hosts.Options{}, "a")
	h, err := hs[0].Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().OperState.String() == "down" {
		t.Fatalf("eth0 is down")
	}
}

// syncBuf is a goroutine-safe output buffer.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestUdppAcrossHosts runs the Go ping-pong library with the server in host
// a and the client in host b.
func TestUdppAcrossHosts(t *testing.T) {
	requireRoot(t)
	_, hs := newNet(t, hosts.Options{}, "a", "b")
	a, b := hs[0], hs[1]
	var srv *udpp.Server
	if err := a.Do(func() (err error) { srv, err = udpp.Listen(0); return err }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var sout syncBuf
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, &sout) }()
	defer func() {
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("server: %v", err)
		}
	}()
	var cli *udpp.Client
	if err := b.Do(func() (err error) {
		cli, err = udpp.NewClient(udpp.ClientConfig{
			Server: a.Addr.String(), Port: int(srv.Addr().Port()),
			Interval: 5 * time.Millisecond, Count: 3, Drain: 10 * time.Second,
		})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if la := cli.LocalAddr(); la != netip.AddrPortFrom(b.Addr, udpp.DefaultLocalPort) {
		t.Fatalf("client local address %s, want %s:%d", la, b.Addr, udpp.DefaultLocalPort)
	}
	var cout syncBuf
	st, err := cli.Run(context.Background(), &cout)
	if err != nil {
		t.Fatal(err)
	}
	if want := (udpp.Stats{Sent: 3, Received: 3}); st != want {
		t.Fatalf("stats %+v, want %+v\n%s", st, want, cout.String())
	}
	want := fmt.Sprintf("Received ping packet from %s:%d\nData: This is ping packet 1\nSending pong packet 1\n", b.Addr, udpp.DefaultLocalPort)
	if !strings.HasPrefix(sout.String(), want) {
		t.Fatalf("server output:\n%s\nwant it to start with:\n%s", sout.String(), want)
	}
	if !strings.HasPrefix(cout.String(), fmt.Sprintf("pong 1 from %s:%d\n", a.Addr, srv.Addr().Port())) {
		t.Fatalf("client output:\n%s", cout.String())
	}
}

// TestUdppCAcrossHosts runs the C build with Command: server in a, client
// in b.
func TestUdppCAcrossHosts(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found: C build of udpp not tested")
	}
	bin := filepath.Join(t.TempDir(), "udpp")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "../udpp/udpp.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	_, hs := newNet(t, hosts.Options{}, "a", "b")
	a, b := hs[0], hs[1]
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := a.Command(ctx, bin, "server", "7000")
	var sout bytes.Buffer
	srv.Stdout = &sout
	stderr, err := srv.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	if !sc.Scan() || sc.Text() != "udpp server listening on 0.0.0.0:7000" {
		srv.Process.Kill()
		srv.Wait()
		t.Fatalf("server said %q", sc.Text())
	}
	cout, err := b.Command(ctx, bin, "client", a.Addr.String(), "7000", "--interval", "5ms", "--count", "3").Output()
	srv.Process.Signal(syscall.SIGTERM)
	if werr := srv.Wait(); werr != nil {
		t.Errorf("server: %v", werr)
	}
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if !strings.HasSuffix(string(cout), "stats sent=3 received=3 lost=0 duplicated=0 reordered=0\n") {
		t.Fatalf("client output:\n%s", cout)
	}
	want := fmt.Sprintf("Received ping packet from %s:%d\n", b.Addr, udpp.DefaultLocalPort)
	if !strings.HasPrefix(sout.String(), want) || strings.Count(sout.String(), "\n") != 9 {
		t.Fatalf("server output:\n%s", sout.String())
	}
}
