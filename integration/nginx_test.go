package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazycr/lazycr/hosts"
	"golang.org/x/sys/unix"
)

// nginxSite is an nginx configuration in a temporary directory: master
// and 2 workers, in the foreground, serving blob (a few MiB of random
// bytes) on listen.
type nginxSite struct {
	dir  string
	conf string
	sum  [32]byte // of blob
}

func newNginxSite(t *testing.T, listen string) *nginxSite {
	t.Helper()
	needRoot(t)
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Skip("nginx not found (scripts/test.sh installs nginx-light)")
	}
	// The workers run as nobody: t.TempDir's parents are root's alone.
	dir, err := os.MkdirTemp("", "lazycr-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(dir, "blob"), blob, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
	access_log %[1]s/access.log;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	keepalive_timeout 600s;
	keepalive_requests 100000;
	server { listen %[2]s; root %[1]s; }
}
`, dir, listen)
	s := &nginxSite{dir: dir, conf: filepath.Join(dir, "nginx.conf"), sum: sha256.Sum256(blob)}
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *nginxSite) args() []string { return []string{"-c", s.conf, "-p", s.dir} }

func (s *nginxSite) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
	return string(b)
}

// httpGet sends one GET /blob on c (HTTP/1.1; close asks nginx to close
// the connection after the reply) and returns the body's checksum.
func httpGet(c net.Conn, r *bufio.Reader, close bool) ([32]byte, error) {
	req := "GET /blob HTTP/1.1\r\nHost: lazycr\r\n"
	if close {
		req += "Connection: close\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return [32]byte{}, fmt.Errorf("send GET: %w", err)
	}
	status, err := r.ReadString('\n')
	if err != nil {
		return [32]byte{}, fmt.Errorf("read status line: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		return [32]byte{}, fmt.Errorf("status %q", strings.TrimSpace(status))
	}
	n := -1
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return [32]byte{}, fmt.Errorf("read header: %w", err)
		}
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "content-length") {
			if n, err = strconv.Atoi(strings.TrimSpace(v)); err != nil {
				return [32]byte{}, fmt.Errorf("content-length %q", v)
			}
		}
	}
	if n < 0 {
		return [32]byte{}, fmt.Errorf("no content-length")
	}
	h := sha256.New()
	if _, err := io.CopyN(h, r, int64(n)); err != nil {
		return [32]byte{}, fmt.Errorf("read body: %w", err)
	}
	return [32]byte(h.Sum(nil)), nil
}

// fetchOnce GETs the blob on a connection of its own (dialed by dial) that
// nginx closes after the reply.
func fetchOnce(dial func() (net.Conn, error)) ([32]byte, error) {
	c, err := dial()
	if err != nil {
		return [32]byte{}, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(reportTimeout)); err != nil {
		return [32]byte{}, err
	}
	sum, err := httpGet(c, bufio.NewReader(c), true)
	if err == nil {
		// nginx closes first: read its FIN, so that no connection is left
		// half open in a worker when the test dumps.
		_, err = io.Copy(io.Discard, c)
	}
	return sum, err
}

// waitServing polls until nginx answers a GET with the blob.
func waitServing(t *testing.T, p *proc, s *nginxSite, dial func() (net.Conn, error)) {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	for {
		sum, err := fetchOnce(dial)
		if err == nil {
			if sum != s.sum {
				t.Fatalf("GET /blob: checksum %x, want %x", sum, s.sum)
			}
			return
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("nginx does not serve: %v (exited %v)\n%s\n%s", err, p.exited(), p.stderr(), s.errorLog())
		}
		time.Sleep(5 * time.Millisecond) // poll interval: nginx is starting
	}
}

// nginxWorkers waits until master has n children and returns them. They
// are killed when t ends (killing the master orphans them).
func nginxWorkers(t *testing.T, master, n int) []int {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	for {
		ws := children(master)
		if len(ws) == n {
			killAtEnd(t, ws)
			return ws
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx master pid %d has children %v, want %d", master, ws, n)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// killAtEnd SIGKILLs pids when t ends, through pidfds opened now: a pid
// reused by then is not touched.
func killAtEnd(t *testing.T, pids []int) {
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			continue // gone already
		}
		t.Cleanup(func() {
			unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
			unix.Close(fd)
		})
	}
}

// children lists pid's child processes (/proc/PID/task/*/children).
func children(pid int) []int {
	var out []int
	tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tid := range tids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, tid.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestNginxDumpRestore: nginx (master + 2 workers, their control channels
// socket pairs the master holds both ends of) serving a 3 MiB file is
// dumped with `dump -D` and restored with `restore -D`: the master keeps
// its pid, both workers are back as its children with their pids, the file
// comes back with its checksum, and a reload (SIGHUP: the master starts
// new workers and tells the old ones to quit over the channels) works.
func TestNginxDumpRestore(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	s := newNginxSite(t, addr)
	p := startWith(t, func(c *exec.Cmd) { c.SysProcAttr = &unix.SysProcAttr{Setsid: true} }, "nginx", s.args()...)
	dial := func() (net.Conn, error) { return net.DialTimeout("tcp", addr, reportTimeout) }
	waitServing(t, p, s, dial)
	workers := nginxWorkers(t, p.pid, 2)

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
	for i := range 4 {
		sum, err := fetchOnce(dial)
		if err != nil || sum != s.sum {
			t.Fatalf("GET %d after restore: %v, checksum %x, want %x\n%s", i, err, sum, s.sum, s.errorLog())
		}
	}

	// A reload goes over the restored channels: new workers, the old
	// ones gone, the file still served.
	if err := unix.Kill(r.pid, unix.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(reportTimeout)
	for {
		ws := children(r.pid)
		if len(ws) == 2 && !slices.Contains(ws, workers[0]) && !slices.Contains(ws, workers[1]) {
			killAtEnd(t, ws)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP the restored master has children %v (old workers %v)\n%s", ws, workers, s.errorLog())
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	if sum, err := fetchOnce(dial); err != nil || sum != s.sum {
		t.Fatalf("GET after reload: %v, checksum %x, want %x\n%s", err, sum, s.sum, s.errorLog())
	}
	if strings.Contains(s.errorLog(), "[alert]") || strings.Contains(s.errorLog(), "[emerg]") {
		t.Errorf("nginx's error log:\n%s", s.errorLog())
	}
}

// TestNginxLazyHosts: nginx, the init of its own PID namespace on host B,
// listening on B's service address, migrates lazily to host C (dump --lazy
// / restore --lazy-from --pidns, --net-policy takeover --net-iface): a client on host A
// gets the file with its checksum before and after from the same address;
// the master is pid 1 of its namespace again with its 2 workers.
func TestNginxLazyHosts(t *testing.T) {
	t.Parallel()
	needRoot(t)
	buildLazycr()
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	netw, err := hosts.New(hosts.Options{Prefix: "ngxl"})
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

	src := startLazySource(t, hB, p.pid, hB.Addr.String())
	// Only a listening socket: no peer to find the interface by, and the
	// hosts have no default route, so the takeover is told where to go.
	args := []string{"restore", "--lazy-from", src.addr, "--pidns", "--net-policy", "takeover", "--net-iface", hC.Iface}
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, hC, args...))
	rp := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(rp.pid, unix.SIGKILL) }) // the namespace's init: the workers go with it
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	for _, w := range workers {
		waitGone(t, w)
	}
	if ns := statusField(readStatusFile(t, rp.pid), "NSpid"); !strings.HasSuffix(ns, "\t1") && !strings.HasSuffix(ns, " 1") {
		t.Errorf("restored master: NSpid %q, want pid 1 in its namespace", ns)
	}
	if got := nginxWorkers(t, rp.pid, 2); len(got) != 2 {
		t.Errorf("restored workers %v", got)
	}
	if n := lazyNetnsOf(t, rp.pid); n != lazyHostNetns(t, hC) {
		t.Errorf("restored nginx is in network namespace %s, want host C's %s", n, lazyHostNetns(t, hC))
	}
	for i := range 3 {
		sum, err := fetchOnce(dial)
		if err != nil || sum != s.sum {
			t.Fatalf("GET %d from A after the migration: %v, checksum %x, want %x\n%s", i, err, sum, s.sum, s.errorLog())
		}
	}
}
