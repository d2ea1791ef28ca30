package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// QA2: a Python HTTP/1.1 server (testdata/progs/qa2_httpserve.py) with a
// keep-alive client in the middle of its second request survives dump and
// restore: the client finishes the request on the same connection and gets
// the whole body, byte for byte.

// qa2Blob is the body qa2_httpserve.py serves.
func qa2Blob() []byte {
	b := make([]byte, 300000)
	for i := range b {
		b[i] = byte(7*i + i>>8)
	}
	return b
}

// qa2Get reads one response to a GET /blob from r and checks it.
func qa2Get(t *testing.T, r *bufio.Reader, what string) {
	t.Helper()
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("%s: read response: %v", what, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: read body: %v", what, err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, qa2Blob()) {
		t.Fatalf("%s: status %d, %d bytes of body (want 200 and the %d-byte blob)", what, resp.StatusCode, len(body), len(qa2Blob()))
	}
}

// TestQA2PythonHTTPMidRequest: dump (which kills) and restore -D of the
// server while its handler thread waits for the rest of a request's
// headers.
func TestQA2PythonHTTPMidRequest(t *testing.T) {
	t.Parallel()
	p, conn := startPyServer(t, "qa2_httpserve.py")
	conn.SetDeadline(time.Now().Add(lazycrTimeout))
	br := bufio.NewReader(conn)
	// A first request on the keep-alive connection, answered in full.
	if _, err := fmt.Fprint(conn, "GET /blob HTTP/1.1\r\nHost: qa2\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	qa2Get(t, br, "first request")
	// Half of the second: the handler thread now waits for the rest.
	if _, err := fmt.Fprint(conn, "GET /blob HTTP/1.1\r\nHost: qa2\r\n"); err != nil {
		t.Fatal(err)
	}
	qaWaitSockets(t, p.pid, 2) // the listener and this connection
	rp := restoreFrom(t, p, dumpKill(t, p))
	if _, err := fmt.Fprint(conn, "X-Qa2: after the restore\r\n\r\n"); err != nil {
		t.Fatalf("finish the request after the restore: %v", err)
	}
	qa2Get(t, br, "second request (across the restore)")
	// The connection is still kept alive: a third request.
	if _, err := fmt.Fprint(conn, "GET /blob HTTP/1.1\r\nHost: qa2\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	qa2Get(t, br, "third request")
	requireRunning(t, rp.pid)
}

// startPyServer runs the Python program testdata/progs/NAME, which
// reports {"pid": N, "port": P} and listens on 127.0.0.1:P, and returns it
// with a connection to it (closed at the end of the test).
func startPyServer(t *testing.T, name string) (*proc, net.Conn) {
	t.Helper()
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skipf("python3 not installed: %v", err)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", name))
	if err != nil {
		t.Fatal(err)
	}
	p := startCmd(t, exec.Command(py, script))
	var r struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid {
		t.Fatalf("%s reports pid %d, started as %d", name, r.Pid, p.pid)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return p, conn
}
