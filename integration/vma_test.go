package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Per-VMA and process-level attributes: vmacheck sets them, is dumped and
// restored (plainly, and post-copy where noted), and keeps checking its own
// state; a check that fails after restore makes it exit with "FAIL …" on
// stderr, which requireProgress reports.

type vmaCase struct {
	scenario string
	args     []string
	keys     []string // tick keys that must keep growing after restore
	lazy     bool     // also migrate it post-copy
}

var vmaCases = []vmaCase{
	{scenario: "prot", lazy: true},
	{scenario: "filemap", lazy: true},
	{scenario: "madvise", lazy: true},
	{scenario: "mlock", lazy: true},
	{scenario: "mlock", args: []string{"future"}, lazy: true},
	{scenario: "mlock", args: []string{"future", "user"}, lazy: true},
	{scenario: "prctl", lazy: true},
	{scenario: "timers", keys: []string{"tidtimer", "proctimer"}, lazy: true},
	{scenario: "cwd", lazy: true},
}

func (c vmaCase) name() string { return strings.Join(append([]string{c.scenario}, c.args...), "-") }

// startVmacheck starts vmacheck for c in a directory of its own and waits
// until it has checked its state once.
func startVmacheck(t *testing.T, bin string, c vmaCase, startProg func(*testing.T, string, ...string) *proc) *proc {
	t.Helper()
	dir := t.TempDir()
	// The "user" variant drops to uid 65534 after locking memory.
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p := startProg(t, bin, append([]string{c.scenario, dir}, c.args...)...)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	for _, k := range c.keys {
		waitTick(t, p, k, 1)
	}
	return p
}

func TestVMAAttrsRestore(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "vmacheck", "-lrt")
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range vmaCases {
		t.Run(c.name(), func(t *testing.T) {
			p := startVmacheck(t, bin, c, start)
			rp := restoreFrom(t, p, dumpKill(t, p))
			requireProgress(t, rp, append([]string{"ok"}, c.keys...)...)
			checkSequence(t, rp, "ok")
		})
	}
}

func TestVMAAttrsLazy(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "vmacheck", "-lrt")
	env := lazyEnv{}
	for _, c := range vmaCases {
		if !c.lazy {
			continue
		}
		t.Run(c.name(), func(t *testing.T) {
			p := startVmacheck(t, bin, c, env.startProg)
			m := migrateLazy(t, env, p, nil, nil)
			requireProgress(t, m.restored, append([]string{"ok"}, c.keys...)...)
			checkSequence(t, m.restored, "ok")
		})
	}
}

// requireLeaderExited checks that pid's leader is a zombie while its
// other thread runs on, as vmacheck leader-exit left it.
func requireLeaderExited(t *testing.T, pid int) {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if s, n := statusField(string(st), "State"), statusField(string(st), "Threads"); !strings.HasPrefix(s, "Z") || n != "2" {
		t.Errorf("pid %d: State %q with %s threads, want a zombie leader and 2 threads", pid, s, n)
	}
}

// TestVMALeaderExited: a process whose main thread exited (pthread_exit)
// while another runs is dumped from that thread and restored with its
// leader exiting again: the pid is a zombie leader and the thread ticks on.
func TestVMALeaderExited(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "vmacheck", "-lrt")
	start := func(t *testing.T, startProg func(*testing.T, string, ...string) *proc) *proc {
		p := startProg(t, bin, "leader-exit", t.TempDir())
		var r struct {
			Pid int `json:"pid"`
		}
		waitReport(t, p, &r)
		waitTick(t, p, "ok", 2)
		requireLeaderExited(t, p.pid)
		return p
	}
	t.Run("plain", func(t *testing.T) {
		p := start(t, startVMAProg)
		rp := restoreFrom(t, p, dumpKill(t, p))
		waitTick(t, rp, "ok", progress(t, rp)["ok"]+3)
		requireLeaderExited(t, rp.pid)
		checkSequence(t, rp, "ok")
	})
	t.Run("lazy", func(t *testing.T) {
		env := lazyEnv{}
		p := start(t, env.startProg)
		m := migrateLazy(t, env, p, nil, nil)
		waitTick(t, m.restored, "ok", progress(t, m.restored)["ok"]+3)
		requireLeaderExited(t, m.restored.pid)
		checkSequence(t, m.restored, "ok")
	})
}

func startVMAProg(t *testing.T, bin string, args ...string) *proc { return start(t, bin, args...) }

// TestVMASealedRefused: a sealed mapping (mseal) cannot be made again
// exactly; the dump names it and the process keeps running.
func TestVMASealedRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "vmacheck", "-lrt"), "sealed", t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	requireExit1(t, "dump of a sealed mapping", errOut, code,
		`vma 0x[0-9a-f]+-0x[0-9a-f]+ : unsupported: sealed mapping \(mseal\) \(VmFlags "sl"\)`)
	requireProgress(t, p, "ok")
}

// TestVMATimerOrphanRefused: a POSIX timer that signals a thread which has
// since exited cannot be created again; the dump names it and the process
// keeps running.
func TestVMATimerOrphanRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "vmacheck", "-lrt"), "timer-orphan", t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	requireExit1(t, "dump of a timer signalling an exited thread", errOut, code,
		`unsupported: POSIX timer 0 signals thread \d+, which has exited`)
	requireProgress(t, p, "ok")
}
