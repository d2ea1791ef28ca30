package proc

import (
	"errors"
	"os"
	"slices"
	"testing"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// deepScan calls ScanPopulated with depth frames of 128 bytes below it, so
// that over a range of depths one of its calls grows (copies) the goroutine
// stack while its result buffer lives on that stack.
//
//go:noinline
func deepScan(depth int, f *os.File, start, end uint64) ([]PopulatedRegion, error) {
	var pad [128]byte
	if depth > 0 {
		r, err := deepScan(depth-1, f, start, end)
		pad[depth%len(pad)] = byte(len(r))
		return r, err
	}
	_ = pad
	return ScanPopulated(f, start, end)
}

// TestScanPopulatedStackGrowth: the region buffer ScanPopulated hands to
// the kernel may sit on the goroutine stack (it does not escape). When the
// pointer in pm_scan_arg was an integer, a stack copy between taking it and
// the ioctl left the kernel writing into the old stack and the caller read
// zeros: regions were lost. As an unsafe.Pointer it moves with the buffer.
func TestScanPopulatedStackGrowth(t *testing.T) {
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 8*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	mem[0], mem[2*page], mem[5*page] = 1, 1, 1
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := uint64(uintptrOf(mem))
	end := start + uint64(8*page)
	p := uint64(page)
	want := []PopulatedRegion{{Start: start, End: start + p}, {Start: start + 2*p, End: start + 3*p}, {Start: start + 5*p, End: start + 6*p}}
	for depth := 0; depth < 1000; depth++ {
		got := make(chan []PopulatedRegion, 1)
		errc := make(chan error, 1)
		go func() { // a fresh, small stack each time
			r, err := deepScan(depth, f, start, end)
			got <- r
			errc <- err
		}()
		r, err := <-got, <-errc
		if errors.Is(err, ErrScanUnsupported) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		if len(r) != len(want) {
			t.Fatalf("depth %d: regions %+v, want %+v", depth, r, want)
		}
		for i := range want {
			if r[i].Start != want[i].Start || r[i].End != want[i].End {
				t.Fatalf("depth %d: regions %+v, want %+v", depth, r, want)
			}
		}
	}
}

// TestScanCategoryGuard: guard pages installed here come back as one
// merged range, and ScanPopulated still lists them (as swapped): the dump
// must carve them out (vmattr.DumpGuards).
func TestScanCategoryGuard(t *testing.T) {
	const page = 4096
	b, err := unix.Mmap(-1, 0, 6*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	for i := range b {
		b[i] = 1
	}
	if err := unix.Madvise(b[page:3*page], unix.MADV_GUARD_INSTALL); errors.Is(err, unix.EINVAL) {
		t.Skip("no MADV_GUARD_INSTALL (Linux < 6.13)")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := unix.Madvise(b[5*page:], unix.MADV_GUARD_INSTALL); err != nil {
		t.Fatal(err)
	}
	f, err := OpenPagemap(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := uint64(uintptr(unsafe.Pointer(&b[0])))
	got, err := ScanCategory(f, start, start+6*page, kabi.PAGE_IS_GUARD)
	if errors.Is(err, ErrScanUnsupported) {
		t.Skipf("no PAGE_IS_GUARD (Linux < 6.15): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := []Range{{start + page, start + 3*page}, {start + 5*page, start + 6*page}}
	if !slices.Equal(got, want) {
		t.Errorf("guard ranges %#x, want %#x", got, want)
	}
	e, err := ReadPagemap(f, start, start+6*page)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range e {
		if g := i == 1 || i == 2 || i == 5; x.Guard() != g || (g && !x.Populated()) {
			t.Errorf("page %d: pagemap %#x, guard %v, populated %v", i, uint64(x), x.Guard(), x.Populated())
		}
	}
	pop, err := ScanPopulated(f, start, start+6*page)
	if err != nil {
		t.Fatal(err)
	}
	if len(pop) != 1 || pop[0].Start != start || pop[0].End != start+6*page {
		t.Errorf("populated %+v, want the whole range (guard pages read as swapped)", pop)
	}
}

// TestScanCopiedPrivateFile: in a private mapping of a file whose pages
// were all read (file pages, present), the pages written since (copied on
// write) are exactly those ScanCopied lists, and those the pagemap shows
// populated without bit 61 (the reference the dump used before).
func TestScanCopiedPrivateFile(t *testing.T) {
	page := os.Getpagesize()
	path := t.TempDir() + "/data"
	if err := os.WriteFile(path, make([]byte, 8*page), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	mem, err := unix.Mmap(int(fd.Fd()), 0, 8*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	var sink byte
	for k := range 8 {
		sink += mem[k*page] // a file page each
	}
	_ = sink
	mem[2*page], mem[5*page], mem[6*page] = 1, 1, 1
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := uint64(uintptrOf(mem))
	end := start + uint64(8*page)
	p := uint64(page)
	got, err := ScanCopied(f, start, end)
	if errors.Is(err, ErrScanUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := []Range{{Start: start + 2*p, End: start + 3*p}, {Start: start + 5*p, End: start + 7*p}}
	if !slices.Equal(got, want) {
		t.Errorf("ScanCopied: %x, want %x", got, want)
	}
	entries, err := ReadPagemap(f, start, end)
	if err != nil {
		t.Fatal(err)
	}
	for k, e := range entries {
		a := start + uint64(k)*p
		copied := slices.ContainsFunc(got, func(r Range) bool { return r.Start <= a && a < r.End })
		if ref := e.Populated() && !e.FileOrSharedAnon(); ref != copied {
			t.Errorf("page %d: pagemap says copied %v, ScanCopied %v", k, ref, copied)
		}
	}
}
