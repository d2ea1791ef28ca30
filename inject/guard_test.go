package inject

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// guardC spins 4 threads and main on counters it prints the address of:
// any instruction the process runs changes them.
const guardC = `
#include <stdio.h>
#include <pthread.h>
#define N 5
volatile unsigned long counters[N];
static void *work(void *arg) {
	long i = (long)arg;
	for (;;)
		counters[i]++;
	return NULL;
}
int main(void) {
	pthread_t th[N];
	for (long i = 1; i < N; i++)
		pthread_create(&th[i], NULL, work, (void *)i);
	printf("addr %p\n", (void *)counters);
	fflush(stdout);
	work(0);
}
`

const guardN = 5

func startGuardProg(t *testing.T) (*prog, uintptr) {
	t.Helper()
	pr := start(t, buildC(t, guardC, "-pthread"))
	l, _ := pr.waitLine(t, 0, "the counters' address", prefixed("addr "))
	addr, err := strconv.ParseUint(strings.Fields(l)[1], 0, 64)
	if err != nil {
		t.Fatalf("line %q: %v", l, err)
	}
	// Every thread is spinning once each counter moved.
	waitFor(t, "every thread to run", func() bool {
		c := readCounters(t, pr.pid(), uintptr(addr))
		for i := 0; i < len(c); i += 8 {
			if binary.LittleEndian.Uint64(c[i:]) == 0 {
				return false
			}
		}
		return true
	})
	return pr, uintptr(addr)
}

func readCounters(t *testing.T, pid int, addr uintptr) []byte {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8*guardN)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		t.Fatal(err)
	}
	return b
}

// taskStates returns the state letter of every thread of pid.
func taskStates(t *testing.T, pid int) string {
	t.Helper()
	tids, err := listTasks(pid)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue
		}
		s := string(b)
		out = append(out, s[strings.LastIndexByte(s, ')')+2])
	}
	return string(out)
}

// requireStoppedUntraced waits until every thread of pid is group-stopped
// (T) and untraced, and checks that the counters still hold frozen.
func requireStoppedUntraced(t *testing.T, pid int, addr uintptr, frozen []byte) {
	t.Helper()
	waitFor(t, "every thread untraced and stopped (T)", func() bool {
		return statusField(t, pid, "TracerPid") == "0" && strings.Trim(taskStates(t, pid), "T") == ""
	})
	if got := readCounters(t, pid, addr); !bytes.Equal(got, frozen) {
		t.Fatalf("counters moved after the freeze: the process ran instructions of its own\nfrozen %x\nnow    %x", frozen, got)
	}
}

// requireRunsAgain sends SIGCONT and waits until the counters move.
func requireRunsAgain(t *testing.T, pid int, addr uintptr, frozen []byte) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the counters to move after SIGCONT", func() bool { return !bytes.Equal(readCounters(t, pid, addr), frozen) })
}

// TestGuardTracerDeath: with the guard queued, SIGKILL of the tracer (a
// helper process running guardTracer) leaves every thread stopped before it
// runs one instruction: the counters keep the values they had at the
// freeze. Without the guard the threads run on at once.
func TestGuardTracerDeath(t *testing.T) {
	for _, inject := range []bool{false, true} {
		t.Run(fmt.Sprintf("injected=%v", inject), func(t *testing.T) {
			pr, addr := startGuardProg(t)
			pid := pr.pid()
			cmd := exec.Command(os.Args[0], "-test.run=^TestGuardTracerHelper$", "-test.v")
			cmd.Env = append(os.Environ(), fmt.Sprintf("LAZYCR_GUARD_HELPER=%d,%#x,%v", pid, addr, inject))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			sc := bufio.NewScanner(out)
			var frozen []byte
			for sc.Scan() {
				if h, ok := strings.CutPrefix(sc.Text(), "frozen "); ok {
					if frozen, err = hex.DecodeString(h); err != nil {
						t.Fatal(err)
					}
					break
				}
			}
			if frozen == nil {
				t.Fatalf("the tracer helper ended before it froze pid %d", pid)
			}
			if err := cmd.Process.Kill(); err != nil { // SIGKILL of the tracer
				t.Fatal(err)
			}
			requireStoppedUntraced(t, pid, addr, frozen)
			requireRunsAgain(t, pid, addr, frozen)
		})
	}
}

// TestGuardTracerHelper is the tracer TestGuardTracerDeath kills: it
// freezes the pid it is given, optionally injects a syscall into every
// thread, queues the guard, prints the counters and waits to be killed.
func TestGuardTracerHelper(t *testing.T) {
	arg := os.Getenv("LAZYCR_GUARD_HELPER")
	if arg == "" {
		t.Skip("run by TestGuardTracerDeath")
	}
	var pid int
	var addr uintptr
	var inject bool
	if _, err := fmt.Sscanf(arg, "%d,%v,%t", &pid, &addr, &inject); err != nil {
		t.Fatal(err)
	}
	tr := newTracer(t)
	p, err := tr.Seize(pid)
	if err != nil {
		t.Fatal(err)
	}
	if inject {
		// As dump does: threads left at syscall-exit stops.
		for _, tid := range p.Threads() {
			if _, err := p.Syscall(tid, unix.SYS_GETTID); err != nil {
				t.Fatal(err)
			}
		}
	}
	frozen := make([]byte, 8*guardN)
	if err := p.ReadMem(addr, frozen); err != nil {
		t.Fatal(err)
	}
	if err := p.Guard(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("frozen %x\n", frozen)
	time.Sleep(10 * time.Minute) // until SIGKILL; never a synchronisation
}

// TestGuardReleaseSwallowed: Release takes the guard back, whether or not
// an injected syscall met it first: the process runs on, never stopped.
func TestGuardReleaseSwallowed(t *testing.T) {
	for _, inject := range []bool{false, true} {
		t.Run(fmt.Sprintf("injected=%v", inject), func(t *testing.T) {
			pr, addr := startGuardProg(t)
			pid := pr.pid()
			tr := newTracer(t)
			p := seize(t, tr, pid)
			if err := p.Guard(); err != nil {
				t.Fatal(err)
			}
			if inject {
				if _, err := p.Syscall(pid, unix.SYS_GETPID); err != nil {
					t.Fatal(err)
				}
				own, err := p.PendingSignals(pid, false)
				if err != nil || len(own) != 0 {
					t.Fatalf("suppressed signals %d, %v: the guard must not be kept for re-delivery", len(own), err)
				}
			}
			frozen := make([]byte, 8*guardN)
			if err := p.ReadMem(addr, frozen); err != nil {
				t.Fatal(err)
			}
			if err := p.Release(); err != nil {
				t.Fatal(err)
			}
			assertRunning(t, pid)
			waitFor(t, "the counters to move", func() bool { return !bytes.Equal(readCounters(t, pid, addr), frozen) })
			if s := taskStates(t, pid); strings.ContainsAny(s, "tT") {
				t.Fatalf("thread states %q after Release: the guard stopped the process", s)
			}
			if pnd := statusField(t, pid, "ShdPnd"); strings.Trim(pnd, "0") != "" {
				t.Fatalf("ShdPnd %s after Release: a signal is left pending", pnd)
			}
		})
	}
}

// TestDetachStopped: the process ends untraced and stopped with its
// counters as frozen, and SIGCONT lets it run on.
func TestDetachStopped(t *testing.T) {
	pr, addr := startGuardProg(t)
	pid := pr.pid()
	tr := newTracer(t)
	p := seize(t, tr, pid)
	if err := p.Guard(); err != nil {
		t.Fatal(err)
	}
	for _, tid := range p.Threads() {
		if _, err := p.Syscall(tid, unix.SYS_GETTID); err != nil {
			t.Fatal(err)
		}
	}
	frozen := make([]byte, 8*guardN)
	if err := p.ReadMem(addr, frozen); err != nil {
		t.Fatal(err)
	}
	if err := p.DetachStopped(); err != nil {
		t.Fatal(err)
	}
	requireStoppedUntraced(t, pid, addr, frozen)
	requireRunsAgain(t, pid, addr, frozen)
}

// TestGuardDiscardedBySIGCONT: a SIGCONT sent to the frozen process
// discards the pending guard (signal(7)). Release then has nothing to take
// back and succeeds; DetachStopped queues it again, so the process still
// ends stopped.
func TestGuardDiscardedBySIGCONT(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepStopped=%v", keep), func(t *testing.T) {
			pr, addr := startGuardProg(t)
			pid := pr.pid()
			tr := newTracer(t)
			p := seize(t, tr, pid)
			if err := p.Guard(); err != nil {
				t.Fatal(err)
			}
			if err := unix.Kill(pid, unix.SIGCONT); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the guard to be discarded", func() bool {
				n, err := shdPnd(pid)
				return err == nil && n&(1<<(unix.SIGSTOP-1)) == 0
			})
			frozen := make([]byte, 8*guardN)
			if err := p.ReadMem(addr, frozen); err != nil {
				t.Fatal(err)
			}
			if keep {
				if err := p.DetachStopped(); err != nil {
					t.Fatal(err)
				}
				requireStoppedUntraced(t, pid, addr, frozen)
				requireRunsAgain(t, pid, addr, frozen)
				return
			}
			if err := p.Release(); err != nil {
				t.Fatal(err)
			}
			assertRunning(t, pid)
			waitFor(t, "the counters to move", func() bool { return !bytes.Equal(readCounters(t, pid, addr), frozen) })
		})
	}
}

// TestRefreshGuard: after a SIGCONT discarded the guard, RefreshGuard
// queues it again (and says so); while it is pending it does nothing.
func TestRefreshGuard(t *testing.T) {
	pr, _ := startGuardProg(t)
	pid := pr.pid()
	tr := newTracer(t)
	p := seize(t, tr, pid)
	if again, err := p.RefreshGuard(); again || err != nil {
		t.Fatalf("RefreshGuard before Guard: %v, %v", again, err)
	}
	if err := p.Guard(); err != nil {
		t.Fatal(err)
	}
	stopPending := func() bool {
		n, err := shdPnd(pid)
		if err != nil {
			t.Fatal(err)
		}
		return n&(1<<(unix.SIGSTOP-1)) != 0
	}
	if again, err := p.RefreshGuard(); again || err != nil || !stopPending() {
		t.Fatalf("RefreshGuard with the guard pending: %v, %v", again, err)
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the guard to be discarded", func() bool { return !stopPending() })
	if again, err := p.RefreshGuard(); !again || err != nil || !stopPending() {
		t.Fatalf("RefreshGuard after SIGCONT: %v, %v; want it queued again", again, err)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	assertRunning(t, pid)
	if _, err := p.RefreshGuard(); !errors.Is(err, ErrReleased) {
		t.Fatalf("RefreshGuard after Release: %v, want ErrReleased", err)
	}
}
