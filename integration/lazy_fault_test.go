package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lazycr/lazycr/pageserver"
)

// Failures around a post-copy migration: the target lost before the resume
// (the original must run on), the connection cut after the resume (it must
// come back and finish), and clients without the token (refused, and the
// source keeps waiting for the right one).

// lazyCutBeforeResume is how many bytes from the source reach the target before
// it is cut off in the pre-resume tests: past WELCOME, well inside the image
// set (lazy_verify's skeleton alone is larger: 18 eager pages).
const lazyCutBeforeResume = 16 << 10

// requireLazyReleased checks that the source lazycr gave up with exit 1 and the
// original runs on, untraced, still verifying its memory.
func requireLazyReleased(t *testing.T, src *lazySource, orig *proc) {
	t.Helper()
	src.requireExit(t, 1)
	_, e := src.output()
	t.Logf("source: %s", e)
	if !strings.Contains(e, "released") {
		t.Errorf("source stderr does not say the process was released:\n%s", e)
	}
	requireProgress(t, orig, "verify") // also: no thread stopped or traced
	checkSequence(t, orig, "verify")
}

// TestLazyCutBeforeResume: the connection dies while the target fetches the
// image set, and the proxy lets no reconnect through.
func TestLazyCutBeforeResume(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "2s")
	px := startLazyProxy(t, &lazyProxy{upstream: src.addr, cutAt: map[int]int64{1: lazyCutBeforeResume}, refuseFrom: 2})
	dst := startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "1s")
	if code := dst.wait(t, lazycrTimeout); code == 0 {
		o, e := dst.output()
		t.Errorf("target exit 0 after losing the source before the resume\nstdout:\n%s\nstderr:\n%s", o, e)
	}
	if o, _ := dst.output(); o != "" {
		t.Errorf("target printed %q on stdout: it resumed a process", o)
	}
	_, e := dst.output()
	t.Logf("target: %s", e)
	requireLazyReleased(t, src, p)
	if _, cut := px.counts(); cut != 1 {
		t.Errorf("lazyProxy cut %d connections, want 1", cut)
	}
}

// TestLazyTargetKilledBeforeResume: the target lazycr is SIGKILLed in the
// middle of fetching the image set.
func TestLazyTargetKilledBeforeResume(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	var dst *lazyRun
	started := make(chan struct{})
	px := startLazyProxy(t, &lazyProxy{upstream: src.addr, cutAt: map[int]int64{1: lazyCutBeforeResume}, beforeCut: func(int) {
		<-started
		dst.cmd.Process.Kill()
		<-dst.done
	}})
	dst = startLazyTarget(t, nil, px.addr())
	close(started)
	if code := dst.wait(t, lazycrTimeout); code != -1 {
		t.Errorf("target exit %d, want -1 (killed)", code)
	}
	if o, _ := dst.output(); o != "" {
		t.Errorf("target printed %q on stdout: it resumed a process", o)
	}
	requireLazyReleased(t, src, p)
}

// TestLazyReconnect: the connection is cut once, after the resume, half-way
// through the pages; the target reconnects through the proxy and the
// migration completes.
func TestLazyReconnect(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "64")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "20s")
	// 32 MiB from the source: after the skeleton, before the last of the
	// 64 MiB of pages.
	px := startLazyProxy(t, &lazyProxy{upstream: src.addr, cutAt: map[int]int64{1: 32 << 20}})
	dst := startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "20s")
	rp := adopt(t, lazyResumedPID(t, dst))
	rp.continueOutput(p, false)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if acc, cut := px.counts(); cut != 1 || acc < 2 {
		t.Errorf("lazyProxy: %d connections, %d cut; want one cut and a reconnect", acc, cut)
	}
	o, e := src.output()
	t.Logf("source: %s", o)
	// Either the source saw the connection drop and waited, or the target
	// was back before the source noticed and the new connection replaced
	// the old one.
	if !strings.Contains(e, "waiting for it to reconnect") && !strings.Contains(e, "replaced by a reconnect") {
		t.Errorf("source log does not show the lost connection:\n%s", e)
	}
	lazyRequireRounds(t, rp, "verify", 3)
	checkSequence(t, rp, "verify")
}

// TestLazyToken: a target without the token, then one with a wrong token,
// are refused (exit 1, saying why) and get no image; the source keeps
// serving and the right target then migrates the process.
func TestLazyToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	if err := os.WriteFile(good, []byte("s3cret-token-of-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("not-the-token-of-the-test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--token", good)
	refused := regexp.MustCompile(`(?i)token`)
	for _, extra := range [][]string{nil, {"--token", bad}} {
		dst := startLazyTarget(t, nil, src.addr, extra...)
		code := dst.wait(t, lazycrTimeout)
		o, e := dst.output()
		if code != 1 || o != "" || !refused.MatchString(e) {
			t.Errorf("target %v: exit %d, stdout %q; want exit 1, no pid, and a message about the token; stderr:\n%s",
				extra, code, o, e)
		}
		t.Logf("target %v refused: %s", extra, e)
		if src.exited() {
			o, e := src.output()
			t.Fatalf("source exited %d after refusing a target\nstdout:\n%s\nstderr:\n%s", src.code, o, e)
		}
	}
	if s := procState(p.pid); s != "t" {
		t.Errorf("original pid %d in state %q while the source waits, want t (frozen)", p.pid, s)
	}

	dst := startLazyTarget(t, nil, src.addr, "--token", good)
	rp := adopt(t, lazyResumedPID(t, dst))
	rp.continueOutput(p, false)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	lazyRequireRounds(t, rp, "verify", 2)
	checkSequence(t, rp, "verify")
}

// TestLazyResumedLost: the target resumes the process but its RESUMED never
// reaches the source (the proxy drops it and cuts the connection, and lets
// no reconnect through). The source only knows the session ended before the
// resume, so it releases the original, which runs on; the copy cannot get
// its pages, so the target must fail and the copy must not run on with
// holes in its memory (its missing pages are poisoned: it dies of SIGBUS on
// the next one it touches, and it touches all of them).
func TestLazyResumedLost(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "2s")
	px := startLazyProxy(t, &lazyProxy{upstream: src.addr, cutOnClientFrame: uint8(pageserver.TypeResumed), refuseFrom: 2})
	dst := startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "2s")
	requireLazyReleased(t, src, p)
	select {
	case <-dst.done:
	case <-time.After(20 * time.Second): // 10× the target's reconnect timeout
		_, e := dst.output()
		t.Fatalf("target still runs 20s after losing the source (--reconnect-timeout 2s), the original pid %d runs too\ntarget stderr:\n%s", p.pid, e)
	}
	o, e := dst.output()
	if dst.code == 0 {
		t.Errorf("target exit 0 although the source never heard of the resume\nstdout:\n%s\nstderr:\n%s", o, e)
	}
	// The target kills its copy before announcing it: no pid on stdout, and
	// the pid it names as killed is gone.
	if strings.TrimSpace(o) != "" {
		t.Errorf("target printed %q on stdout: a pid for a copy that must not run", o)
	}
	m := regexp.MustCompile(`the copy here \(pid (\d+)\) was killed`).FindStringSubmatch(e)
	if m == nil {
		t.Fatalf("target stderr does not say the copy was killed:\n%s", e)
	}
	copyPID, _ := strconv.Atoi(m[1])
	gone := func() bool {
		s := procState(copyPID)
		return strings.Contains(s, "no such file") || s == "Z" || s == "X"
	}
	deadline := time.Now().Add(goneTimeout)
	for !gone() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !gone() {
		t.Errorf("the copy pid %d still exists (state %s) after its target gave up", copyPID, procState(copyPID))
	}
	requireProgress(t, p, "verify")
}

// TestLazyGaveUp: after the resume the connection is cut for good. Both
// sides wait their reconnect timeout, then give up: the source keeps the
// original stopped (never released: the target resumed it), says how to
// serve it again (--adopt) and exits 1; the target exits non-zero and the
// copy, which touches every page, dies on a poisoned one instead of reading
// zeros. The stopped original still holds every page: sent SIGCONT, it
// verifies all of its memory.
func TestLazyGaveUp(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "64")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	dir := filepath.Join(t.TempDir(), "img")
	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "2s", "-D", dir)
	px := startLazyProxy(t, &lazyProxy{upstream: src.addr, cutAt: map[int]int64{1: 8 << 20}, refuseFrom: 2})
	dst := startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "2s")
	cp := adopt(t, lazyResumedPID(t, dst))
	cp.outPath, cp.errPath = p.outPath, p.errPath

	src.requireExit(t, 1)
	_, e := src.output()
	if want := fmt.Sprintf("--adopt %d -D %s", p.pid, dir); !strings.Contains(e, want) {
		t.Errorf("source stderr does not say how to serve the original again (%q):\n%s", want, e)
	}
	if _, err := os.Stat(filepath.Join(dir, "unacked")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source wrote %s/unacked (nothing reads it): %v", dir, err)
	}
	requireStoppedOriginal(t, p)
	if code := dst.wait(t, lazycrTimeout); code == 0 {
		o, e := dst.output()
		t.Errorf("target exit 0 without the pages\nstdout:\n%s\nstderr:\n%s", o, e)
	}
	select {
	case <-cp.done:
	case <-time.After(goneTimeout):
		t.Errorf("the copy pid %d still exists (state %s) without its pages", cp.pid, procState(cp.pid))
	}
	if b, _ := os.ReadFile(p.errPath); strings.Contains(string(b), "verify FAIL") {
		t.Errorf("the copy read wrong memory instead of dying on a poisoned page:\n%s", b)
	}
	// Both gave up and the copy is gone: the original is the one copy left.
	if err := syscall.Kill(p.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	requireProgress(t, p, "verify")
}
