package integration

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// clockProg prints the process's CLOCK_MONOTONIC and CLOCK_BOOTTIME every
// 20 ms.
const clockProg = `
import time
while True:
    print("clocks", time.clock_gettime_ns(time.CLOCK_MONOTONIC), time.clock_gettime_ns(time.CLOCK_BOOTTIME), flush=True)
    time.sleep(0.02)
`

// TestTimeNamespaceKept: a python loop started in a time namespace whose
// clocks run a day ahead (`unshare -T --monotonic=86400 --boottime=86400`,
// as a container runtime with time namespaces starts one) is dumped and
// restored, keeping its pid and with --new-pid: it must find itself in a
// time namespace with the same offsets, and its clocks, as it prints them
// after the restore, still a day ahead of the test's. Before, it was
// restored in lazycr's time namespace: its CLOCK_MONOTONIC went back by a
// day, silently.
func TestTimeNamespaceKept(t *testing.T) {
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	const day = 86400 * time.Second
	for _, extra := range [][]string{nil, {"--new-pid"}} {
		t.Run(strings.Join(append([]string{"restore"}, extra...), " "), func(t *testing.T) {
			p := startCmd(t, exec.Command("unshare", "-T", "--monotonic=86400", "--boottime=86400", "--fork", py, "-u", "-c", clockProg))
			var pid int
			waitFor(t, "the clock loop under unshare", func() bool { pid = childOf(p.pid); return pid != 0 && clockLines(t, p.outPath) > 2 })
			checkTimeOffsets(t, pid, day)
			dir := dumpKill(t, adopt(t, pid))
			before := clockLines(t, p.outPath)
			o, e, code := runLazycr(t, append([]string{"restore", "-D", dir}, extra...)...)
			if code != 0 {
				t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
			}
			got, err := strconv.Atoi(strings.TrimSpace(o))
			if err != nil {
				t.Fatalf("restore printed %q", o)
			}
			adopt(t, got)
			checkTimeOffsets(t, got, day)
			waitFor(t, "lines after the restore", func() bool { return clockLines(t, p.outPath) > before+3 })
			var now unix.Timespec
			if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p.outPath)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			var mono, boot int64
			if _, err := fmt.Sscanf(lines[len(lines)-1], "clocks %d %d", &mono, &boot); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			// The line was printed before the test read the clock: the
			// process's clock is ahead by the day less that little while
			// (an hour is far more than any wait here, far less than the
			// day a lost namespace takes away).
			ahead := time.Duration(mono - now.Nano())
			if ahead > day || ahead < day-time.Hour {
				t.Errorf("after the restore the process's CLOCK_MONOTONIC is %v ahead of the test's, want just under %v", ahead, day)
			}
		})
	}
}

// TestTimeNamespaceUnsharedRefused: a process that called
// unshare(CLONE_NEWTIME) without forking since (its children would start in
// a time namespace it is not in) is refused, naming that namespace, and
// keeps running.
func TestTimeNamespaceUnsharedRefused(t *testing.T) {
	needRoot(t)
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not found")
	}
	prog := "import ctypes\nif ctypes.CDLL(None, use_errno=True).unshare(0x80) != 0: raise OSError(ctypes.get_errno(), 'unshare')\n" + clockProg
	p := startCmd(t, exec.Command(py, "-u", "-c", prog))
	waitFor(t, "the clock loop", func() bool { return clockLines(t, p.outPath) > 2 })
	o, e, code := runLazycr(t, "dump", "--pid", strconv.Itoa(p.pid), "-D", t.TempDir()+"/img")
	if code == 0 || !strings.Contains(e, "unshared a time namespace") {
		t.Fatalf("lazycr dump of a process with time_for_children of its own: exit %d, want a refusal naming it\n%s%s", code, o, e)
	}
	n := clockLines(t, p.outPath)
	waitFor(t, "the loop to go on after the refusal", func() bool { return clockLines(t, p.outPath) > n+2 })
}

// checkTimeOffsets checks that pid is in a time namespace whose clocks are
// off by d.
func checkTimeOffsets(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/timens_offsets", pid))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("monotonic %d 0 boottime %d 0", int64(d/time.Second), int64(d/time.Second))
	if got := strings.Join(strings.Fields(string(b)), " "); got != want {
		t.Errorf("pid %d: timens_offsets %q, want %q", pid, got, want)
	}
}

// clockLines counts the complete lines of file.
func clockLines(t *testing.T, file string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestTimerfdAbsoluteDeadline: an absolute CLOCK_MONOTONIC timerfd keeps
// its deadline across a dump and a restore on the same boot, as a blocked
// clock_nanosleep(TIMER_ABSTIME) does (QA3 R9: it was re-armed with the
// time it had left at the dump, so it fired the downtime late). The
// program prints how far its timer's deadline drifted; the test makes a
// downtime of a second between dump and restore.
func TestTimerfdAbsoluteDeadline(t *testing.T) {
	needRoot(t)
	p := startCmd(t, exec.Command(buildC(t, "abstimerfd")))
	waitFor(t, "the timer program", func() bool { return clockLines(t, p.outPath) > 2 })
	dir := dumpKill(t, p)
	const downtime = time.Second
	time.Sleep(downtime) // the downtime the timer must not add
	before := clockLines(t, p.outPath)
	if o, e, code := runLazycr(t, "restore", "-D", dir); code != 0 {
		t.Fatalf("lazycr restore: exit %d\n%s%s", code, o, e)
	}
	q := adopt(t, p.pid)
	waitFor(t, "lines after the restore", func() bool { return clockLines(t, p.outPath) > before+2 })
	requireRunning(t, q.pid)
	b, err := os.ReadFile(p.outPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var drift int64
	if _, err := fmt.Sscanf(lines[len(lines)-1], "drift %d", &drift); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if d := time.Duration(drift); d > downtime/2 || d < -downtime/2 {
		t.Errorf("after a %v downtime the timer's deadline moved by %v, want it kept", downtime, d)
	}
}
