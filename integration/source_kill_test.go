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
)

// Fault injection on the source side: the source lazycr is killed
// (SIGKILL) or interrupted (SIGINT) at each phase of a post-copy migration.
// Before the resume the original must end running as before (SIGINT: it is
// released) or stopped with its memory untouched (SIGKILL: the guard
// SIGSTOP; `kill -CONT` lets it run on). After the resume the original must
// stay stopped, never run, and `lazycr dump --lazy --adopt` must serve the
// target's reconnect so that the migration completes with every page
// verified by the program itself.

// taskStates returns the state letters of every thread of pid ("" if gone).
func taskStates(pid int) string {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return ""
	}
	var s strings.Builder
	for _, e := range ents {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, e.Name()))
		if err == nil {
			s.WriteString(statState(string(b)))
		}
	}
	return s.String()
}

// requireStoppedOriginal checks that every thread of the original is
// group-stopped (T), untraced, and stays so while its user CPU time does not
// move: it runs no instruction of its own. (Its ticks cannot tell: a
// restored copy writes to the same output file.)
func requireStoppedOriginal(t *testing.T, p *proc) {
	t.Helper()
	deadline := time.Now().Add(goneTimeout)
	for {
		st := taskStates(p.pid)
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
		tracer := statusField(string(b), "TracerPid")
		if st != "" && strings.Trim(st, "T") == "" && tracer == "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("original pid %d: thread states %q, tracer %q; want all T, untraced", p.pid, st, tracer)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	before := userTicks(t, p.pid)
	// A few scheduler ticks in which a running program would have used CPU.
	for range 3 {
		if st := taskStates(p.pid); strings.Trim(st, "T") != "" {
			t.Fatalf("original pid %d left the stop: thread states %q", p.pid, st)
		}
		time.Sleep(50 * time.Millisecond) // observation window, not synchronisation
	}
	if now := userTicks(t, p.pid); now != before {
		t.Fatalf("original pid %d used %d clock ticks of user time while stopped", p.pid, now-before)
	}
}

// userTicks is pid's user CPU time in clock ticks (utime, field 14 of
// /proc/PID/stat, all threads).
func userTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	v, err := strconv.ParseUint(f[11], 10, 64) // field 14 is the 12th after the state
	if err != nil {
		t.Fatalf("pid %d stat %q: %v", pid, s, err)
	}
	return v
}

// requireOriginalRunsOn sends SIGCONT and checks the original verifies its
// memory again.
func requireOriginalRunsOn(t *testing.T, p *proc) {
	t.Helper()
	// A copy that ran and was then killed may have written ticks past the
	// original's to the same output: the original, back from its freeze,
	// repeats them. Only what it writes from now on must be in sequence.
	st, err := os.Stat(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	progress(t, p)
	p.mu.Lock()
	p.ticks = map[string]uint64{}
	p.mu.Unlock()
	requireProgress(t, p, "verify")
	checkSequenceFrom(t, p, st.Size(), "verify")
}

// killPhase is when the source lazycr is hit.
type killPhase struct {
	name    string
	cutAt   int64 // bytes from the source through the proxy; 0: right after the resume
	resumed bool  // the target resumed the process by then
	// total: cutAt counts the bytes of every connection (the push's and
	// the answers to faults together), not the session's alone: under
	// load the process faults in much of its memory itself, and the
	// session's connection alone never reached 15 MiB before DONE (CI).
	total bool
}

var killPhases = []killPhase{
	{"skeleton", lazyCutBeforeResume, false, false},
	{"resumed", 0, true, false},
	{"midpush", 4 << 20, true, false},
	{"beforedone", 15 << 20, true, true}, // of the 16 MiB lazy_verify touches
}

func TestSourceKilled(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		for _, ph := range killPhases {
			t.Run(fmt.Sprintf("%s/%s", strings.ToLower(strings.TrimPrefix(sig.String(), "")), ph.name), func(t *testing.T) {
				t.Parallel()
				testSourceKilled(t, sig, ph)
			})
		}
	}
}

func testSourceKilled(t *testing.T, sig syscall.Signal, ph killPhase) {
	p := start(t, buildC(t, "lazy_verify"), "16")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)

	dir := filepath.Join(t.TempDir(), "img")
	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "60s", "-D", dir)
	hit := func() {
		if err := src.cmd.Process.Signal(sig); err != nil {
			t.Errorf("signal the source: %v", err)
		}
		<-src.done
	}
	pxc := &lazyProxy{upstream: src.addr}
	switch {
	case ph.total:
		pxc.cutTotal = ph.cutAt
		pxc.beforeCut = func(int) { hit() }
	case ph.cutAt > 0:
		pxc.cutAt = map[int]int64{1: ph.cutAt}
		pxc.beforeCut = func(int) { hit() }
	}
	px := startLazyProxy(t, pxc)
	dst := startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "60s")

	if !ph.resumed {
		// The target loses its source while it fetches the skeleton: it
		// fails and no copy runs.
		if code := dst.wait(t, lazycrTimeout); code == 0 {
			t.Fatalf("target exit 0 although its source died before the resume")
		}
		if o, _ := dst.output(); strings.TrimSpace(o) != "" {
			t.Errorf("target printed %q on stdout: it resumed a process", o)
		}
		if sig == syscall.SIGINT {
			requireLazyReleased(t, src, p) // released, runs as before
			return
		}
		requireStoppedOriginal(t, p)
		requireOriginalRunsOn(t, p)
		return
	}

	rp := adopt(t, lazyResumedPID(t, dst))
	rp.continueOutput(p, false)
	if ph.cutAt == 0 {
		hit()
	}
	select {
	case <-src.done:
	case <-time.After(lazycrTimeout):
		t.Fatalf("the source did not end after %v", sig)
	}
	if sig == syscall.SIGINT {
		_, e := src.output()
		if src.code != 1 || !strings.Contains(e, fmt.Sprintf("--adopt %d -D %s", p.pid, dir)) {
			t.Errorf("interrupted source: exit %d, want 1 with the --adopt command\n%s", src.code, e)
		}
	}
	requireStoppedOriginal(t, p)
	if st := taskStates(rp.pid); st == "" {
		t.Fatalf("the copy pid %d is gone while its source is away", rp.pid)
	}

	ad := startLazyRun(t, "adopting lazycr", lazyCmd(t, nil, "--log-format", "json", "dump", "--lazy",
		"--adopt", fmt.Sprint(p.pid), "-D", dir, "--reconnect-timeout", "60s"))
	dst.requireExit(t, 0)
	ad.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if _, err := os.Stat(filepath.Join(dir, "lazy-session.json")); err == nil {
		t.Errorf("session state left in %s after DONE", dir)
	}
	lazyRequireRounds(t, rp, "verify", 2)
	checkSequence(t, rp, "verify")
}

// TestSourceKilledBeforeFreeze: the source is hit as soon as it starts,
// possibly before it froze the process: the original ends running as
// before, or (SIGKILL after the freeze) stopped with its memory intact.
func TestSourceKilledBeforeFreeze(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGINT} {
		t.Run(strings.ToLower(sig.String()), func(t *testing.T) {
			t.Parallel()
			p := start(t, buildC(t, "lazy_verify"), "16")
			var r lazyVerifyReport
			waitReport(t, p, &r)
			lazyWaitTick(t, p, "verify", 1)
			progress(t, p)
			src := startLazyRun(t, "source lazycr", lazyCmd(t, nil, "dump", "--lazy", "--pid", fmt.Sprint(p.pid),
				"--address", "127.0.0.1", "--port", "0", "-D", filepath.Join(t.TempDir(), "img")))
			if err := src.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			<-src.done
			deadline := time.Now().Add(progressTimeout)
			for strings.ContainsAny(taskStates(p.pid), "t") && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond) // poll interval
			}
			if st := taskStates(p.pid); st != "" && strings.Trim(st, "T") == "" {
				requireStoppedOriginal(t, p)
				requireOriginalRunsOn(t, p)
				return
			}
			requireProgress(t, p, "verify")
			checkSequence(t, p, "verify")
		})
	}
}

// TestSourcePrintsRestoreCommand: without --token, $LAZYCR_TOKEN or TLS the
// source makes a one-time secret and prints the restore command carrying
// it; the target run exactly so migrates the process, one run without it is
// refused.
func TestSourcePrintsRestoreCommand(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "4")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)
	cmd := lazyCmd(t, nil, "--log-format", "json", "dump", "--lazy", "--pid", fmt.Sprint(p.pid), "--address", "127.0.0.1", "--port", "0")
	cmd.Env = withoutToken(cmd.Env)
	src := startLazyRun(t, "source lazycr", cmd)
	re := regexp.MustCompile(`^\s*LAZYCR_TOKEN=([0-9a-f]{32}) lazycr restore --lazy-from (\S+)$`)
	var m []string
	src.waitLine(t, false, "the restore command on stdout", lazycrTimeout, func(l string) bool {
		m = re.FindStringSubmatch(l)
		return m != nil
	})
	if m[1] == lazyTestToken {
		t.Fatal("the source used the harness's token")
	}
	// The port is the one the source listens on; the host is this host's
	// name: reach it over loopback.
	from := "127.0.0.1:" + m[2][strings.LastIndexByte(m[2], ':')+1:]
	bad := lazyCmd(t, nil, "restore", "--lazy-from", from, "--new-pid")
	bad.Env = withoutToken(bad.Env)
	badRun := startLazyRun(t, "target without the token", bad)
	if code := badRun.wait(t, lazycrTimeout); code == 0 {
		t.Fatal("a target without the token migrated the process")
	}
	good := lazyCmd(t, nil, "restore", "--lazy-from", from, "--new-pid")
	good.Env = append(withoutToken(good.Env), "LAZYCR_TOKEN="+m[1])
	dst := startLazyRun(t, "target with the printed token", good)
	rp := adopt(t, lazyResumedPID(t, dst))
	rp.continueOutput(p, false)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	lazyRequireRounds(t, rp, "verify", 2)
}

func withoutToken(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "LAZYCR_TOKEN=") {
			out = append(out, e)
		}
	}
	return out
}

// TestSourceAfterTargetAbort: the target aborts mid-fetch (two SIGINTs) and
// kills its copy. The source hears ABORT, keeps the original stopped at
// once (no wait for a reconnect), says it is the only copy and how to let it
// run, and exits 1; sent SIGCONT, the original verifies all its memory.
func TestSourceAfterTargetAbort(t *testing.T) {
	t.Parallel()
	orig, src, dst, cp := interruptMidFetch(t, func(dst *lazyRun, pid int) {
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
		t.Fatalf("target exit %d, want 1", code)
	}
	<-cp.done
	// Its reconnect timeout is 60s: exiting well before says it did not wait.
	src.requireExit(t, 1)
	_, e := src.output()
	if want := fmt.Sprintf("kill -CONT %d", orig.pid); !strings.Contains(e, "only copy") || !strings.Contains(e, want) {
		t.Errorf("source does not say the original is the only copy and how to let it run (%q):\n%s", want, e)
	}
	requireStoppedOriginal(t, orig)
	requireOriginalRunsOn(t, orig)
}

// TestSourceKilledThreads: SIGKILL of the source mid-push with 8 threads
// faulting at once. Every thread of the original stops; the adopter serves
// the target's reconnect and every thread of the copy keeps verifying its
// region.
func TestSourceKilledThreads(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_threads"), "2")
	var r struct {
		Pid     int `json:"pid"`
		Threads int `json:"threads"`
	}
	waitReport(t, p, &r)
	var keys []string
	for k := range r.Threads {
		keys = append(keys, fmt.Sprintf("t%d", k))
	}
	for _, k := range keys {
		lazyWaitTick(t, p, k, 1)
	}
	progress(t, p)

	// No -D: the state goes to /run/lazycr/pid-PID-START, found again by
	// --adopt PID alone.
	src := startLazySource(t, nil, p.pid, "127.0.0.1", "--reconnect-timeout", "60s")
	px := startLazyProxy(t, &lazyProxy{upstream: src.addr, cutAt: map[int]int64{1: 6 << 20}, beforeCut: func(int) {
		src.cmd.Process.Kill()
		<-src.done
	}})
	dst := startLazyTarget(t, nil, px.addr(), "--reconnect-timeout", "60s")
	rp := adopt(t, lazyResumedPID(t, dst))
	rp.continueOutput(p, true)
	<-src.done
	requireStoppedOriginal(t, p)
	if n := len(taskStates(p.pid)); n != r.Threads+1 {
		t.Errorf("stopped original has %d threads, want %d", n, r.Threads+1)
	}

	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	stat := string(b)
	stateDir := fmt.Sprintf("/run/lazycr/pid-%d-%s", p.pid, strings.Fields(stat[strings.LastIndexByte(stat, ')')+2:])[19])
	for name, perm := range map[string]os.FileMode{stateDir: 0o700, filepath.Join(stateDir, "lazy-session.json"): 0o600} {
		if fi, err := os.Stat(name); err != nil || fi.Mode().Perm() != perm {
			t.Errorf("session state %s: %v, want mode %v", name, err, perm)
		}
	}
	ad := startLazyRun(t, "adopting lazycr", lazyCmd(t, nil, "dump", "--lazy", "--adopt", fmt.Sprint(p.pid), "--reconnect-timeout", "60s"))
	dst.requireExit(t, 0)
	ad.requireExit(t, 0)
	requireLazySourceGone(t, p)
	if _, err := os.Stat(stateDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("session state directory %s left after DONE: %v", stateDir, err)
	}
	before := progress(t, rp)
	for _, k := range keys {
		lazyWaitTick(t, rp, k, before[k]+2)
	}
	checkSequence(t, rp, keys...)
}

// TestSourceGuardSurvivesSIGCONT: a SIGCONT sent to the frozen original
// discards the pending guard SIGSTOP; the serving source notices and queues
// it again, so its SIGKILL still leaves the original stopped.
func TestSourceGuardSurvivesSIGCONT(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "4")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)
	src := startLazySource(t, nil, p.pid, "127.0.0.1", "-D", filepath.Join(t.TempDir(), "img"))
	if err := syscall.Kill(p.pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	src.waitLine(t, true, "the guard queued again", lazycrTimeout, func(l string) bool { return strings.Contains(l, "queued again") })
	if err := src.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-src.done
	requireStoppedOriginal(t, p)
	requireOriginalRunsOn(t, p)
}
