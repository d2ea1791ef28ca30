package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Post-copy migration end to end: a program is frozen by `lazycr dump
// --lazy`, resumed by `lazycr restore --lazy-from` with its memory arriving
// on demand and by background push, and what the program itself reports
// afterwards is checked. On one host the frozen original keeps its pid while
// the copy runs, hence --new-pid.

// lazyVerifyReport is lazy_verify's first line.
type lazyVerifyReport struct {
	Pid   int    `json:"pid"`
	Base  hexU64 `json:"base"`
	Pages int    `json:"pages"`
}

// lazyRequireRounds waits until key advanced by at least n more rounds, and
// checks the process runs untraced.
func lazyRequireRounds(t *testing.T, p *proc, key string, n uint64) {
	t.Helper()
	lazyWaitTick(t, p, key, progress(t, p)[key]+n)
	requireRunning(t, p.pid)
}

// testLazyVerify migrates lazy_verify with mib MiB of populated memory and
// checks it keeps verifying all of it.
func testLazyVerify(t *testing.T, env lazyEnv, mib int) {
	p := env.startProg(t, buildC(t, "lazy_verify"), strconv.Itoa(mib))
	var r lazyVerifyReport
	waitReport(t, p, &r)
	if r.Pages != mib*256 {
		t.Fatalf("lazy_verify reports %d pages, want %d", r.Pages, mib*256)
	}
	lazyWaitTick(t, p, "verify", 1) // filled and verified once before the freeze
	began := time.Now()
	m := migrateLazy(t, env, p, nil, nil)
	t.Logf("%d MiB migrated in %v (start of dump to both lazycr exited)", mib, time.Since(began))
	// Each "verify" tick is a full pass over every populated word.
	lazyRequireRounds(t, m.restored, "verify", 3)
	checkSequence(t, m.restored, "verify")
	_, e := m.target.output()
	s := parseLazySummary(t, e)
	if s.bytesCopied < int64(mib)<<20 {
		t.Errorf("target copied %d bytes, want at least the %d MiB populated", s.bytesCopied, mib)
	}
	if env.dst != nil {
		if got, want := lazyNetnsOf(t, m.restored.pid), lazyHostNetns(t, env.dst); got != want {
			t.Errorf("restored pid %d runs in %s, want host %s's %s", m.restored.pid, got, env.dst.Name, want)
		}
	}
}

func TestLazyVerify64M(t *testing.T) {
	t.Parallel()
	testLazyVerify(t, lazyEnv{}, 64)
}

func TestLazyVerify1G(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB migration skipped in -short mode")
	}
	testLazyVerify(t, lazyEnv{}, 1024)
}

func TestLazyVerify64MHosts(t *testing.T) {
	t.Parallel()
	testLazyVerify(t, lazyTwoHosts(t), 64)
}

// testLazyOps migrates lazy_ops, whose rounds right after the resume
// madvise, unmap, remap and fork over memory that has not arrived yet.
func testLazyOps(t *testing.T, env lazyEnv) {
	p := env.startProg(t, buildC(t, "lazy_ops"))
	var r struct {
		Pid    int    `json:"pid"`
		Pool   hexU64 `json:"pool"`
		Chunks int    `json:"chunks"`
	}
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "round", 2)
	m := migrateLazy(t, env, p, nil, nil)
	// "fork" ticks only once the program sees its new pid: each one is a
	// child that verified its copy of the parent's memory.
	lazyRequireRounds(t, m.restored, "round", uint64(r.Chunks)+2) // every chunk at least once after the resume
	lazyWaitTick(t, m.restored, "fork", 3)
	checkSequence(t, m.restored, "round")
	requireRunning(t, m.restored.pid)
}

func TestLazyOps(t *testing.T) {
	t.Parallel()
	testLazyOps(t, lazyEnv{})
}

// testLazyThreads migrates 8 threads that each keep verifying their own
// region.
func testLazyThreads(t *testing.T, env lazyEnv) {
	p := env.startProg(t, buildC(t, "lazy_threads"), "8")
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
	m := migrateLazy(t, env, p, nil, nil)
	before := progress(t, m.restored)
	for _, k := range keys {
		lazyWaitTick(t, m.restored, k, before[k]+2)
	}
	requireRunning(t, m.restored.pid)
	if n := len(tasks(t, m.restored.pid)); n != r.Threads+1 {
		t.Errorf("restored pid %d has %d threads, want %d", m.restored.pid, n, r.Threads+1)
	}
	checkSequence(t, m.restored, keys...)
	if env.dst != nil {
		if got, want := lazyNetnsOf(t, m.restored.pid), lazyHostNetns(t, env.dst); got != want {
			t.Errorf("restored pid %d runs in %s, want host %s's %s", m.restored.pid, got, env.dst.Name, want)
		}
	}
}

func TestLazyThreads(t *testing.T) {
	t.Parallel()
	testLazyThreads(t, lazyEnv{})
}

func TestLazyThreadsHosts(t *testing.T) {
	t.Parallel()
	testLazyThreads(t, lazyTwoHosts(t))
}

func TestLazyOpsHosts(t *testing.T) {
	t.Parallel()
	testLazyOps(t, lazyTwoHosts(t))
}

// TestLazyTwice migrates a process, then migrates the copy again once all of
// its memory arrived: the second dump meets a process restored by lazycr,
// whose userfaultfd is gone.
func TestLazyTwice(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "32")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	m1 := migrateLazy(t, lazyEnv{}, p, nil, nil)
	lazyRequireRounds(t, m1.restored, "verify", 2)
	m2 := migrateLazy(t, lazyEnv{}, m1.restored, nil, nil)
	lazyRequireRounds(t, m2.restored, "verify", 3)
	checkSequence(t, m2.restored, "verify")
}

// TestLazyDetach: `restore --lazy-from --detach` returns as soon as the
// process runs, printing its pid; the handler carries on in the background,
// logging to --log-file, until every page is in and the source exits 0.
func TestLazyDetach(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "lazy_verify"), "32")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)
	logf := filepath.Join(t.TempDir(), "handler.log")
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	dst := startLazyTarget(t, nil, src.addr, "--detach", "--log-file", logf)
	pid := lazyResumedPID(t, dst)
	dst.requireExit(t, 0) // returned while the pages may still be arriving
	rp := adopt(t, pid)
	rp.continueOutput(p, true)
	src.requireExit(t, 0) // the background handler reported DONE
	requireLazySourceGone(t, p)
	lazyRequireRounds(t, rp, "verify", 2)
	checkSequence(t, rp, "verify")
	deadline := time.Now().Add(lazycrTimeout)
	for {
		b, _ := os.ReadFile(logf)
		if strings.Contains(string(b), "migration complete") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background handler's log %s never says the migration completed:\n%s", logf, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLazyDetachDefaultLog: without --log-file, restore --detach logs to
// lazycr-restore-PID.log in the temp directory; the background handler
// removes it once the migration succeeded. When the restore fails the log is
// kept and the error names it.
func TestLazyDetachDefaultLog(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	logs := func() []string {
		m, _ := filepath.Glob(filepath.Join(tmp, "lazycr-restore-*.log"))
		return m
	}

	// Failure before the resume: nobody listens there.
	cmd := lazyCmd(t, nil, "restore", "--lazy-from", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--new-pid", "--detach", "--wait-source", "200ms")
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	bad := startLazyRun(t, "target lazycr restore --detach (nobody listens)", cmd)
	bad.requireExit(t, 1)
	_, stderr := bad.output()
	if m := logs(); len(m) != 1 || !strings.Contains(stderr, m[0]) {
		t.Fatalf("failed restore --detach: logs %v, want one, named in stderr:\n%s", m, stderr)
	}
	for _, m := range logs() {
		os.Remove(m)
	}

	p := start(t, buildC(t, "lazy_verify"), "32")
	var r lazyVerifyReport
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	progress(t, p)
	src := startLazySource(t, nil, p.pid, "127.0.0.1")
	cmd = lazyCmd(t, nil, "restore", "--lazy-from", src.addr, "--new-pid", "--detach")
	cmd.Env = append(cmd.Env, "TMPDIR="+tmp)
	dst := startLazyRun(t, "target lazycr restore --detach", cmd)
	pid := lazyResumedPID(t, dst)
	dst.requireExit(t, 0)
	rp := adopt(t, pid)
	rp.continueOutput(p, true)
	src.requireExit(t, 0)
	requireLazySourceGone(t, p)
	lazyRequireRounds(t, rp, "verify", 2)
	checkSequence(t, rp, "verify")
	deadline := time.Now().Add(lazycrTimeout)
	for len(logs()) != 0 {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logs()[0])
			t.Fatalf("the default log %s is still there after the migration succeeded:\n%s", logs()[0], b)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
