package inject

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// freeIDs returns n pids not in use, well above the last one handed out so
// that the kernel will not give them to anyone else during the test.
func freeIDs(tb testing.TB, n int) []int {
	tb.Helper()
	read := func(name string) int {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		v, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			tb.Fatal(err)
		}
		return v
	}
	last, max := read("/proc/sys/kernel/ns_last_pid"), read("/proc/sys/kernel/pid_max")
	var ids []int
	for id := last + 5000; len(ids) < n; id++ {
		if id >= max {
			id = 300
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", id)); errors.Is(err, os.ErrNotExist) {
			ids = append(ids, id)
		}
	}
	return ids
}

// counterLoop is `lock inc qword [rdi]; jmp .-6`: a thread left there counts
// in the word rdi points to.
var counterLoop = []byte{0xf0, 0x48, 0xff, 0x07, 0xeb, 0xfa}

func spawnStub(tb testing.TB, tr *Tracer) *Process {
	tb.Helper()
	p, err := tr.Spawn("/bin/true", []string{"true"}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := p.Kill(); err != nil && !errors.Is(err, ErrReleased) && !errors.Is(err, ErrClosed) {
			tb.Errorf("kill pid %d: %v", p.Pid, err)
		}
	})
	return p
}

// reap kills a process we detached from and waits for it (it is our child).
func reap(tb testing.TB, pid int) {
	tb.Helper()
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if err != unix.EINTR {
			return
		}
	}
}

func TestCloneThread(t *testing.T) {
	requireRoot(t)
	tr := newTracer(t)
	p := spawnStub(t, tr)
	scratch, err := p.Scratch()
	if err != nil {
		t.Fatal(err)
	}
	page, err := p.Syscall(p.Pid, unix.SYS_MMAP, 0, pageSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMem(page, counterLoop); err != nil {
		t.Fatal(err)
	}

	ids := freeIDs(t, 2)
	a, err := p.CloneThread(p.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.CloneThread(p.Pid, ids[0])
	if err != nil || b != ids[0] {
		t.Fatalf("clone thread with set_tid %d: %d, %v", ids[0], b, err)
	}
	c, err := p.CloneThread(b, ids[1]) // from a thread made by CloneThread
	if err != nil || c != ids[1] {
		t.Fatalf("clone thread from tid %d with set_tid %d: %d, %v", b, ids[1], c, err)
	}
	_, err = p.CloneThread(p.Pid, p.Pid)
	if !errors.Is(err, unix.EEXIST) || !strings.Contains(err.Error(), strconv.Itoa(p.Pid)) {
		t.Fatalf("clone thread with a taken tid: %v, want EEXIST naming %d", err, p.Pid)
	}

	want := []int{p.Pid, a, b, c}
	tasks, err := listTasks(p.Pid)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(tasks)
	if sorted := slices.Sorted(slices.Values(want)); !slices.Equal(tasks, sorted) {
		t.Fatalf("/proc/%d/task lists %v, want %v", p.Pid, tasks, sorted)
	}
	if got := p.Threads(); !slices.Equal(got, want) {
		t.Fatalf("Threads() = %v, want %v", got, want)
	}
	for _, tid := range want[1:] {
		r, err := p.Regs(tid)
		if err != nil || r.Rax != 0 || uintptr(r.Rip) != scratch+pageSize+2 {
			t.Fatalf("tid %d: registers rax %#x rip %#x, %v; want rax 0 rip %#x", tid, r.Rax, r.Rip, err, scratch+pageSize+2)
		}
		if got, err := p.Syscall(tid, unix.SYS_GETTID); err != nil || int(got) != tid {
			t.Fatalf("gettid injected on tid %d = %d, %v", tid, got, err)
		}
		if err := p.SetSigMask(tid, 1<<(unix.SIGUSR1-1)); err != nil {
			t.Fatal(err)
		}
		if x, err := p.XState(tid); err != nil {
			t.Fatal(err)
		} else if err := p.SetXState(tid, x); err != nil {
			t.Fatal(err)
		}
	}

	// Every thread counts in its own word; detach and watch them all run.
	counters := page + 2048
	for i, tid := range want {
		r, err := p.Regs(tid)
		if err != nil {
			t.Fatal(err)
		}
		r.Rip, r.Rdi, r.Orig_rax = uint64(page), uint64(counters)+uint64(8*i), ^uint64(0)
		if err := p.SetRegs(tid, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Detach(); err != nil {
		t.Fatal(err)
	}
	defer reap(t, p.Pid)
	buf := make([]byte, 8*len(want))
	waitFor(t, "every thread to count", func() bool {
		n, err := unix.ProcessVMReadv(p.Pid, []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}},
			[]unix.RemoteIovec{{Base: uintptr(counters), Len: len(buf)}}, 0)
		if err != nil || n != len(buf) {
			t.Fatalf("read counters of pid %d: %d, %v", p.Pid, n, err)
		}
		for i := range want {
			if binary.LittleEndian.Uint64(buf[8*i:]) == 0 {
				return false
			}
		}
		return true
	})
	assertRunning(t, p.Pid)
	if m := statusField(t, b, "SigBlk"); m != "0000000000000200" {
		t.Errorf("tid %d: SigBlk %s, want the mask set through ptrace", b, m)
	}
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(maps), fmt.Sprintf("%x-", scratch)) {
		t.Errorf("scratch at %#x still mapped after Detach:\n%s", scratch, maps)
	}
}

func TestCloneThreadKill(t *testing.T) {
	requireRoot(t)
	tr := newTracer(t)
	p := spawnStub(t, tr)
	for range 3 {
		if _, err := p.CloneThread(p.Pid, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid %d still exists after Kill: %v", p.Pid, err)
	}
}

// subreaper makes the test process the reaper of orphans (the copies whose
// stub was killed), so that it can reap them and check their PPid.
func subreaper(tb testing.TB) {
	tb.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

func TestCloneProcess(t *testing.T) {
	requireRoot(t)
	subreaper(t)
	tr := newTracer(t)
	stub := spawnStub(t, tr)
	if _, err := stub.CloneProcess(os.Getpid(), 0); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("clone process with a taken pid: %v, want EEXIST", err)
	}
	id := freeIDs(t, 1)[0]
	p, err := stub.CloneProcess(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if p.Pid != id {
		t.Fatalf("copy has pid %d, want %d", p.Pid, id)
	}
	if pp := statusField(t, id, "PPid"); pp != strconv.Itoa(stub.Pid) {
		t.Fatalf("copy's PPid %s, want the stub %d", pp, stub.Pid)
	}
	if err := stub.Kill(); err != nil {
		t.Fatal(err)
	}
	if pp := statusField(t, id, "PPid"); pp != strconv.Itoa(os.Getpid()) {
		t.Errorf("copy's PPid %s after the stub died, want the subreaper %d", pp, os.Getpid())
	}
	if tp := statusField(t, id, "TracerPid"); tp != strconv.Itoa(tr.tid) {
		t.Errorf("copy's TracerPid %s, want the tracer thread %d", tp, tr.tid)
	}
	if ns := statusField(t, id, "NSpid"); ns != strconv.Itoa(id) {
		t.Errorf("copy's NSpid %q, want %d", ns, id)
	}
	if r, err := p.Syscall(p.Pid, unix.SYS_GETPID); err != nil || int(r) != id {
		t.Fatalf("getpid in the copy = %d, %v; want %d", r, err, id)
	}
	const at = 0x10000000
	if a, err := p.MapScratch(at); err != nil || a != at {
		t.Fatalf("map scratch at %#x in the copy: %#x, %v", at, a, err)
	}
	tid, err := p.CloneThread(p.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p.Syscall(tid, unix.SYS_GETTID); err != nil || int(r) != tid {
		t.Fatalf("gettid on tid %d of the copy = %d, %v", tid, r, err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", id)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid %d still exists after Kill: %v", id, err)
	}
}

// TestCloneProcessDetach checks that a copy runs the registers it is given.
func TestCloneProcessDetach(t *testing.T) {
	requireRoot(t)
	subreaper(t)
	tr := newTracer(t)
	stub := spawnStub(t, tr)
	p, err := stub.CloneProcess(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := stub.Kill(); err != nil {
		t.Fatal(err)
	}
	r, err := p.Regs(p.Pid)
	if err != nil {
		t.Fatal(err)
	}
	r.Rax, r.Rdi, r.Orig_rax = unix.SYS_EXIT_GROUP, 9, ^uint64(0)
	// The gadget page goes with the scratch at Detach: use one that stays.
	page, err := p.Syscall(p.Pid, unix.SYS_MMAP, 0, pageSize, unix.PROT_READ|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMem(page, gadgetCode[:]); err != nil {
		t.Fatal(err)
	}
	r.Rip = uint64(page)
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
	if err != nil || !ws.Exited() || ws.ExitStatus() != 9 {
		t.Fatalf("detached copy: wait %v, status %v; want exit 9", err, ws)
	}
}

func TestCloneProcessNewPID(t *testing.T) {
	requireRoot(t)
	subreaper(t)
	tr := newTracer(t)
	stub := spawnStub(t, tr)
	p, err := stub.CloneProcess(1, unix.CLONE_NEWPID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	if err := stub.Kill(); err != nil {
		t.Fatal(err)
	}
	if ns := strings.Fields(statusField(t, p.Pid, "NSpid")); len(ns) != 2 || ns[0] != strconv.Itoa(p.Pid) || ns[1] != "1" {
		t.Fatalf("copy's NSpid %q, want %d 1", ns, p.Pid)
	}
	if r, err := p.Syscall(p.Pid, unix.SYS_GETPID); err != nil || r != 1 {
		t.Fatalf("getpid in the new namespace = %d, %v; want 1", r, err)
	}
	if _, err := p.CloneThread(p.Pid, 0); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

func TestCloneNotSpawned(t *testing.T) {
	requireRoot(t)
	pr := start(t, "/bin/sleep", "60")
	tr := newTracer(t)
	p := seize(t, tr, pr.pid())
	if _, err := p.CloneThread(p.Pid, 0); !errors.Is(err, ErrNotSpawned) {
		t.Fatalf("CloneThread on a seized process: %v, want ErrNotSpawned", err)
	}
	if _, err := p.CloneProcess(0, 0); !errors.Is(err, ErrNotSpawned) {
		t.Fatalf("CloneProcess on a seized process: %v, want ErrNotSpawned", err)
	}
}

// BenchmarkCloneThread measures one CloneThread (injected clone3, the clone
// event, the new thread's first stop), in batches of 100 threads per stub,
// with each call hopping to the tracer thread and with the loop running on
// it.
func BenchmarkCloneThread(b *testing.B) {
	requireRoot(b)
	tr := newTracer(b)
	run := func(b *testing.B) error {
		var p *Process
		n := 0
		defer func() {
			if p != nil {
				_ = p.Kill()
			}
		}()
		for b.Loop() {
			if p == nil || n == 100 {
				b.StopTimer()
				if p != nil {
					_ = p.Kill()
				}
				var err error
				if p, err = tr.Spawn("/bin/true", []string{"true"}, nil); err != nil {
					return err
				}
				n = 0
				b.StartTimer()
			}
			if _, err := p.CloneThread(p.Pid, 0); err != nil {
				return err
			}
			n++
		}
		return nil
	}
	b.Run("hop", func(b *testing.B) {
		b.ReportAllocs()
		if err := run(b); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/thread")
	})
	b.Run("on-tracer", func(b *testing.B) {
		b.ReportAllocs()
		if err := tr.Do(func() error { return run(b) }); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/thread")
	})
}
