package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/hosts"
	"golang.org/x/sys/unix"
)

// Helpers of the post-copy migration tests: lazycr dump --lazy (the source)
// and lazycr restore --lazy-from (the target) run as long-lived children
// whose output is watched line by line, optionally inside network-namespace
// hosts, optionally through a TCP proxy that cuts connections on cue.

// lazyRun is a running lazycr whose stdout and stderr are collected line by
// line.
type lazyRun struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed once lazycr exited and its output is read
	code int           // exit code, valid after done (-1: killed by a signal)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a line arrives
	stdout  []string
	stderr  []string
}

// startLazyRun starts cmd (a lazycr command line, possibly wrapped by
// hosts.Host.Command) and collects its output. It is killed and reaped when
// t ends.
func startLazyRun(t testing.TB, name string, cmd *exec.Cmd) *lazyRun {
	t.Helper()
	r := &lazyRun{name: name, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	outR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	var readers sync.WaitGroup
	collect := func(rd io.Reader, dst *[]string) {
		defer readers.Done()
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			r.mu.Lock()
			*dst = append(*dst, sc.Text())
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
	}
	readers.Add(2)
	go collect(outR, &r.stdout)
	go collect(errR, &r.stderr)
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		err := cmd.Wait()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			r.code = ee.ExitCode()
		default:
			r.code = -2
		}
		close(r.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-r.done
	})
	return r
}

// lazyTestToken is the page-server secret of every test migration, hex.
var lazyTestToken = func() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}()

// lazyCmd is the command line of the lazycr binary, inside h if h is not
// nil.
func lazyCmd(t testing.TB, h *hosts.Host, args ...string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root (ptrace, /proc/PID/mem, pidfd_getfd)")
	}
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	var cmd *exec.Cmd
	if h != nil {
		cmd = h.Command(context.Background(), lazycrPath, args...)
	} else {
		cmd = exec.Command(lazycrPath, args...)
	}
	// dump --lazy refuses to serve without a secret (or --insecure): both
	// halves share this one, as a user would after copying the printed
	// restore command.
	cmd.Env = append(os.Environ(), "LAZYCR_TOKEN="+lazyTestToken)
	return cmd
}

func (r *lazyRun) output() (stdout, stderr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.stdout, "\n"), strings.Join(r.stderr, "\n")
}

func (r *lazyRun) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// waitLine waits until match accepts a line of stdout (stderr if errSide)
// and returns it; it fails t if lazycr exits first or the deadline passes.
func (r *lazyRun) waitLine(t testing.TB, errSide bool, what string, timeout time.Duration, match func(string) bool) string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen := 0
	for {
		r.mu.Lock()
		lines := r.stdout
		if errSide {
			lines = r.stderr
		}
		for ; seen < len(lines); seen++ {
			if match(lines[seen]) {
				r.mu.Unlock()
				return lines[seen]
			}
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-r.done:
			// The collectors are finished: one last look, then give up.
			r.mu.Lock()
			lines := r.stdout
			if errSide {
				lines = r.stderr
			}
			r.mu.Unlock()
			for ; seen < len(lines); seen++ {
				if match(lines[seen]) {
					return lines[seen]
				}
			}
			o, e := r.output()
			t.Fatalf("%s exited %d before %s\nstdout:\n%s\nstderr:\n%s", r.name, r.code, what, o, e)
		case <-deadline.C:
			o, e := r.output()
			t.Fatalf("%s: no %s within %v\nstdout:\n%s\nstderr:\n%s", r.name, what, timeout, o, e)
		}
	}
}

// wait waits for lazycr to exit and returns its exit code.
func (r *lazyRun) wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-r.done:
		return r.code
	case <-time.After(timeout):
		o, e := r.output()
		t.Fatalf("%s still runs after %v\nstdout:\n%s\nstderr:\n%s", r.name, timeout, o, e)
		return 0
	}
}

// requireExit waits for lazycr to exit with code want.
func (r *lazyRun) requireExit(t testing.TB, want int) {
	t.Helper()
	if code := r.wait(t, lazycrTimeout); code != want {
		o, e := r.output()
		t.Fatalf("%s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.name, code, want, o, e)
	}
}

// maxRSSKiB is lazycr's peak resident set (getrusage ru_maxrss), after exit.
func (r *lazyRun) maxRSSKiB() int64 {
	<-r.done
	if ru, ok := r.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		return ru.Maxrss
	}
	return 0
}

// lazySource is a running `lazycr dump --lazy`.
type lazySource struct {
	*lazyRun
	addr string // host:port it listens on
}

// startLazySource freezes pid with `lazycr dump --lazy` listening on an
// ephemeral port of listenHost (inside h if not nil) and waits until it
// serves. Its log is JSON, so the listening line is parsed, not guessed.
func startLazySource(t testing.TB, h *hosts.Host, pid int, listenHost string, extra ...string) *lazySource {
	t.Helper()
	args := append([]string{"--log-format", "json", "dump", "--lazy", "--pid", strconv.Itoa(pid),
		"--address", listenHost, "--port", "0"}, extra...)
	r := startLazyRun(t, "source lazycr "+strings.Join(args, " "), lazyCmd(t, h, args...))
	var listen string
	r.waitLine(t, true, `the "frozen; serving" log line`, lazycrTimeout, func(l string) bool {
		var m struct {
			Message string `json:"message"`
			Listen  string `json:"listen"`
			State   string `json:"state"`
		}
		if json.Unmarshal([]byte(l), &m) != nil || m.Message != "frozen; serving" {
			return false
		}
		listen = m.Listen
		if strings.HasPrefix(m.State, "/run/lazycr/") {
			// The session state a kept-stopped original leaves behind.
			t.Cleanup(func() { os.RemoveAll(m.State) })
		}
		return true
	})
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("source listens on %q: %v", listen, err)
	}
	return &lazySource{lazyRun: r, addr: net.JoinHostPort(listenHost, port)}
}

// startLazyTarget runs `lazycr restore --lazy-from from --new-pid extra...`
// (inside h if not nil).
func startLazyTarget(t testing.TB, h *hosts.Host, from string, extra ...string) *lazyRun {
	t.Helper()
	args := append([]string{"restore", "--lazy-from", from, "--new-pid"}, extra...)
	return startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, h, args...))
}

// lazyResumedPID waits for the target to print the pid of the resumed process.
func lazyResumedPID(t testing.TB, r *lazyRun) int {
	t.Helper()
	l := r.waitLine(t, false, "the resumed pid on stdout", lazycrTimeout, func(string) bool { return true })
	pid, err := strconv.Atoi(strings.TrimSpace(l))
	if err != nil || pid <= 0 {
		t.Fatalf("%s: stdout line %q is not a pid", r.name, l)
	}
	return pid
}

// lazyWaitTick is waitTick with a longer deadline, for programs whose
// rounds go over a GiB of memory on a busy machine.
func lazyWaitTick(t *testing.T, p *proc, key string, n uint64) {
	t.Helper()
	deadline := time.Now().Add(lazycrTimeout)
	for progress(t, p)[key] < n {
		if p.exited() && progress(t, p)[key] < n { // it may tick its last and exit
			t.Fatalf("pid %d exited (%v); stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: tick %s does not reach %d within %v (state %s)", p.pid, key, n, lazycrTimeout, procState(p.pid))
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

// lazyEnv says where the source and target run: nil hosts mean this
// network namespace over loopback.
type lazyEnv struct {
	src, dst *hosts.Host
}

func (e lazyEnv) listenHost() string {
	if e.src != nil {
		return e.src.Addr.String()
	}
	return "127.0.0.1"
}

// startProg starts bin in the source host (or here).
func (e lazyEnv) startProg(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	if e.src == nil {
		return start(t, bin, args...)
	}
	return startCmd(t, e.src.Command(context.Background(), bin, args...))
}

// lazyTwoHosts makes hosts b (source) and c (target) on one bridge.
func lazyTwoHosts(t *testing.T) lazyEnv {
	t.Helper()
	needRoot(t)
	n, err := hosts.New(hosts.Options{Prefix: "lzit"})
	if err != nil {
		t.Fatalf("make test network: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("tear down test network: %v", err)
		}
	})
	b, err := n.AddHost("b")
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.AddHost("c")
	if err != nil {
		t.Fatal(err)
	}
	return lazyEnv{src: b, dst: c}
}

// lazyMigration is a finished post-copy migration.
type lazyMigration struct {
	restored *proc
	source   *lazySource
	target   *lazyRun
}

// migrateLazy moves orig with dump --lazy / restore --lazy-from and waits
// until both lazycr exited 0 and orig is gone. The returned process's output
// continues orig's (the same files; ticks seen so far count as seen).
func migrateLazy(t *testing.T, env lazyEnv, orig *proc, srcExtra, dstExtra []string) *lazyMigration {
	t.Helper()
	progress(t, orig) // consume every tick orig wrote before it was frozen
	src := startLazySource(t, env.src, orig.pid, env.listenHost(), srcExtra...)
	dst := startLazyTarget(t, env.dst, src.addr, dstExtra...)
	p := adopt(t, lazyResumedPID(t, dst))
	p.continueOutput(orig, true)
	t.Logf("pid %d resumed as pid %d", orig.pid, p.pid)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, orig)
	m := &lazyMigration{restored: p, source: src, target: dst}
	o, _ := src.output()
	t.Logf("source: %s", o)
	_, e := dst.output()
	t.Logf("target summary:\n%s", e)
	return m
}

// migrateLazyPIDNS moves orig, the init of its own PID namespace, with
// dump --lazy / restore --lazy-from --pidns (global: lazycr flags before
// "restore") and waits until both lazycr exited 0 and orig and every
// process it had below it are gone. The restored init is killed when t
// ends (its namespace with it); its output continues orig's.
func migrateLazyPIDNS(t *testing.T, env lazyEnv, orig *proc, global ...string) (*proc, *lazyRun) {
	t.Helper()
	below := descendants(t, orig.pid)
	progress(t, orig) // consume every tick orig wrote before it was frozen
	src := startLazySource(t, env.src, orig.pid, env.listenHost())
	args := append(slices.Clip(global), "restore", "--lazy-from", src.addr, "--pidns")
	dst := startLazyRun(t, "target lazycr "+strings.Join(args, " "), lazyCmd(t, env.dst, args...))
	p := adopt(t, lazyResumedPID(t, dst))
	t.Cleanup(func() { unix.Kill(p.pid, unix.SIGKILL) })
	p.continueOutput(orig, true)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, orig)
	for _, pid := range below {
		waitGone(t, pid)
	}
	return p, dst
}

// requireLazySourceGone checks that the migrated original was killed: if it
// is our child its end is seen through Wait, and its pid must not be a live
// process (gone, or a zombie not yet reaped).
func requireLazySourceGone(t *testing.T, orig *proc) {
	t.Helper()
	select {
	case <-orig.done:
	case <-time.After(goneTimeout):
		t.Fatalf("migrated original pid %d still exists (state %s)", orig.pid, procState(orig.pid))
	}
	var ee *exec.ExitError
	if orig.cmd == nil {
		// Adopted (a restored process migrated again): seen through a pidfd,
		// its exit status belongs to its parent.
	} else if !errors.As(orig.waitErr, &ee) || ee.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("migrated original pid %d ended with %v, want killed by SIGKILL", orig.pid, orig.waitErr)
	}
	if s := procState(orig.pid); s != "Z" && !strings.Contains(s, "no such file") {
		t.Errorf("pid %d of the migrated original is in state %q, want gone", orig.pid, s)
	}
}

// lazySummary is what the target prints on stderr when it is done.
type lazySummary struct {
	freezeToResume time.Duration
	p50, p90, p99  time.Duration
	max            time.Duration
	bytesCopied    int64
}

var (
	lazyFreezeRE  = regexp.MustCompile(`(?m)^freeze to resume\s+(\S+)$`)
	lazyLatencyRE = regexp.MustCompile(`(?m)^latency(?: p50 (\S+) p90 (\S+) p99 (\S+) max (\S+)|: no faults)$`)
	lazyCopiedRE  = regexp.MustCompile(`(?m); (\d+) bytes copied;`)
)

func parseLazySummary(t testing.TB, stderr string) lazySummary {
	t.Helper()
	var s lazySummary
	dur := func(v string) time.Duration {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("target summary: %q is not a duration: %v\n%s", v, err, stderr)
		}
		return d
	}
	m := lazyFreezeRE.FindStringSubmatch(stderr)
	l := lazyLatencyRE.FindStringSubmatch(stderr)
	c := lazyCopiedRE.FindStringSubmatch(stderr)
	if m == nil || l == nil || c == nil {
		t.Fatalf("target stderr lacks the summary (freeze to resume, latency, bytes copied):\n%s", stderr)
	}
	s.freezeToResume = dur(m[1])
	if l[1] != "" { // else "latency: no faults": all zero
		s.p50, s.p90, s.p99, s.max = dur(l[1]), dur(l[2]), dur(l[3]), dur(l[4])
	}
	s.bytesCopied, _ = strconv.ParseInt(c[1], 10, 64)
	return s
}

// lazyNetnsOf is the inode of pid's network namespace.
func lazyNetnsOf(t *testing.T, pid int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatalf("network namespace of pid %d: %v", pid, err)
	}
	return l
}

// lazyHostNetns is the "net:[inode]" name of h's namespace.
func lazyHostNetns(t *testing.T, h *hosts.Host) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(h.NsPath(), &st); err != nil {
		t.Fatalf("stat %s: %v", h.NsPath(), err)
	}
	return fmt.Sprintf("net:[%d]", st.Ino)
}

// lazyProxy is a TCP forwarder between the target and the source that can cut
// a connection after a given number of bytes from the source.
type lazyProxy struct {
	ln       net.Listener
	upstream string
	// cutAt[n] (n counts accepted connections from 1): after forwarding
	// that many bytes from the source, call beforeCut(n) and close both
	// sides. refuseFrom > 0 closes connection n ≥ refuseFrom at once.
	cutAt      map[int]int64
	beforeCut  func(n int)
	refuseFrom int
	// cutTotal, if not zero, cuts every connection once that many bytes
	// from the source went through all of them together (beforeCut(n)
	// is called first, n the connection that crossed it): which
	// connection carries the pages (the push on the session's, the
	// answers to faults on the replies') depends on the machine's load.
	cutTotal int64
	// cutOnClientFrame, if not zero, is a frame type (pageserver.Type) the
	// target must not get through: the first such frame is dropped and
	// both sides of its connection are reset.
	cutOnClientFrame uint8
	// rate, if not zero, caps what the source sends to that many bytes a
	// second (a slow link: the lazy phase lasts).
	rate int64

	mu       sync.Mutex
	accepted int
	cut      int
	total    int64 // bytes from the source, all connections (cutTotal)
	conns    []net.Conn
	wg       sync.WaitGroup
}

// startLazyProxy listens on 127.0.0.1 and forwards to upstream; configure it
// through the fields before the first connection arrives (set them in the
// literal passed as p).
func startLazyProxy(t testing.TB, p *lazyProxy) *lazyProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.ln = ln
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *lazyProxy) addr() string { return p.ln.Addr().String() }

func (p *lazyProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// counts reports connections accepted and cut so far.
func (p *lazyProxy) counts() (accepted, cut int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.cut
}

func (p *lazyProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepted++
		n := p.accepted
		p.conns = append(p.conns, c)
		p.mu.Unlock()
		if p.refuseFrom > 0 && n >= p.refuseFrom {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.forward(n, c)
	}
}

func (p *lazyProxy) forward(n int, c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.conns = append(p.conns, up)
	p.mu.Unlock()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		if p.cutOnClientFrame != 0 {
			if p.copyFrames(up, c) {
				p.mu.Lock()
				p.cut++
				p.mu.Unlock()
				c.(*net.TCPConn).SetLinger(0)
				up.(*net.TCPConn).SetLinger(0)
				c.Close()
				up.Close()
				return
			}
		} else {
			io.Copy(up, c)
		}
		up.(*net.TCPConn).CloseWrite()
	}()
	limit, cut := p.cutAt[n]
	if !cut && p.cutTotal > 0 {
		if p.copyCounted(n, c, up) {
			p.resetAll()
		}
		<-upDone
		return
	}
	if !cut {
		if p.rate > 0 {
			copyRate(c, up, p.rate)
		} else {
			io.Copy(c, up)
		}
		c.(*net.TCPConn).CloseWrite()
		<-upDone // the target closes its side too
		return
	}
	defer func() { <-upDone }() // runs after the closes below
	if _, err := io.CopyN(c, up, limit); err != nil {
		c.Close()
		up.Close()
		return
	}
	if p.beforeCut != nil {
		p.beforeCut(n)
	}
	p.mu.Lock()
	p.cut++
	p.mu.Unlock()
	// A reset is what a dead peer looks like.
	c.(*net.TCPConn).SetLinger(0)
	up.(*net.TCPConn).SetLinger(0)
	c.Close()
	up.Close()
}

// copyCounted copies what the source sends on connection n to the target
// until the source closes (false) or the bytes of all connections reach
// cutTotal (true: beforeCut has run, nothing past the limit forwarded).
// Once the cut happened, connections forward whole.
func (p *lazyProxy) copyCounted(n int, dst io.Writer, src io.Reader) bool {
	buf := make([]byte, 64<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			p.mu.Lock()
			if p.total >= p.cutTotal {
				// Cut already (by another connection): a connection
				// made since is forwarded whole.
				p.mu.Unlock()
				if _, werr := dst.Write(buf[:k]); werr != nil {
					return false
				}
				if err != nil {
					return false
				}
				continue
			}
			room := p.cutTotal - p.total
			crossed := int64(k) >= room
			if crossed {
				k = int(room)
			}
			p.total += int64(k)
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return false
			}
			if crossed {
				if p.beforeCut != nil {
					p.beforeCut(n)
				}
				return true
			}
		}
		if err != nil {
			return false
		}
	}
}

// resetAll resets every connection of the proxy, as a dead peer would.
func (p *lazyProxy) resetAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut++
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
}

// copyRate copies src to dst at about rate bytes a second, 64 KiB at a time.
func copyRate(dst io.Writer, src io.Reader, rate int64) {
	buf := make([]byte, 64<<10)
	start, sent := time.Now(), int64(0)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
			if ahead := time.Duration(sent*int64(time.Second)/rate) - time.Since(start); ahead > 0 {
				time.Sleep(ahead) // pacing the link, not synchronisation
			}
		}
		if err != nil {
			return
		}
	}
}

// copyFrames forwards whole frames from the target to the source until the
// target closes (false) or sends a frame of type p.cutOnClientFrame, which is
// not forwarded (true). Frames: a 16-byte header, type at byte 3, payload
// length (u32, little-endian) at byte 4; see package pageserver.
func (p *lazyProxy) copyFrames(dst io.Writer, src io.Reader) bool {
	var hdr [16]byte
	for {
		if _, err := io.ReadFull(src, hdr[:]); err != nil {
			return false
		}
		if hdr[3] == p.cutOnClientFrame {
			return true
		}
		if _, err := dst.Write(hdr[:]); err != nil {
			return false
		}
		n := int64(binary.LittleEndian.Uint32(hdr[4:8]))
		if _, err := io.CopyN(dst, src, n); err != nil {
			return false
		}
	}
}
