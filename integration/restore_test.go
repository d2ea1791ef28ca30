package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Round trips: each test starts a program, dumps it (which kills it),
// restores it and checks what the program itself reports afterwards.

func TestRestoreMemory(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "memcheck"))
	var r struct {
		Pid   int    `json:"pid"`
		Heap  hexU64 `json:"heap"`
		Map   hexU64 `json:"map"`
		Stack hexU64 `json:"stack"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "check")

	rp := restoreFrom(t, p, dumpKill(t, p))
	if rp.pid != p.pid {
		t.Errorf("restored with pid %d, want the original %d", rp.pid, p.pid)
	}
	// Each "check" tick is a full verification of heap, mapping and stack.
	requireProgress(t, rp, "check")
	checkSequence(t, rp)
}

// threadKeys reads threadcheck's tick keys "NAME:PID:TID:TLS" seen so far,
// by thread name; with pid > 0 only keys of that pid count.
func threadKeys(t *testing.T, p *proc, pid int) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k := range progress(t, p) {
		f := strings.Split(k, ":")
		if len(f) != 4 {
			t.Fatalf("bad threadcheck key %q", k)
		}
		if pid > 0 && f[1] != strconv.Itoa(pid) {
			continue
		}
		out[f[0]] = k
	}
	return out
}

// waitThreadKeys waits until all 9 threads of threadcheck ticked as pid.
func waitThreadKeys(t *testing.T, p *proc, pid int) map[string]string {
	t.Helper()
	deadline := time.Now().Add(progressTimeout)
	for {
		keys := threadKeys(t, p, pid)
		if len(keys) == 9 {
			return keys
		}
		if p.exited() {
			t.Fatalf("pid %d exited (%v); stderr:\n%s", p.pid, p.waitErr, p.stderr())
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d: only %d threads ticked as pid %d within %v: %v", p.pid, len(keys), pid, progressTimeout, keys)
		}
		time.Sleep(2 * time.Millisecond) // poll interval
	}
}

func keyField(key string, i int) string { return strings.Split(key, ":")[i] }

func values[M ~map[K]V, K comparable, V any](m M) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// TestRestoreThreads also covers the default PID mode: the program's own
// getpid and gettid show the original ids after the restore.
func TestRestoreThreads(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "threadcheck"))
	var r struct {
		Pid     int `json:"pid"`
		Threads int `json:"threads"`
	}
	waitReport(t, p, &r)
	keys := waitThreadKeys(t, p, p.pid)
	requireProgress(t, p, values(keys)...)
	tids := tasks(t, p.pid)

	rp := restoreFrom(t, p, dumpKill(t, p))
	if rp.pid != p.pid {
		t.Errorf("restored with pid %d, want the original %d", rp.pid, p.pid)
	}
	// The keys hold each thread's own getpid, gettid and TLS value: the
	// same keys advancing means the same ids and intact TLS.
	requireProgress(t, rp, values(keys)...)
	if got := tasks(t, rp.pid); !slices.Equal(got, tids) {
		t.Errorf("restored threads %v, want the original %v", got, tids)
	}
	checkSequence(t, rp)
}

func TestRestoreNewPID(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "threadcheck"))
	var r struct {
		Pid     int `json:"pid"`
		Threads int `json:"threads"`
	}
	waitReport(t, p, &r)
	before := waitThreadKeys(t, p, p.pid)
	requireProgress(t, p, values(before)...)

	rp := restoreFrom(t, p, dumpKill(t, p), "--new-pid")
	if rp.pid == p.pid {
		t.Fatalf("--new-pid restored with the original pid %d", p.pid)
	}
	after := waitThreadKeys(t, rp, rp.pid)
	requireProgress(t, rp, values(after)...)
	var tids []int
	for name, k := range after {
		if keyField(k, 3) != keyField(before[name], 3) {
			t.Errorf("thread %s: TLS %s after the restore, %s before", name, keyField(k, 3), keyField(before[name], 3))
		}
		tid, _ := strconv.Atoi(keyField(k, 2))
		tids = append(tids, tid)
		if name == "main" && tid != rp.pid {
			t.Errorf("main thread reports tid %d, want the new pid %d", tid, rp.pid)
		}
	}
	slices.Sort(tids)
	if got := tasks(t, rp.pid); !slices.Equal(got, tids) {
		t.Errorf("the threads report tids %v, /proc lists %v", tids, got)
	}
}

// TestRestorePIDNS restores a PID namespace's init with --pidns: it must
// still see itself as pid 1, its threads with their tids in the namespace.
func TestRestorePIDNS(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "threadcheck")
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	p := startCmd(t, cmd)
	var r struct {
		Pid     int `json:"pid"`
		Threads int `json:"threads"`
	}
	waitReport(t, p, &r)
	if r.Pid != 1 {
		t.Fatalf("program in a new PID namespace reports pid %d, want 1", r.Pid)
	}
	keys := waitThreadKeys(t, p, 1)
	requireProgress(t, p, values(keys)...)

	rp := restoreFrom(t, p, dumpKill(t, p), "--pidns")
	requireProgress(t, rp, values(keys)...)
	if got := len(tasks(t, rp.pid)); got != 9 {
		t.Errorf("restored process has %d threads, want 9", got)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", rp.pid))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(statusField(string(st), "NSpid")); len(f) != 2 || f[1] != "1" {
		t.Errorf("restored pid %d: NSpid %v, want [%d 1]", rp.pid, f, rp.pid)
	}
	checkSequence(t, rp)
}

// TestRestoreRefusesPID: restoring while the original runs fails clearly
// and leaves nothing behind; so does --pidns for a process that was not its
// namespace's init.
func TestRestoreRefusesPID(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "memcheck")
	p := start(t, bin)
	var r struct {
		Pid   int    `json:"pid"`
		Heap  hexU64 `json:"heap"`
		Map   hexU64 `json:"map"`
		Stack hexU64 `json:"stack"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "check")
	s := dumpLeaveRunning(t, p.pid)
	before := procsRunning(t, bin)

	_, errOut, code := runLazycr(t, "restore", "-D", s.dir)
	requireExit1(t, "restore while the original runs", errOut, code,
		`\b`+strconv.Itoa(p.pid)+`\b`, `--new-pid`, `--pidns`)
	if after := procsRunning(t, bin); !slices.Equal(after, before) {
		t.Errorf("processes of %s: %v before the restore, %v after", bin, before, after)
	}

	_, errOut, code = runLazycr(t, "restore", "-D", s.dir, "--pidns")
	requireExit1(t, "restore --pidns of a process that was not pid 1", errOut, code, `--pidns`, `(?i)pid 1|init`)
	if after := procsRunning(t, bin); !slices.Equal(after, before) {
		t.Errorf("processes of %s: %v before the restore, %v after", bin, before, after)
	}
	requireProgress(t, p, "check")
}

func TestRestoreFds(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "lines")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p := start(t, buildC(t, "fdcheck"), path)
	var r struct {
		Pid     int `json:"pid"`
		Timerfd int `json:"timerfd"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main", "eventfd")
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitTick(t, p, "pipe=hello", 1)

	rp := restoreFrom(t, p, dumpKill(t, p))
	// The pipe still holds "hello".
	if err := unix.Kill(rp.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitTick(t, rp, "pipe=hello", 2)
	// The timerfd is still periodic. The dump freezes the program for
	// longer than the 5 ms period, so the image holds an expired, unread
	// timer: it_value 0, ticks > 0, interval 5 ms.
	info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", rp.pid, r.Timerfd))
	if err != nil {
		t.Fatal(err)
	}
	if iv := statusField(string(info), "it_interval"); iv != "(0, 5000000)" {
		t.Errorf("restored timerfd %d: it_interval %s, want (0, 5000000): the timer is no longer periodic\n%s", r.Timerfd, iv, info)
	}
	// Timer and eventfd readiness still reach the program through epoll.
	requireProgress(t, rp, "main", "eventfd")
	checkSequence(t, rp)

	// The O_APPEND file got every line once, in order.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	if last := lines[len(lines)-1]; last != "" {
		lines = lines[:len(lines)-1] // being written
	}
	lines = lines[:len(lines)-1]
	for i, l := range lines {
		if want := fmt.Sprintf("line %d\n", i+1); l != want {
			t.Fatalf("%s line %d is %q, want %q (a skipped or repeated append)", path, i+1, l, want)
		}
	}
	if uint64(len(lines)) <= p.ticks["main"] {
		t.Errorf("%s has %d lines, no more than before the dump", path, len(lines))
	}
}

func TestRestoreSignals(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "signals"))
	var r signalsReport
	waitReport(t, p, &r)
	requireProgress(t, p, "main")
	if err := unix.Kill(p.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitTick(t, p, "usr1", 1)

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "main")
	// SIGUSR2 is still blocked and pending (its handler would exit 4).
	if !shdPending(t, rp.pid, unix.SIGUSR2) {
		t.Error("SIGUSR2 is no longer pending after the restore")
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", rp.pid))
	if err != nil {
		t.Fatal(err)
	}
	if blk, err := strconv.ParseUint(statusField(string(st), "SigBlk"), 16, 64); err != nil || blk != uint64(r.Blocked) {
		t.Errorf("SigBlk %q after the restore, want %#x", statusField(string(st), "SigBlk"), uint64(r.Blocked))
	}
	// The SIGUSR1 handler runs on the alternate stack (it exits 3 otherwise).
	if err := unix.Kill(rp.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitTick(t, rp, "usr1", 2)
	requireProgress(t, rp, "main")
	checkSequence(t, rp, "main") // "usr1" repeats its count every tick
}

func TestRestoreUDP(t *testing.T) {
	t.Parallel()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	p := start(t, buildC(t, "udpecho"), strconv.Itoa(peer.LocalAddr().(*net.UDPAddr).Port))
	var r struct {
		Pid       int `json:"pid"`
		ConnPort  int `json:"conn_port"`
		BoundPort int `json:"bound_port"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "main")
	udpExchange(t, peer, r.ConnPort, r.BoundPort, 0, "before")

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "main")
	udpExchange(t, peer, r.ConnPort, r.BoundPort, p.ticks["main"], "after")
	requireProgress(t, rp, "main")
	checkSequence(t, rp)
}

// udpExchange waits for a "ping N" with N > after from connPort, then sends
// a datagram to boundPort and waits for its echo from there.
func udpExchange(t *testing.T, peer *net.UDPConn, connPort, boundPort int, after uint64, tag string) {
	t.Helper()
	if err := peer.SetReadDeadline(time.Now().Add(progressTimeout)); err != nil {
		t.Fatal(err)
	}
	defer peer.SetReadDeadline(time.Time{})
	buf := make([]byte, 512)
	for {
		n, from, err := peer.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("peer: no ping after tick %d: %v", after, err)
		}
		var seq uint64
		if from.Port == connPort && strings.HasPrefix(string(buf[:n]), "ping ") {
			if _, err := fmt.Sscanf(string(buf[:n]), "ping %d", &seq); err == nil && seq > after {
				break
			}
		}
	}
	msg := "pong " + tag
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: boundPort}
	if _, err := peer.WriteToUDP([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
	for {
		n, from, err := peer.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("peer: no echo of %q from port %d: %v", msg, boundPort, err)
		}
		if string(buf[:n]) == "echo "+msg {
			if from.Port != boundPort {
				t.Errorf("echo from %v, want port %d", from, boundPort)
			}
			return
		}
	}
}

func TestRestoreGoHello(t *testing.T) {
	t.Parallel()
	p := start(t, buildGo(t, "gohello"))
	var r struct {
		Pid      int    `json:"pid"`
		Threads  int    `json:"threads"`
		Slice    hexU64 `json:"slice"`
		SliceLen int    `json:"slice_len"`
	}
	waitReport(t, p, &r)
	keys := []string{"g0", "g1", "g2", "g3"}
	requireProgress(t, p, keys...)

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, keys...)
	checkSequence(t, rp)
}

// TestRestorePython round-trips an interpreter nobody here wrote.
func TestRestorePython(t *testing.T) {
	t.Parallel()
	needRoot(t)
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		if py, err = exec.LookPath("python3"); err != nil {
			t.Skip("no python3 on this machine")
		}
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", "counter.py"))
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, py, "-u", script)
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "count")

	rp := restoreFrom(t, p, dumpKill(t, p))
	frozen := rp.ticks["count"]
	requireProgress(t, rp, "count")
	// No reset and no skip: the counter goes on from where it was frozen.
	checkSequence(t, rp)
	t.Logf("counter frozen at %d, now %d", frozen, progress(t, rp)["count"])
}

// TestRestoreGoHTTP (F11): a plain Go HTTP server, whose listener Go 1.24+
// makes MPTCP, is dumped and restored, and serves again (it requests
// itself; the served key advances only on a right answer).
func TestRestoreGoHTTP(t *testing.T) {
	t.Parallel()
	p := start(t, buildGo(t, "gohttp"))
	var r struct {
		Pid      int `json:"pid"`
		Port     int `json:"port"`
		Protocol int `json:"protocol"`
	}
	waitReport(t, p, &r)
	t.Logf("listener protocol %d", r.Protocol)
	requireProgress(t, p, "served")

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "served")
	checkSequence(t, rp, "served")
}

// TestRestorePythonAsyncio (F12): an asyncio program, whose event loop
// holds a socketpair (the self-pipe) woken from another thread, with a
// TCP server it talks to, is restored and both go on working.
func TestRestorePythonAsyncio(t *testing.T) {
	t.Parallel()
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on this machine")
	}
	script, err := filepath.Abs(filepath.Join("testdata", "progs", "asyncioserve.py"))
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, py, "-u", script)
	var r struct {
		Pid  int `json:"pid"`
		Port int `json:"port"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "wake", "echo")

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "wake", "echo")
	checkSequence(t, rp, "wake", "echo")
}
