package proc

import (
	"errors"
	"os"
	"testing"

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
