package vmaflags

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loading a BPF iterator takes CAP_BPF and CAP_PERFMON")
	}
}

// open loads the program and binds it to tid; both are closed at the end
// of the test.
func open(t *testing.T, tid int) *Iter {
	t.Helper()
	p, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	it, err := p.Open(tid)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { it.Close() })
	return it
}

// mapWith maps n pages private anonymous memory (or shared), touches them
// and gives them one attribute; it returns the mapping's start.
func mapWith(t *testing.T, shared bool, set func(b []byte) error) uint64 {
	t.Helper()
	flags := unix.MAP_PRIVATE | unix.MAP_ANONYMOUS
	if shared {
		flags = unix.MAP_SHARED | unix.MAP_ANONYMOUS
	}
	b, err := unix.Mmap(-1, 0, 4*4096, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	for i := range b {
		b[i] = 1
	}
	if set != nil {
		if err := set(b); err != nil {
			t.Fatal(err)
		}
	}
	return uint64(uintptr(unsafePointer(b)))
}

// TestIterMatchesSmaps maps memory in this process with each madvise and
// mlock state package vmattr restores, and checks that the iterator's
// flags, named by Mnemonics, are smaps' VmFlags for every VMA: those
// mappings and every other one of this process that did not change
// meanwhile.
func TestIterMatchesSmaps(t *testing.T) {
	needRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	madv := func(advice int) func([]byte) error {
		return func(b []byte) error { return unix.Madvise(b, advice) }
	}
	var want []uint64
	for _, c := range []struct {
		name   string
		shared bool
		set    func([]byte) error
	}{
		{"plain", false, nil},
		{"shared", true, nil},
		{"sequential", false, madv(unix.MADV_SEQUENTIAL)},
		{"random", false, madv(unix.MADV_RANDOM)},
		{"dontfork", false, madv(unix.MADV_DONTFORK)},
		{"wipeonfork", false, madv(unix.MADV_WIPEONFORK)},
		{"dontdump", false, madv(unix.MADV_DONTDUMP)},
		{"hugepage", false, madv(unix.MADV_HUGEPAGE)},
		{"nohugepage", false, madv(unix.MADV_NOHUGEPAGE)},
		{"mergeable", false, madv(unix.MADV_MERGEABLE)},
		{"mlock", false, unix.Mlock},
		{"mlock onfault", false, mlockOnFault},
		{"prot none", false, func(b []byte) error { return unix.Mprotect(b, unix.PROT_NONE) }},
		{"read only", false, func(b []byte) error { return unix.Mprotect(b, unix.PROT_READ) }},
	} {
		want = append(want, mapWith(t, c.shared, c.set))
	}
	it := open(t, unix.Gettid())
	before, err := it.Read()
	if err != nil {
		t.Fatal(err)
	}
	sm, err := proc.ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	after, err := it.Read()
	if err != nil {
		t.Fatal(err)
	}
	v, bad := Verify(before, after, sm)
	if len(bad) > 0 {
		t.Fatalf("named otherwise than smaps: %v", bad)
	}
	checked := 0
	for _, m := range sm {
		i := slices.IndexFunc(before, func(x VMA) bool { return x.Start == m.Start && x.End == m.End })
		j := slices.IndexFunc(after, func(x VMA) bool { return x.Start == m.Start && x.End == m.End })
		if i < 0 || j < 0 || before[i].Flags != after[j].Flags {
			if slices.Contains(want, m.Start) {
				t.Errorf("vma %#x-%#x of the test changed or was not seen by the iterator", m.Start, m.End)
			}
			continue
		}
		f := before[i].Flags
		if got := Mnemonics(f); !slices.Equal(got, m.VmFlags) {
			t.Errorf("vma %#x-%#x: iterator %q, smaps %q", m.Start, m.End, got, m.VmFlags)
		}
		if !v.Covers(f) {
			t.Errorf("vma %#x-%#x: flags %#x not verified", m.Start, m.End, f)
		}
		checked++
	}
	for _, w := range want {
		if !slices.ContainsFunc(sm, func(m proc.Mapping) bool { return m.Start == w }) {
			t.Errorf("mapping at %#x not in smaps as its own vma", w)
		}
	}
	t.Logf("%d vmas checked, verified bits %#x", checked, uint64(v))
}

// TestIterPolicy: a mapping given a NUMA memory policy with mbind(2)
// (MPOL_PREFERRED node 0) is seen with Policy, a plain one and a range
// whose policy was set back to MPOL_DEFAULT without.
func TestIterPolicy(t *testing.T) {
	needRoot(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	mbind := func(mode int, nodes uint64) func([]byte) error {
		return func(b []byte) error {
			buf := []byte{byte(nodes), 0, 0, 0, 0, 0, 0, 0}
			var mask, maxnode uintptr
			if nodes != 0 {
				mask, maxnode = uintptr(unsafePointer(buf)), 64
			}
			_, _, errno := unix.Syscall6(unix.SYS_MBIND, uintptr(unsafePointer(b)), uintptr(len(b)), uintptr(mode), mask, maxnode, 0)
			runtime.KeepAlive(buf)
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
	const mpolDefault, mpolPreferred = 0, 1
	plain := mapWith(t, false, nil)
	bound := mapWith(t, false, mbind(mpolPreferred, 1))
	reset := mapWith(t, false, func(b []byte) error {
		if err := mbind(mpolPreferred, 1)(b); err != nil {
			return err
		}
		return mbind(mpolDefault, 0)(b)
	})
	vmas, err := open(t, unix.Gettid()).Read()
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[uint64]bool{plain: false, bound: true, reset: false} {
		i := slices.IndexFunc(vmas, func(v VMA) bool { return v.Start <= addr && addr < v.End })
		if i < 0 {
			t.Fatalf("no vma at %#x", addr)
		}
		if vmas[i].Policy != want {
			t.Errorf("vma %#x-%#x: policy %v, want %v", vmas[i].Start, vmas[i].End, vmas[i].Policy, want)
		}
	}
}

// TestNoThread: the iterator of a thread that does not exist (or exited)
// sees no VMA; the caller finds them missing (the link does not check the
// thread: the kernel looks it up on each read, task_seq_get_next).
func TestNoThread(t *testing.T) {
	needRoot(t)
	vmas, err := open(t, 1<<30).Read()
	if err != nil || len(vmas) != 0 {
		t.Errorf("Read = %v, %v; want no vma", vmas, err)
	}
}

// TestClose: an Iter works after its Program is closed (the link holds
// the program); Read on a closed Iter and Open on a closed Program are
// os.ErrClosed.
func TestClose(t *testing.T) {
	needRoot(t)
	p, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	it, err := p.Open(unix.Gettid())
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if vmas, err := it.Read(); err != nil || len(vmas) == 0 {
		t.Errorf("Read after the program's Close = %d vmas, %v; want this process's", len(vmas), err)
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := it.Read(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Read after Close = %v, want os.ErrClosed", err)
	}
	if _, err := p.Open(unix.Gettid()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Open after Close = %v, want os.ErrClosed", err)
	}
}

// mlockOnFault is mlock2(b, MLOCK_ONFAULT) (x/sys/unix has no wrapper).
func mlockOnFault(b []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MLOCK2, uintptr(unsafePointer(b)), uintptr(len(b)), unix.MLOCK_ONFAULT)
	if errno != 0 {
		return errno
	}
	return nil
}

// TestReadManyVMAs: a thread with more VMAs than one seq_file buffer holds
// (here 4,000 more: several read(2) calls) is read once, completely, in
// address order, as /proc/PID/maps lists them (the iterator starts over
// after the last VMA on this kernel; readAll stops there).
func TestReadManyVMAs(t *testing.T) {
	needRoot(t)
	const n = 4000
	b, err := unix.Mmap(-1, 0, 2*n*4096, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	for i := range n {
		if err := unix.Mprotect(b[2*i*4096:(2*i+1)*4096], unix.PROT_READ); err != nil {
			t.Fatal(err)
		}
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	it := open(t, unix.Gettid())
	for try := 0; ; try++ {
		vmas, err := it.Read()
		if err != nil {
			t.Fatal(err)
		}
		maps, err := proc.ReadMaps(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		var want []VMA
		for _, m := range maps {
			if m.Path != "[vsyscall]" {
				want = append(want, VMA{Start: m.Start, End: m.End})
			}
		}
		got := make([]VMA, len(vmas))
		for i, v := range vmas {
			got[i] = VMA{Start: v.Start, End: v.End}
		}
		if slices.Equal(got, want) {
			if len(got) < 2*n {
				t.Fatalf("%d vmas, want at least %d", len(got), 2*n)
			}
			return
		}
		// The Go runtime may map memory between the two reads.
		if try == 3 {
			t.Fatalf("iterator saw %d vmas, maps lists %d", len(got), len(want))
		}
	}
}
