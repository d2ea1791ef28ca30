package lazypages

import (
	"errors"
	"testing"
)

const P = PageSize

func mustIndex(t testing.TB, runs ...Run) *Index {
	t.Helper()
	x, err := NewIndex(runs)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestNewIndexRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		runs []Run
	}{
		{"unaligned", []Run{{Addr: 0x1001, Npages: 1}}},
		{"empty", []Run{{Addr: 0x1000, Npages: 0}}},
		{"wraps", []Run{{Addr: ^uint64(0) - 2*P + 1, Npages: 2}}},
		{"huge", []Run{{Addr: 0x1000, Npages: 1 << 53}}},
		{"overlap", []Run{{Addr: 0x1000, Npages: 2}, {Addr: 0x2000, Npages: 1}}},
		{"overlap unsorted", []Run{{Addr: 0x5000, Npages: 1}, {Addr: 0x1000, Npages: 5}}},
		{"same", []Run{{Addr: 0x1000, Npages: 1}, {Addr: 0x1000, Npages: 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, err := NewIndex(tc.runs)
			if !errors.Is(err, ErrBadRun) || x != nil {
				t.Fatalf("NewIndex(%v) = %v, %v; want nil, ErrBadRun", tc.runs, x, err)
			}
		})
	}
	// The last page below 2^64 is fine.
	if _, err := NewIndex([]Run{{Addr: ^uint64(0) - 2*P + 1, Npages: 1}}); err != nil {
		t.Fatal(err)
	}
}

func TestIndex(t *testing.T) {
	// Given out of order; 0x3000 is adjacent to 0x1000+2 pages and stays a
	// run of its own.
	x := mustIndex(t, Run{Addr: 0x10000, Npages: 3}, Run{Addr: 0x1000, Npages: 2}, Run{Addr: 0x3000, Npages: 1},
		Run{Addr: SpaceAddr(1, 0x1000), Npages: 4})
	if x.Pages() != 10 {
		t.Fatalf("Pages = %d, want 10", x.Pages())
	}
	want := []uint64{0x1000, 0x2000, 0x3000, 0x10000, 0x11000, 0x12000, SpaceAddr(1, 0x1000), SpaceAddr(1, 0x2000), SpaceAddr(1, 0x3000), SpaceAddr(1, 0x4000)}
	ends := []uint64{2, 2, 3, 6, 6, 6, 10, 10, 10, 10}
	runOf := []int{0, 0, 1, 2, 2, 2, 3, 3, 3, 3}
	for i, a := range want {
		if got := x.Addr(uint64(i)); got != a {
			t.Errorf("Addr(%d) = %#x, want %#x", i, got, a)
		}
		for _, off := range []uint64{0, 1, P - 1} {
			if g, ok := x.Lookup(a + off); !ok || g != uint64(i) {
				t.Errorf("Lookup(%#x) = %d, %v; want %d", a+off, g, ok, i)
			}
		}
		if e := x.RunEnd(uint64(i)); e != ends[i] {
			t.Errorf("RunEnd(%d) = %d, want %d", i, e, ends[i])
		}
		if r := x.RunOf(uint64(i)); r != runOf[i] {
			t.Errorf("RunOf(%d) = %d, want %d", i, r, runOf[i])
		}
	}
	for _, a := range []uint64{0, 0xfff, 0x4000, 0xffff, 0x13000, SpaceAddr(1, 0), SpaceAddr(1, 0x5000), ^uint64(0)} {
		if g, ok := x.Lookup(a); ok {
			t.Errorf("Lookup(%#x) = %d, want none", a, g)
		}
	}
	if lo, hi := x.SpacePages(0); lo != 0 || hi != 6 {
		t.Errorf("SpacePages(0) = %d, %d; want 0, 6", lo, hi)
	}
	if lo, hi := x.SpacePages(1); lo != 6 || hi != 10 {
		t.Errorf("SpacePages(1) = %d, %d; want 6, 10", lo, hi)
	}
	for _, sp := range []int{2, MaxSpaces - 1} {
		if lo, hi := x.SpacePages(sp); lo != hi {
			t.Errorf("SpacePages(%d) = %d, %d; want empty", sp, lo, hi)
		}
	}
	for _, sp := range []int{-1, MaxSpaces} {
		if lo, hi := x.SpacePages(sp); lo != 0 || hi != 0 {
			t.Errorf("SpacePages(%d) = %d, %d; want 0, 0", sp, lo, hi)
		}
	}
}

type part struct{ i0, n, addr uint64 }

func TestIndexEach(t *testing.T) {
	x := mustIndex(t, Run{Addr: 0x1000, Npages: 2}, Run{Addr: 0x3000, Npages: 1}, Run{Addr: 0x10000, Npages: 3})
	for _, tc := range []struct {
		a, b uint64
		want []part
	}{
		{0, ^uint64(0), []part{{0, 2, 0x1000}, {2, 1, 0x3000}, {3, 3, 0x10000}}},
		{0x2000, 0x11000, []part{{1, 1, 0x2000}, {2, 1, 0x3000}, {3, 1, 0x10000}}},
		{0x4000, 0x10000, nil},
		{0x11000, 0x12000, []part{{4, 1, 0x11000}}},
		{0x12000, 0x11000, nil},
		{0x13000, ^uint64(0), nil},
	} {
		var got []part
		x.Each(tc.a, tc.b, func(i0, n, addr uint64) { got = append(got, part{i0, n, addr}) })
		if !equal(got, tc.want) {
			t.Errorf("Each(%#x, %#x) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestIndexEmpty(t *testing.T) {
	x := mustIndex(t)
	if x.Pages() != 0 {
		t.Fatalf("Pages = %d", x.Pages())
	}
	if _, ok := x.Lookup(0x1000); ok {
		t.Fatal("Lookup in an empty index found a page")
	}
	x.Each(0, ^uint64(0), func(i0, n, addr uint64) { t.Fatal("Each called fn on an empty index") })
	if lo, hi := x.SpacePages(0); lo != 0 || hi != 0 {
		t.Fatalf("SpacePages(0) = %d, %d", lo, hi)
	}
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
