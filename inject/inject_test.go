package inject

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const counterC = `
#include <stdio.h>
volatile unsigned long counter;
int main(void) {
	printf("addr %p\n", (void *)&counter);
	fflush(stdout);
	for (;;) {
		counter++;
		if ((counter & 0xfffff) == 0) {
			printf("count %lu\n", counter);
			fflush(stdout);
		}
	}
}
`

func TestInjectCounter(t *testing.T) {
	bin := buildC(t, counterC)
	pr := start(t, bin)
	line, _ := pr.waitLine(t, 0, "address line", prefixed("addr "))
	addr := uintptr(field(t, line, "addr"))
	pr.waitLine(t, 0, "first count", prefixed("count "))

	fdsBefore := openFDs(t)
	tr := newTracer(t)
	p := seize(t, tr, pr.pid())
	if got := p.Threads(); len(got) != 1 || got[0] != pr.pid() {
		t.Fatalf("threads %v, want [%d]", got, pr.pid())
	}
	pid := uintptr(pr.pid())
	if r, err := p.Syscall(pr.pid(), unix.SYS_GETPID); err != nil || r != pid {
		t.Fatalf("injected getpid = %d, %v; want %d", r, err, pid)
	}
	if r, err := p.Syscall(pr.pid(), unix.SYS_GETTID); err != nil || r != pid {
		t.Fatalf("injected gettid = %d, %v; want %d", r, err, pid)
	}
	page, err := p.Syscall(pr.pid(), unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("hello from lazycr")
	if err := p.WriteMem(page+100, want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := p.ReadMem(page+100, got); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back %q, %v; want %q", got, err, want)
	}
	if _, err := p.Syscall(pr.pid(), unix.SYS_MUNMAP, page, 4096); err != nil {
		t.Fatal(err)
	}
	// An errno comes back wrapped: munmap of an unaligned address is EINVAL.
	_, err = p.Syscall(pr.pid(), unix.SYS_MUNMAP, page+1, 4096)
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "injected munmap: invalid argument") {
		t.Fatalf("munmap of unaligned address: %v, want EINVAL", err)
	}
	var c [8]byte
	if err := p.ReadMem(addr, c[:]); err != nil {
		t.Fatal(err)
	}
	frozen := uint64(c[0]) | uint64(c[1])<<8 | uint64(c[2])<<16 | uint64(c[3])<<24 | uint64(c[4])<<32 | uint64(c[5])<<40 | uint64(c[6])<<48 | uint64(c[7])<<56
	if frozen == 0 {
		t.Fatal("counter read as 0")
	}
	// Text pages are r-x: process_vm_readv fails there, /proc/PID/mem does not.
	regs, _ := p.Regs(pr.pid())
	text := make([]byte, 16)
	if err := p.ReadMem(uintptr(regs.Rip), text); err != nil {
		t.Fatalf("read text at rip: %v", err)
	}
	if _, err := p.Scratch(); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	assertRunning(t, pr.pid())
	from := pr.count()
	pr.waitLine(t, from, "a count past the frozen value", func(l string) bool {
		return strings.HasPrefix(l, "count ") && field(t, l, "count") > frozen
	})
	if maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pr.pid())); bytes.Count(maps, []byte("\n")) == 0 {
		t.Fatal("no maps")
	}
	tr.Close()
	if after := openFDs(t); after != fdsBefore {
		t.Errorf("open fds %d before, %d after", fdsBefore, after)
	}
}

func openFDs(tb testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	return len(ents)
}

const readerC = `
#include <stdio.h>
#include <unistd.h>
#include <errno.h>
#include <string.h>
int main(void) {
	char buf[64];
	printf("ready\n");
	fflush(stdout);
	ssize_t n = read(0, buf, sizeof buf);
	if (n < 0)
		printf("read error %s\n", strerror(errno));
	else
		printf("got %.*s\n", (int)n, buf);
	fflush(stdout);
	return 0;
}
`

const sleeperC = `
#include <stdio.h>
#include <time.h>
#include <errno.h>
#include <string.h>
int main(void) {
	struct timespec ts = {0, 300 * 1000 * 1000};
	printf("ready\n");
	fflush(stdout);
	int r = nanosleep(&ts, NULL);
	printf("woke %d %s\n", r, r ? strerror(errno) : "ok");
	fflush(stdout);
	return 0;
}
`

func TestInterruptedSyscallRestarts(t *testing.T) {
	t.Run("read", func(t *testing.T) {
		pr := start(t, buildC(t, readerC))
		pr.waitLine(t, 0, "ready", prefixed("ready"))
		pid := pr.pid()
		waitFor(t, "the reader to block in read", func() bool { return inSyscall(pid, pid, unix.SYS_READ) })
		tr := newTracer(t)
		p := seize(t, tr, pid)
		regs, _ := p.Regs(pid)
		if regs.Orig_rax != unix.SYS_READ || int64(regs.Rax) != -errRestartSys {
			t.Fatalf("frozen in read: orig_rax %d rax %d, want %d and -ERESTARTSYS", regs.Orig_rax, int64(regs.Rax), unix.SYS_READ)
		}
		if r, err := p.Syscall(pid, unix.SYS_GETPID); err != nil || int(r) != pid {
			t.Fatalf("getpid = %d, %v", r, err)
		}
		if _, err := p.Scratch(); err != nil {
			t.Fatal(err)
		}
		if err := p.Release(); err != nil {
			t.Fatal(err)
		}
		assertRunning(t, pid)
		waitFor(t, "the reader to block in read again", func() bool { return inSyscall(pid, pid, unix.SYS_READ) })
		if n := pr.count(); n != 1 {
			t.Fatalf("reader printed %q before any input", pr.tail())
		}
		if _, err := pr.stdin.Write([]byte("data")); err != nil {
			t.Fatal(err)
		}
		if l, _ := pr.waitLine(t, 1, "the read result", func(string) bool { return true }); l != "got data" {
			t.Fatalf("reader said %q, want %q", l, "got data")
		}
	})
	t.Run("nanosleep", func(t *testing.T) {
		pr := start(t, buildC(t, sleeperC))
		pr.waitLine(t, 0, "ready", prefixed("ready"))
		pid := pr.pid()
		waitFor(t, "the sleeper to block in clock_nanosleep", func() bool {
			return inSyscall(pid, pid, unix.SYS_CLOCK_NANOSLEEP) || inSyscall(pid, pid, unix.SYS_NANOSLEEP)
		})
		tr := newTracer(t)
		p := seize(t, tr, pid)
		regs, _ := p.Regs(pid)
		if int64(regs.Rax) != -errRestartRestartBlk {
			t.Fatalf("frozen in sleep: rax %d, want -ERESTART_RESTARTBLOCK", int64(regs.Rax))
		}
		if r, err := p.Syscall(pid, unix.SYS_GETPID); err != nil || int(r) != pid {
			t.Fatalf("getpid = %d, %v", r, err)
		}
		if err := p.Release(); err != nil {
			t.Fatal(err)
		}
		if l, _ := pr.waitLine(t, 1, "the wake-up", func(string) bool { return true }); l != "woke 0 ok" {
			t.Fatalf("sleeper said %q, want %q", l, "woke 0 ok")
		}
	})
}

const threadsC = `
#include <stdio.h>
#include <pthread.h>
#include <unistd.h>
#define N 8
volatile unsigned long counters[N];
static void *work(void *arg) {
	long i = (long)arg;
	for (;;)
		counters[i]++;
	return NULL;
}
int main(void) {
	pthread_t th[N];
	for (long i = 0; i < N; i++)
		pthread_create(&th[i], NULL, work, (void *)i);
	for (;;) {
		printf("c");
		for (int i = 0; i < N; i++)
			printf(" %lu", counters[i]);
		printf("\n");
		fflush(stdout);
		usleep(2000);
	}
}
`

func parseCounters(tb testing.TB, l string) []uint64 {
	var out []uint64
	for _, f := range strings.Fields(l)[1:] {
		var v uint64
		if _, err := fmt.Sscan(f, &v); err != nil {
			tb.Fatalf("line %q: %v", l, err)
		}
		out = append(out, v)
	}
	return out
}

func TestThreads(t *testing.T) {
	pr := start(t, buildC(t, threadsC, "-pthread"))
	pid := pr.pid()
	pr.waitLine(t, 0, "counters", prefixed("c "))
	waitFor(t, "9 threads", func() bool { tids, _ := listTasks(pid); return len(tids) == 9 })
	tr := newTracer(t)
	p := seize(t, tr, pid)
	tids := p.Threads()
	if len(tids) != 9 || tids[0] != pid {
		t.Fatalf("threads %v: want 9, leader %d first", tids, pid)
	}
	for _, tid := range tids {
		if r, err := p.Syscall(tid, unix.SYS_GETTID); err != nil || int(r) != tid {
			t.Fatalf("gettid on tid %d = %d, %v", tid, r, err)
		}
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	assertRunning(t, pid)
	l, i := pr.waitLine(t, pr.count(), "counters after release", prefixed("c "))
	first := parseCounters(t, l)
	pr.waitLine(t, i+1, "every counter to move", func(l string) bool {
		if !strings.HasPrefix(l, "c ") {
			return false
		}
		for k, v := range parseCounters(t, l) {
			if v <= first[k] {
				return false
			}
		}
		return true
	})
}

const churnC = `
#include <stdio.h>
#include <pthread.h>
static void *nothing(void *arg) { return arg; }
static void *spawner(void *arg) {
	for (;;) {
		pthread_t t;
		if (pthread_create(&t, NULL, nothing, NULL) == 0)
			pthread_join(t, NULL);
	}
	return arg;
}
int main(void) {
	pthread_t a, b;
	pthread_create(&a, NULL, spawner, NULL);
	pthread_create(&b, NULL, spawner, NULL);
	unsigned long n = 0;
	for (;;) {
		pthread_t t;
		if (pthread_create(&t, NULL, nothing, NULL) == 0)
			pthread_join(t, NULL);
		if (++n % 2000 == 0) {
			printf("n %lu\n", n);
			fflush(stdout);
		}
	}
}
`

func TestThreadChurn(t *testing.T) {
	pr := start(t, buildC(t, churnC, "-pthread"))
	pid := pr.pid()
	pr.waitLine(t, 0, "progress", prefixed("n "))
	tr := newTracer(t)
	for range 5 {
		p := seize(t, tr, pid)
		tids := p.Threads()
		known := map[int]bool{}
		for _, tid := range tids {
			known[tid] = true
		}
		listed, err := listTasks(pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, tid := range listed {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
			if err != nil {
				continue
			}
			s := string(b)
			if st := s[strings.LastIndexByte(s, ')')+2]; st != 't' || !known[tid] {
				t.Errorf("tid %d: state %c, seized %v: a thread escaped the freeze", tid, st, known[tid])
			}
		}
		for _, tid := range tids {
			if r, err := p.Syscall(tid, unix.SYS_GETTID); err != nil || int(r) != tid {
				t.Fatalf("gettid on tid %d = %d, %v", tid, r, err)
			}
		}
		if err := p.Release(); err != nil {
			t.Fatal(err)
		}
	}
	assertRunning(t, pid)
	l, i := pr.waitLine(t, pr.count(), "progress after release", prefixed("n "))
	n := field(t, l, "n")
	pr.waitLine(t, i+1, "more progress", func(l string) bool { return strings.HasPrefix(l, "n ") && field(t, l, "n") > n })
}

const signalC = `
#include <stdio.h>
#include <signal.h>
#include <string.h>
volatile sig_atomic_t handled;
static void on_usr1(int sig) { handled++; }
int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	unsigned long n = 0;
	for (;;) {
		if ((++n & 0xfffff) == 0) {
			printf("n %lu h %d\n", n, (int)handled);
			fflush(stdout);
		}
	}
}
`

func TestSignalDuringFreeze(t *testing.T) {
	pr := start(t, buildC(t, signalC))
	pid := pr.pid()
	pr.waitLine(t, 0, "progress", prefixed("n "))
	tr := newTracer(t)
	p := seize(t, tr, pid)
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	shared, err := p.PendingSignals(pid, true)
	if err != nil || len(shared) != 1 || siginfoSigno(shared[0]) != int(unix.SIGUSR1) {
		t.Fatalf("shared pending %d signals, %v; want SIGUSR1", len(shared), err)
	}
	// Resuming the thread for the injection meets the signal: it is
	// suppressed and kept.
	if _, err := p.Syscall(pid, unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	own, err := p.PendingSignals(pid, false)
	if err != nil || len(own) != 1 || siginfoSigno(own[0]) != int(unix.SIGUSR1) {
		t.Fatalf("thread pending %d signals, %v; want the suppressed SIGUSR1", len(own), err)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	assertRunning(t, pid)
	_, i := pr.waitLine(t, pr.count(), "the handler to have run", func(l string) bool {
		return strings.HasPrefix(l, "n ") && field(t, l, "h") > 0
	})
	// Every re-queued signal is taken before the thread returns to user
	// space, so later lines tell the final count.
	for range 3 {
		l, j := pr.waitLine(t, i+1, "more progress", prefixed("n "))
		if h := field(t, l, "h"); h != 1 {
			t.Fatalf("handler ran %d times, want 1", h)
		}
		i = j
	}
}

func TestSpawn(t *testing.T) {
	requireRoot(t)
	tr := newTracer(t)
	for _, bin := range []string{"/bin/true", "/proc/self/exe"} {
		t.Run(bin, func(t *testing.T) {
			p, err := tr.Spawn(bin, []string{bin, "-test.run=^$"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := p.Syscall(p.Pid, unix.SYS_GETPID); err != nil || int(r) != p.Pid {
				t.Fatalf("getpid = %d, %v; want %d", r, err, p.Pid)
			}
			const at = 0x10000000
			a, err := p.MapScratch(at)
			if err != nil || a != at {
				t.Fatalf("map scratch at %#x: %#x, %v", at, a, err)
			}
			if r, err := p.Syscall(p.Pid, unix.SYS_GETPID); err != nil || int(r) != p.Pid {
				t.Fatalf("getpid through the moved gadget = %d, %v", r, err)
			}
			maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid))
			if !bytes.Contains(maps, []byte("10000000-10002000 rwxp")) {
				t.Fatalf("no scratch mapping at %#x:\n%s", at, maps)
			}
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("pid %d still exists after Kill: %v", p.Pid, err)
			}
		})
	}
	t.Run("release runs it", func(t *testing.T) {
		p, err := tr.Spawn("/bin/sh", []string{"sh", "-c", "exit 7"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Syscall(p.Pid, unix.SYS_GETPID); err != nil {
			t.Fatal(err)
		}
		if err := p.Release(); err != nil {
			t.Fatal(err)
		}
		var ws unix.WaitStatus
		for {
			_, err = unix.Wait4(p.Pid, &ws, 0, nil)
			if err != unix.EINTR {
				break
			}
		}
		if err != nil || !ws.Exited() || ws.ExitStatus() != 7 {
			t.Fatalf("released stub: wait %v, status %v; want exit 7", err, ws)
		}
	})
}

const stateC = `
#define _GNU_SOURCE
#include <stdio.h>
#include <signal.h>
#include <cpuid.h>
#include <sys/rseq.h>
int main(void) {
	unsigned a, b, c, d;
	__cpuid_count(0xd, 0, a, b, c, d);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	raise(SIGUSR2);
	printf("xsave %u rseq %p\n", b, (void *)((char *)__builtin_thread_pointer() + __rseq_offset));
	fflush(stdout);
	for (;;)
		;
}
`

func TestThreadState(t *testing.T) {
	pr := start(t, buildC(t, stateC))
	pid := pr.pid()
	line, _ := pr.waitLine(t, 0, "state line", prefixed("xsave "))
	tr := newTracer(t)
	p := seize(t, tr, pid)

	xs, err := p.XState(pid)
	if err != nil {
		t.Fatal(err)
	}
	if want := int(field(t, line, "xsave")); len(xs) != want {
		t.Errorf("xstate %d bytes, CPUID says %d", len(xs), want)
	}
	t.Logf("xstate %d bytes", len(xs))
	if err := p.SetXState(pid, xs); err != nil {
		t.Errorf("write xstate back: %v", err)
	}
	regs, err := p.Regs(pid)
	if err != nil || regs.Fs_base == 0 {
		t.Errorf("fs_base %#x, %v; want the TLS pointer", regs.Fs_base, err)
	}
	mask, err := p.SigMask(pid)
	if err != nil || mask&(1<<(unix.SIGUSR2-1)) == 0 {
		t.Errorf("mask %#x, %v; want SIGUSR2 blocked", mask, err)
	}
	pend, err := p.PendingSignals(pid, false)
	if err != nil || len(pend) != 1 || siginfoSigno(pend[0]) != int(unix.SIGUSR2) {
		t.Errorf("pending %d, %v; want SIGUSR2", len(pend), err)
	}
	rs, err := p.Rseq(pid)
	if err != nil || rs.Pointer != uintptr(field(t, line, "rseq")) || rs.Size < 20 || rs.Signature == 0 {
		t.Errorf("rseq %+v, %v; want the area at %#x", rs, err, field(t, line, "rseq"))
	}
	t.Logf("rseq %+v", rs)
	if err := p.SetSigMask(pid, mask); err != nil {
		t.Error(err)
	}
}

func TestSeizeErrors(t *testing.T) {
	requireRoot(t)
	tr := newTracer(t)

	gone := exec.Command("/bin/true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Seize(gone.Process.Pid); !errors.Is(err, ErrNoProcess) {
		t.Errorf("seize of a reaped pid: %v, want ErrNoProcess", err)
	}

	zombie := exec.Command("/bin/true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	zpid := zombie.Process.Pid
	waitFor(t, "the child to become a zombie", func() bool {
		st, err := readStatus(zpid)
		return err == nil && st.state == 'Z'
	})
	if _, err := tr.Seize(zpid); !errors.Is(err, ErrZombie) {
		t.Errorf("seize of a zombie: %v, want ErrZombie", err)
	}
	_ = zombie.Wait()

	pr := start(t, buildC(t, counterC))
	pid := pr.pid()
	pr.waitLine(t, 0, "progress", prefixed("count "))
	p := seize(t, tr, pid)
	other := newTracer(t)
	if _, err := other.Seize(pid); !errors.Is(err, ErrTraced) {
		t.Errorf("seize of a traced process: %v, want ErrTraced", err)
	}
	if st := statusField(t, pid, "State"); !strings.HasPrefix(st, "t") {
		t.Errorf("frozen process state %q, want t (tracing stop)", st)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(); !errors.Is(err, ErrReleased) {
		t.Errorf("second release: %v, want ErrReleased", err)
	}
	assertRunning(t, pid)
	if st := statusField(t, pid, "State"); !strings.HasPrefix(st, "R") && !strings.HasPrefix(st, "S") {
		t.Errorf("released process state %q", st)
	}
}

func BenchmarkInjectedSyscall(b *testing.B) {
	pr := start(b, buildC(b, counterC))
	pr.waitLine(b, 0, "progress", prefixed("count "))
	tr := newTracer(b)
	p := seize(b, tr, pr.pid())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := p.Syscall(pr.pid(), unix.SYS_GETPID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/syscall")
}

// BenchmarkInjectedSyscallOnTracer runs the loop on the tracer thread, without
// the hop from the benchmark goroutine.
func BenchmarkInjectedSyscallOnTracer(b *testing.B) {
	pr := start(b, buildC(b, counterC))
	pr.waitLine(b, 0, "progress", prefixed("count "))
	tr := newTracer(b)
	p := seize(b, tr, pr.pid())
	b.ReportAllocs()
	b.ResetTimer()
	err := tr.Do(func() error {
		for b.Loop() {
			if _, err := p.Syscall(pr.pid(), unix.SYS_GETPID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/syscall")
}

func TestSignalDuringFreezeUntouchedThread(t *testing.T) {
	pr := start(t, buildC(t, signalC))
	pid := pr.pid()
	pr.waitLine(t, 0, "progress", prefixed("n "))
	tr := newTracer(t)
	p := seize(t, tr, pid)
	if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// No injection: the signal stays queued in the kernel.
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	_, i := pr.waitLine(t, pr.count(), "the handler to have run", func(l string) bool {
		return strings.HasPrefix(l, "n ") && field(t, l, "h") > 0
	})
	if l, _ := pr.waitLine(t, i+1, "more progress", prefixed("n ")); field(t, l, "h") != 1 {
		t.Fatalf("handler ran %d times, want 1", field(t, l, "h"))
	}
}

func TestGroupStoppedStaysStopped(t *testing.T) {
	pr := start(t, buildC(t, counterC))
	pid := pr.pid()
	pr.waitLine(t, 0, "progress", prefixed("count "))
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group stop", func() bool { return strings.HasPrefix(statusField(t, pid, "State"), "T") })
	tr := newTracer(t)
	p := seize(t, tr, pid)
	if r, err := p.Syscall(pid, unix.SYS_GETPID); err != nil || int(r) != pid {
		t.Fatalf("getpid = %d, %v", r, err)
	}
	if err := p.Release(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group stop again", func() bool { return strings.HasPrefix(statusField(t, pid, "State"), "T") })
	n := pr.count()
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pr.waitLine(t, n, "progress after SIGCONT", prefixed("count "))
}

func TestKillSeized(t *testing.T) {
	pr := start(t, buildC(t, threadsC, "-pthread"))
	pr.waitLine(t, 0, "progress", prefixed("c "))
	tr := newTracer(t)
	p := seize(t, tr, pr.pid())
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	// The test process is both parent and tracer, so Kill reaped it.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pr.pid())); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid %d still exists after Kill: %v", pr.pid(), err)
	}
}

// TestDetachWithRegs leaves a spawned stub at a `syscall` instruction of its
// vDSO with rax = exit_group, the way restore leaves a rebuilt process.
func TestDetachWithRegs(t *testing.T) {
	requireRoot(t)
	tr := newTracer(t)
	p, err := tr.Spawn("/bin/true", []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var g uintptr
	err = tr.Do(func() error {
		p.gadget = 0
		p.threads[0].saved.Orig_rax = ^uint64(0) // search the mappings, not rip-2
		g, err = p.gadgetAddr()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.Regs(p.Pid)
	r.Rip, r.Rax, r.Rdi, r.Orig_rax = uint64(g), unix.SYS_EXIT_GROUP, 5, ^uint64(0)
	if err := p.SetRegs(p.Pid, r); err != nil {
		t.Fatal(err)
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	var ws unix.WaitStatus
	for {
		_, err = unix.Wait4(p.Pid, &ws, 0, nil)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil || !ws.Exited() || ws.ExitStatus() != 5 {
		t.Fatalf("detached stub: wait %v, status %v; want exit 5", err, ws)
	}
}

func TestInjectedExit(t *testing.T) {
	requireRoot(t)
	tr := newTracer(t)
	p, err := tr.Spawn("/bin/true", []string{"true"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Syscall(p.Pid, unix.SYS_EXIT_GROUP, 3)
	if !errors.Is(err, ErrNoProcess) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", p.Pid)) || !strings.Contains(err.Error(), "status 3") {
		t.Fatalf("injected exit_group: %v, want ErrNoProcess naming pid %d and status 3", err, p.Pid)
	}
	if _, err := p.Syscall(p.Pid, unix.SYS_GETPID); !errors.Is(err, ErrNoProcess) {
		t.Fatalf("syscall after exit: %v, want ErrNoProcess", err)
	}
	if err := p.Release(); err != nil {
		t.Fatalf("release of an exited process: %v", err)
	}
}
