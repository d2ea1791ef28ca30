package lazypages

import (
	"errors"
	"maps"
	"math/rand/v2"
	"testing"
)

func mustTranslation(t testing.TB, segs ...Seg) *Translation {
	t.Helper()
	tr, err := NewTranslation(segs)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestNewTranslationRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		segs []Seg
	}{
		{"unaligned cur", []Seg{{Cur: 0x1001, Dump: 0x1000, Len: P}}},
		{"unaligned dump", []Seg{{Cur: 0x1000, Dump: 0x1001, Len: P}}},
		{"unaligned len", []Seg{{Cur: 0x1000, Dump: 0x1000, Len: 100}}},
		{"empty", []Seg{{Cur: 0x1000, Dump: 0x1000}}},
		{"wraps", []Seg{{Cur: ^uint64(0) - P + 1, Dump: 0x1000, Len: P}}},
		{"overlap cur", []Seg{{Cur: 0x1000, Dump: 0x1000, Len: 2 * P}, {Cur: 0x2000, Dump: 0x8000, Len: P}}},
		{"overlap dump", []Seg{{Cur: 0x1000, Dump: 0x1000, Len: 2 * P}, {Cur: 0x8000, Dump: 0x2000, Len: P}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewTranslation(tc.segs)
			if !errors.Is(err, ErrBadRun) || tr != nil {
				t.Fatalf("NewTranslation(%v) = %v, %v; want nil, ErrBadRun", tc.segs, tr, err)
			}
		})
	}
}

type piece struct{ cur, dump, n uint64 }

func collect(each func(a, b uint64, fn func(cur, dump, n uint64)), a, b uint64) []piece {
	var out []piece
	each(a, b, func(cur, dump, n uint64) { out = append(out, piece{cur, dump, n}) })
	return out
}

func TestTranslation(t *testing.T) {
	// Two regions at their dump addresses, as a handler starts.
	tr := mustTranslation(t, Seg{Cur: 0x10000, Dump: 0x10000, Len: 4 * P}, Seg{Cur: 0x1000, Dump: 0x1000, Len: 2 * P})
	if d, ok := tr.ToDump(0x1fff); !ok || d != 0x1fff {
		t.Fatalf("ToDump(0x1fff) = %#x, %v", d, ok)
	}
	if _, ok := tr.ToDump(0x3000); ok {
		t.Fatal("ToDump(0x3000) mapped")
	}
	// munmap of the middle of the second region.
	cut := tr.Cut(0x11000, 0x12000)
	if !equal(cut, []Seg{{Cur: 0x11000, Dump: 0x11000, Len: P}}) {
		t.Fatalf("Cut = %v", cut)
	}
	if got := tr.Cut(0x11000, 0x12000); got != nil {
		t.Fatalf("second Cut = %v, want nil", got)
	}
	// mremap of [0x12000, 0x14000) to 0x40000 and of the first region over
	// the end of the moved one.
	tr.Move(0x12000, 0x40000, 2*P)
	tr.Move(0x1000, 0x41000, 2*P)
	wantSegs := []Seg{{Cur: 0x10000, Dump: 0x10000, Len: P}, {Cur: 0x40000, Dump: 0x12000, Len: P},
		{Cur: 0x41000, Dump: 0x1000, Len: 2 * P}}
	if !equal(tr.Segs(), wantSegs) {
		t.Fatalf("Segs = %v, want %v", tr.Segs(), wantSegs)
	}
	if got, want := collect(tr.ByCur, 0, ^uint64(0)), []piece{{0x10000, 0x10000, P}, {0x40000, 0x12000, P}, {0x41000, 0x1000, 2 * P}}; !equal(got, want) {
		t.Errorf("ByCur(all) = %v, want %v", got, want)
	}
	if got, want := collect(tr.ByDump, 0, ^uint64(0)), []piece{{0x41000, 0x1000, 2 * P}, {0x10000, 0x10000, P}, {0x40000, 0x12000, P}}; !equal(got, want) {
		t.Errorf("ByDump(all) = %v, want %v", got, want)
	}
	if got, want := collect(tr.ByDump, 0x2000, 0x12800), []piece{{0x42000, 0x2000, P}, {0x10000, 0x10000, P}, {0x40000, 0x12000, 0x800}}; !equal(got, want) {
		t.Errorf("ByDump(0x2000, 0x12800) = %v, want %v", got, want)
	}
	if got, want := collect(tr.ByCur, 0x40800, 0x42000), []piece{{0x40800, 0x12800, 0x800}, {0x41000, 0x1000, P}}; !equal(got, want) {
		t.Errorf("ByCur(0x40800, 0x42000) = %v, want %v", got, want)
	}
	// A fork's copy is independent.
	c := tr.Clone()
	c.Cut(0, ^uint64(0))
	if len(c.Segs()) != 0 || len(tr.Segs()) != 3 {
		t.Fatalf("after cutting the clone: clone %v, original %v", c.Segs(), tr.Segs())
	}
	if got := collect(c.ByDump, 0, ^uint64(0)); got != nil {
		t.Fatalf("clone ByDump = %v", got)
	}
}

// model is a Translation's reference: current page → dump-time page.
type model map[uint64]uint64

func (m model) cut(a, b uint64) {
	for c := range m {
		if c >= a && c < b {
			delete(m, c)
		}
	}
}

func (m model) move(from, to, n uint64) {
	m.cut(to, to+n)
	moved := model{}
	for c, d := range m {
		if c >= from && c < from+n {
			moved[c-from+to] = d
			delete(m, c)
		}
	}
	maps.Copy(m, moved)
}

// check compares tr with m over pages [0, universe) of P bytes.
func check(t testing.TB, tr *Translation, m model, universe uint64) {
	t.Helper()
	for p := uint64(0); p < universe; p++ {
		d, ok := tr.ToDump(p * P)
		wd, wok := m[p*P]
		if d != wd || ok != wok {
			t.Fatalf("ToDump(%#x) = %#x, %v; want %#x, %v (segs %v)", p*P, d, ok, wd, wok, tr.Segs())
		}
	}
	// ByCur and ByDump each cover the model once, in order of their key.
	for _, w := range []struct {
		name string
		each func(a, b uint64, fn func(cur, dump, n uint64))
		key  func(piece) uint64
	}{
		{"ByCur", tr.ByCur, func(pc piece) uint64 { return pc.cur }},
		{"ByDump", tr.ByDump, func(pc piece) uint64 { return pc.dump }},
	} {
		got := model{}
		last := uint64(0)
		for _, pc := range collect(w.each, 0, ^uint64(0)) {
			if w.key(pc) < last || pc.n == 0 {
				t.Fatalf("%s out of order, overlapping or empty at %v (segs %v)", w.name, pc, tr.Segs())
			}
			last = w.key(pc) + pc.n
			for k := uint64(0); k < pc.n; k += P {
				got[pc.cur+k] = pc.dump + k
			}
		}
		if !maps.Equal(got, m) {
			t.Fatalf("%s covers %v, want %v", w.name, got, m)
		}
	}
}

// TestTranslationModel runs random munmaps and mremaps against the model.
func TestTranslationModel(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const universe = 64
	for range 200 {
		tr := mustTranslation(t, Seg{Cur: 8 * P, Dump: 8 * P, Len: 16 * P}, Seg{Cur: 32 * P, Dump: 32 * P, Len: 8 * P})
		m := model{}
		for p := uint64(8); p < 24; p++ {
			m[p*P] = p * P
		}
		for p := uint64(32); p < 40; p++ {
			m[p*P] = p * P
		}
		for range 20 {
			a, n := r.Uint64N(universe), r.Uint64N(16)
			if r.IntN(2) == 0 {
				tr.Cut(a*P, (a+n)*P)
				m.cut(a*P, (a+n)*P)
			} else {
				to := r.Uint64N(universe - n)
				tr.Move(a*P, to*P, n*P)
				m.move(a*P, to*P, n*P)
			}
			check(t, tr, m, universe+16)
		}
	}
}
