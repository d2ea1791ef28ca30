package integration

import (
	"bufio"
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
