package lazypages

import (
	"errors"
	"slices"
	"testing"
)

// FuzzTranslation builds a translation from arbitrary segments, applies
// arbitrary cuts and moves, and compares with the model: never a panic,
// and ToDump, ByCur and ByDump agree with it.
func FuzzTranslation(f *testing.F) {
	f.Add([]byte{1, 1, 4, 10, 10, 2}, []byte{0, 2, 3, 1, 1, 20, 4})
	f.Add([]byte{0, 5, 8, 20, 30, 8}, []byte{1, 0, 40, 8, 0, 3, 2})
	f.Fuzz(func(t *testing.T, segBytes, ops []byte) {
		const universe = 256
		var segs []Seg
		for k := 0; k+3 <= len(segBytes) && len(segs) < 16; k += 3 {
			segs = append(segs, Seg{Cur: uint64(segBytes[k]) * P, Dump: uint64(segBytes[k+1]) * P, Len: uint64(segBytes[k+2]%32) * P})
		}
		tr, err := NewTranslation(segs)
		if err != nil {
			if !errors.Is(err, ErrBadRun) {
				t.Fatalf("NewTranslation: %v does not wrap ErrBadRun", err)
			}
			return
		}
		m := model{}
		for _, s := range segs {
			for k := uint64(0); k < s.Len; k += P {
				m[s.Cur+k] = s.Dump + k
			}
		}
		check(t, tr, m, universe+32)
		for k := 0; k+4 <= len(ops) && k < 64; k += 4 {
			a, b, n := uint64(ops[k+1])*P, uint64(ops[k+2])*P, uint64(ops[k+3]%64)*P
			if ops[k]%2 == 0 {
				tr.Cut(a, a+n)
				m.cut(a, a+n)
			} else {
				tr.Move(a, b, n)
				m.move(a, b, n)
			}
			check(t, tr, m, universe+64)
		}
	})
}

// FuzzIndex builds an index from arbitrary runs: never a panic, every page's
// address looks up back to it, Lookup of any address agrees with the runs,
// and Each splits any range into the parts inside runs.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 16, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 2, 0}, uint64(0x1000), uint64(0x30000))
	f.Add([]byte{255, 255, 255, 255, 255, 255, 255, 255, 1, 0}, uint64(0), ^uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint64) {
		var runs []Run
		for k := 0; k+10 <= len(data) && len(runs) < 64; k += 10 {
			addr := uint64(data[k]) | uint64(data[k+1])<<8 | uint64(data[k+2])<<16 | uint64(data[k+3])<<24 |
				uint64(data[k+4])<<32 | uint64(data[k+5])<<40 | uint64(data[k+6])<<48 | uint64(data[k+7])<<56
			if data[k]&1 == 0 {
				addr &^= P - 1 // mostly aligned runs, sometimes not
			}
			runs = append(runs, Run{Addr: addr, Npages: uint64(data[k+8]) | uint64(data[k+9])<<8})
		}
		x, err := NewIndex(runs)
		if err != nil {
			if !errors.Is(err, ErrBadRun) {
				t.Fatalf("NewIndex: %v does not wrap ErrBadRun", err)
			}
			return
		}
		var total uint64
		for _, r := range runs {
			total += r.Npages
		}
		if x.Pages() != total {
			t.Fatalf("Pages = %d, want %d", x.Pages(), total)
		}
		sorted := slices.Clone(x.Runs())
		var i uint64
		for j, r := range sorted {
			for _, k := range []uint64{0, r.Npages / 2, r.Npages - 1} {
				addr := r.Addr + k*P
				if got := x.Addr(i + k); got != addr {
					t.Fatalf("Addr(%d) = %#x, want %#x", i+k, got, addr)
				}
				if g, ok := x.Lookup(addr + P - 1); !ok || g != i+k {
					t.Fatalf("Lookup(%#x) = %d, %v; want %d", addr+P-1, g, ok, i+k)
				}
				if x.RunOf(i+k) != j || x.RunEnd(i+k) != i+r.Npages {
					t.Fatalf("page %d: RunOf %d RunEnd %d; want %d, %d", i+k, x.RunOf(i+k), x.RunEnd(i+k), j, i+r.Npages)
				}
			}
			i += r.Npages
		}
		for _, addr := range []uint64{a, b, a + b, a - P, b + P} {
			g, ok := x.Lookup(addr)
			j := slices.IndexFunc(sorted, func(r Run) bool { return r.Addr <= addr && addr < r.End() })
			if ok != (j >= 0) {
				t.Fatalf("Lookup(%#x) = %d, %v; run %d", addr, g, ok, j)
			}
			if ok && x.Addr(g) != addr&^(P-1) {
				t.Fatalf("Addr(Lookup(%#x)) = %#x", addr, x.Addr(g))
			}
		}
		var covered uint64
		last := uint64(0)
		x.Each(a, b, func(i0, n, addr uint64) {
			if addr < a || addr >= b || addr < last {
				t.Fatalf("Each(%#x, %#x): part at %#x out of range or order", a, b, addr)
			}
			if g, ok := x.Lookup(addr); !ok || g != i0 {
				t.Fatalf("Each(%#x, %#x): part at %#x index %d, Lookup says %d, %v", a, b, addr, i0, g, ok)
			}
			if n > 0 && i0+n > x.RunEnd(i0) {
				t.Fatalf("Each(%#x, %#x): part at %#x spans two runs", a, b, addr)
			}
			last = addr
			covered += n
		})
		if a%P == 0 && b%P == 0 && a <= b {
			var want uint64
			for _, r := range sorted {
				lo, hi := max(a, r.Addr), min(b, r.End())
				if lo < hi {
					want += (hi - lo) / P
				}
			}
			if covered != want {
				t.Fatalf("Each(%#x, %#x) covered %d pages, want %d", a, b, covered, want)
			}
		}
	})
}
