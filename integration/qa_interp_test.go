package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/hosts"
)

// QA: interpreters holding state, as a user would run them. Each script
// (testdata/progs/qa_state.py, .pl, .js, qa_loop.sh) checks its own state
// (dicts, maps, buffers with their digests, thread-locals) and only then
// writes "tick ok N"; a failed check makes it exit 1.

// qaInterp is one interpreter workload.
type qaInterp struct {
	name   string
	interp string   // looked up in $PATH; the test skips without it
	script string   // under testdata/progs
	keys   []string // tick keys that must keep counting
}

var qaInterps = []qaInterp{
	{"python", "python3", "qa_state.py", []string{"ok", "t0", "t3", "t7"}},
	{"perl", "perl", "qa_state.pl", []string{"ok"}},
	{"bash", "bash", "qa_loop.sh", []string{"ok"}},
	{"node", "node", "qa_state.js", []string{"ok"}},
}

// qaStartInterp starts w (inside h if not nil) with extra arguments and
// waits for its report and some progress.
func qaStartInterp(t *testing.T, w qaInterp, h *hosts.Host, extra ...string) (*proc, int) {
	t.Helper()
	needRoot(t)
	bin, err := exec.LookPath(w.interp)
	if err != nil {
		t.Skipf("%s not installed: %v", w.interp, err)
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", w.script))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{script}
	if w.name == "bash" {
		fifo := filepath.Join(t.TempDir(), "pace")
		if err := unix.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, fifo)
	}
	args = append(args, extra...)
	var cmd *exec.Cmd
	if h != nil {
		cmd = h.Command(t.Context(), bin, args...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	p := startCmd(t, cmd)
	var r struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &r)
	if r.Pid != p.pid {
		// An interpreter launcher (pyenv shim) must exec, not fork.
		t.Fatalf("%s reports pid %d, started as %d", w.name, r.Pid, p.pid)
	}
	requireProgress(t, p, w.keys...)
	return p, r.Port
}

// TestQAInterpretersPlain: dump (killing) and restore -D of a Python,
// Perl, bash and Node process; each keeps counting with its state intact,
// without a skipped or repeated tick.
func TestQAInterpretersPlain(t *testing.T) {
	t.Parallel()
	for _, w := range qaInterps {
		t.Run(w.name, func(t *testing.T) {
			p, _ := qaStartInterp(t, w, nil)
			rp := restoreFrom(t, p, dumpKill(t, p))
			requireProgress(t, rp, w.keys...)
			checkSequence(t, rp, "ok")
		})
	}
}

// TestQAInterpretersLeaveRunning: two checkpoints back to back do not
// disturb the interpreter.
func TestQAInterpretersLeaveRunning(t *testing.T) {
	t.Parallel()
	for _, w := range qaInterps {
		t.Run(w.name, func(t *testing.T) {
			p, _ := qaStartInterp(t, w, nil)
			dumpLeaveRunning(t, p.pid)
			dumpLeaveRunning(t, p.pid)
			requireProgress(t, p, w.keys...)
			checkSequence(t, p, "ok")
		})
	}
}

// TestQAServerLazyTwoHosts: a Python ThreadingHTTPServer and a Node HTTP
// server, each answered a request in host b, migrate post-copy to host c
// and answer there with their state intact.
func TestQAServerLazyTwoHosts(t *testing.T) {
	t.Parallel()
	for _, w := range []qaInterp{qaInterps[0], qaInterps[3]} {
		t.Run(w.name, func(t *testing.T) {
			env := lazyTwoHosts(t)
			p, port := qaStartInterp(t, w, env.src, "serve")
			if got := qaHTTPGet(t, env.src, port); got != p.pid {
				t.Fatalf("server in host b answers as pid %d, want %d", got, p.pid)
			}
			// The request's connection must be gone from the server's fds
			// before the dump (an open TCP connection is refused).
			qaWaitSockets(t, p.pid, 1)
			m := migrateLazy(t, env, p, nil, nil)
			requireProgress(t, m.restored, w.keys...)
			// Node caches process.pid at start-up, so under --new-pid it
			// still says the original pid; Python asks the kernel.
			want := m.restored.pid
			if w.name == "node" {
				want = p.pid
			}
			if got := qaHTTPGet(t, env.dst, port); got != want {
				t.Fatalf("server in host c answers as pid %d, want %d", got, want)
			}
			requireProgress(t, m.restored, w.keys...)
			checkSequence(t, m.restored, "ok")
		})
	}
}

// qaHTTPGet asks the server at 127.0.0.1:port inside h (here if nil) for its verdict and
// returns the pid it answers with; a failed verdict fails the test.
func qaHTTPGet(t *testing.T, h *hosts.Host, port int) int {
	t.Helper()
	var conn net.Conn
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	dial := func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, reportTimeout)
		return err
	}
	if h == nil {
		if err := dial(); err != nil {
			t.Fatalf("connect to %s: %v", addr, err)
		}
	} else if err := h.Do(dial); err != nil {
		t.Fatalf("connect to %s in %s: %v", addr, h.NsName, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(lazycrTimeout))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: qa\r\n\r\n"); err != nil {
		t.Fatalf("send request to %s: %v", addr, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response from %s: %v", addr, err)
	}
	defer resp.Body.Close()
	var v struct {
		OK  bool    `json:"ok"`
		Why *string `json:"why"`
		Pid int     `json:"pid"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("decode response from %s: %v", addr, err)
	}
	if !v.OK {
		why := "(no reason given)"
		if v.Why != nil {
			why = *v.Why
		}
		t.Fatalf("server pid %d says its state is wrong: %s", v.Pid, why)
	}
	return v.Pid
}

// qaWaitSockets waits until pid holds exactly n socket fds.
func qaWaitSockets(t *testing.T, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(reportTimeout)
	for {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, e := range ents {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d holds %d sockets after %v, want %d", pid, got, reportTimeout, n)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// TestQAGoHTTPServer: a Go net/http server keeps serving with its state
// after dump/restore. GODEBUG=multipathtcp=0: since Go 1.24 listeners are
// MPTCP, which dump refuses (qa-findings F11).
func TestQAGoHTTPServer(t *testing.T) {
	t.Parallel()
	bin := buildGo(t, "qa_httpd")
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "GODEBUG=multipathtcp=0")
	p := startCmd(t, cmd)
	var r struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "ok")
	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "ok")
	if got := qaHTTPGet(t, nil, r.Port); got != rp.pid {
		t.Fatalf("restored server answers as pid %d, want %d", got, rp.pid)
	}
	requireProgress(t, rp, "ok")
	checkSequence(t, rp, "ok")
}
