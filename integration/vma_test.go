package integration

import (
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

// TestVMALeaderExitedRefused: a process whose main thread exited
// (pthread_exit) while another runs is refused with that said — not as
// "a zombie" — and keeps running.
func TestVMALeaderExitedRefused(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "vmacheck", "-lrt"), "leader-exit", t.TempDir())
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	waitTick(t, p, "ok", 2)
	dir := filepath.Join(t.TempDir(), "img")
	_, errOut, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", dir)
	requireExit1(t, "dump of a process whose main thread exited", errOut, code,
		`dump pid \d+: unsupported: its main thread has exited while 1 other threads run`)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the refused dump left %s behind (stat: %v)", dir, err)
	}
	// Still ticking (requireProgress would object to the dead leader).
	waitTick(t, p, "ok", progress(t, p)["ok"]+2)
}

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
