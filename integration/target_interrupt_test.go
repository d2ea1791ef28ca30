package integration

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Interrupting the target after the resume: its copy is then the only one
// that runs, so a first SIGINT must not cost it its memory (it carries on
// and says so), and a second one aborts cleanly (the copy is killed, never
// left on poisoned or zero pages, and the source keeps the original).

// pausingProxy forwards TCP connections between the target and the source.
// On connection 1, after pauseAt bytes came from the source, it calls
// hook (which may block: nothing more is forwarded meanwhile), then goes on
// forwarding. Connections are made with listen and dial, so the proxy can
// sit in a network namespace.
type pausingProxy struct {
	ln      net.Listener
	dial    func() (net.Conn, error)
	pauseAt int64
	hook    func()

	mu       sync.Mutex
	accepted int
	conns    []net.Conn
	wg       sync.WaitGroup
}

func startPausingProxy(t testing.TB, ln net.Listener, dial func() (net.Conn, error), pauseAt int64, hook func()) *pausingProxy {
	t.Helper()
	p := &pausingProxy{ln: ln, dial: dial, pauseAt: pauseAt, hook: hook}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *pausingProxy) addr() string { return p.ln.Addr().String() }

func (p *pausingProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *pausingProxy) serve() {
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
		p.wg.Add(1)
		go p.forward(n, c)
	}
}

func (p *pausingProxy) forward(n int, c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	up, err := p.dial()
	if err != nil {
		return
	}
	defer up.Close()
	p.mu.Lock()
	p.conns = append(p.conns, up)
	p.mu.Unlock()
	go func() {
		io.Copy(up, c)
		up.Close()
	}()
	if n == 1 && p.pauseAt > 0 {
		if _, err := io.CopyN(c, up, p.pauseAt); err != nil {
			return
		}
		p.hook()
	}
	io.Copy(c, up)
}

// interruptMidFetch migrates a 64 MiB lazy_verify through a pausing proxy
// whose hook runs while about 8 MiB of pages have arrived: the target has
// resumed the process and most of its memory is still on the source.
func interruptMidFetch(t *testing.T, hook func(dst *lazyRun, pid int)) (orig *proc, src *lazySource, dst *lazyRun, cp *proc) {
	t.Helper()
	return interruptMidFetchWith(t, "60s", hook)
}

// interruptMidFetchWith is interruptMidFetch with the source's
// --reconnect-timeout.
func interruptMidFetchWith(t *testing.T, srcReconnect string, hook func(dst *lazyRun, pid int)) (orig *proc, src *lazySource, dst *lazyRun, cp *proc) {
	t.Helper()
	return lazyPausedAt(t, srcReconnect, 8<<20, hook)
}

// lazyPausedAt migrates a 64 MiB lazy_verify through a pausing proxy whose
// hook runs once pauseAt bytes came from the source (past the skeleton,
// about 100 KiB: the process has resumed) and the resumed pid was read.
func lazyPausedAt(t *testing.T, srcReconnect string, pauseAt int64, hook func(dst *lazyRun, pid int)) (orig *proc, src *lazySource, dst *lazyRun, cp *proc) {
	t.Helper()
	orig = start(t, buildC(t, "lazy_verify"), "64")
	var r lazyVerifyReport
	waitReport(t, orig, &r)
	lazyWaitTick(t, orig, "verify", 1)
	progress(t, orig)

	src = startLazySource(t, nil, orig.pid, "127.0.0.1", "--reconnect-timeout", srcReconnect)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	px := startPausingProxy(t, ln, func() (net.Conn, error) { return net.Dial("tcp", src.addr) }, pauseAt, func() {
		<-ready
		hook(dst, cp.pid)
	})
	dst = startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "60s")
	cp = adopt(t, lazyResumedPID(t, dst))
	cp.continueOutput(orig, false)
	close(ready)
	return orig, src, dst, cp
}

// TestTargetInterruptFinishes: one SIGINT to the target mid-fetch. The
// target says the process is still being fetched and how to abort, finishes
// the transfer and exits 0; the copy has all its memory (it keeps
// verifying) and the original is gone.
func TestTargetInterruptFinishes(t *testing.T) {
	t.Parallel()
	orig, src, dst, cp := interruptMidFetch(t, func(dst *lazyRun, pid int) {
		if err := dst.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Errorf("interrupt the target: %v", err)
			return
		}
		if _, err := dst.lineOn(lazycrTimeout, func(l string) bool { return strings.Contains(l, "still being fetched") }); err != nil {
			t.Errorf("the still-being-fetched notice: %v", err)
		}
	})
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	if !strings.Contains(e, "Interrupt again within") {
		t.Errorf("the notice does not say how to abort:\n%s", e)
	}
	requireLazySourceGone(t, orig)
	lazyRequireRounds(t, cp, "verify", 2)
	checkSequence(t, cp, "verify")
}

// TestTargetInterruptTwiceAborts: two SIGINTs to the target mid-fetch. The
// target aborts: it kills its copy (which never reports a wrong page), says
// so, exits 1, and the original stays stopped on the source.
func TestTargetInterruptTwiceAborts(t *testing.T) {
	t.Parallel()
	orig, _, dst, cp := interruptMidFetch(t, func(dst *lazyRun, pid int) {
		for i, want := range []string{"still being fetched", "aborting"} {
			if err := dst.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Errorf("interrupt %d: %v", i+1, err)
				return
			}
			if _, err := dst.lineOn(lazycrTimeout, func(l string) bool { return strings.Contains(l, want) }); err != nil {
				t.Errorf("the notice %q: %v", want, err)
				return
			}
		}
	})
	if code := dst.wait(t, lazycrTimeout); code != 1 {
		o, e := dst.output()
		t.Fatalf("target exit %d, want 1\nstdout:\n%s\nstderr:\n%s", code, o, e)
	}
	_, e := dst.output()
	t.Logf("target:\n%s", e)
	if !strings.Contains(e, "aborted") || !strings.Contains(e, "was killed") {
		t.Errorf("target does not say it aborted and killed its copy:\n%s", e)
	}
	select {
	case <-cp.done:
	case <-time.After(goneTimeout):
		t.Fatalf("the copy pid %d still exists (state %s) after the abort", cp.pid, procState(cp.pid))
	}
	if b, _ := os.ReadFile(orig.errPath); strings.Contains(string(b), "verify FAIL") {
		t.Errorf("the copy read wrong memory before it was killed:\n%s", b)
	}
	// The target is gone; the original must still be stopped, the only
	// copy left: frozen by the source (t), or kept stopped by it (T) once it
	// heard the ABORT (passing through R inside the kernel on its way from
	// one stop to the other).
	deadline := time.Now().Add(goneTimeout)
	s := procState(orig.pid)
	for s != "t" && s != "T" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // poll interval
		s = procState(orig.pid)
	}
	if s != "t" && s != "T" {
		t.Errorf("original pid %d in state %q after the target aborted, want t or T (stopped by the source)", orig.pid, s)
	}
}

// lineOn waits until match accepts a line of r's stderr and returns it, or
// an error if r exits first or timeout passes. Unlike waitLine it never
// fails the test itself, so it may run on a goroutine other than the
// test's (a proxy hook).
func (r *lazyRun) lineOn(timeout time.Duration, match func(string) bool) (string, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, l := range r.stderr {
			if match(l) {
				r.mu.Unlock()
				return l, nil
			}
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-r.done:
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, l := range r.stderr {
				if match(l) {
					return l, nil
				}
			}
			return "", fmt.Errorf("%s exited %d first", r.name, r.code)
		case <-deadline.C:
			return "", fmt.Errorf("%s: not within %v", r.name, timeout)
		}
	}
}
