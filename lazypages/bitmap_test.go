package lazypages

import (
	"math/rand/v2"
	"testing"
)

// ref is a Bitmap's model: one bool per index.
type ref []bool

func (r ref) nextClear(from, to uint64) (uint64, bool) {
	for i := from; i < to; i++ {
		if !r[i] {
			return i, true
		}
	}
	return 0, false
}

func (r ref) clearRun(i, limit uint64) uint64 {
	var n uint64
	for n < limit && i+n < uint64(len(r)) && !r[i+n] {
		n++
	}
	return n
}

func TestBitmapBasics(t *testing.T) {
	b := NewBitmap(130)
	if len(b) != 3 {
		t.Fatalf("NewBitmap(130) has %d words, want 3", len(b))
	}
	b.Set(0)
	b.Set(64)
	b.Set(129)
	if !b.Get(0) || !b.Get(64) || !b.Get(129) || b.Get(1) || b.Get(63) || b.Count() != 3 {
		t.Fatalf("after Set(0, 64, 129): %x", []uint64(b))
	}
	b.Clear(64)
	if b.Get(64) || b.Count() != 2 {
		t.Fatalf("after Clear(64): %x", []uint64(b))
	}
	for _, tc := range []struct{ i, n, fresh uint64 }{
		{0, 0, 0}, {0, 1, 0}, {1, 63, 63}, {0, 130, 65}, {5, 10, 0},
	} {
		if got := b.SetRange(tc.i, tc.n); got != tc.fresh {
			t.Errorf("SetRange(%d, %d) = %d, want %d", tc.i, tc.n, got, tc.fresh)
		}
	}
	if b.Count() != 130 {
		t.Fatalf("Count = %d, want 130", b.Count())
	}
	b.ClearRange(60, 70)
	if b.Count() != 60 || b.Get(60) || b.Get(129) || !b.Get(59) {
		t.Fatalf("after ClearRange(60, 70): %x", []uint64(b))
	}
	if g, ok := b.NextClear(0, 130); !ok || g != 60 {
		t.Fatalf("NextClear(0, 130) = %d, %v", g, ok)
	}
	if _, ok := b.NextClear(0, 60); ok {
		t.Fatal("NextClear(0, 60) found a clear index")
	}
	o := NewBitmap(130)
	o.Set(61)
	o.Set(128)
	b.Or(o)
	if b.Count() != 62 || !b.Get(61) || !b.Get(128) || !b.Get(59) || b.Get(60) || o.Count() != 2 {
		t.Fatalf("after Or: %x (other %x)", []uint64(b), []uint64(o))
	}
	b.Clear(61)
	b.Clear(128)
	b.Set(100)
	for _, tc := range []struct{ i, limit, want uint64 }{
		{60, 70, 40}, {60, 30, 30}, {101, 29, 29}, {59, 10, 0}, {100, 1, 0}, {61, 0, 0},
	} {
		if n := b.ClearRun(tc.i, tc.limit); n != tc.want {
			t.Errorf("ClearRun(%d, %d) = %d, want %d", tc.i, tc.limit, n, tc.want)
		}
	}
}

// TestBitmapModel checks every operation against the one-bool-per-index
// model on random operations, over lengths around word boundaries.
func TestBitmapModel(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, size := range []uint64{1, 63, 64, 65, 127, 128, 129, 1000} {
		b, m := NewBitmap(size), make(ref, size)
		for range 2000 {
			i := r.Uint64N(size)
			n := r.Uint64N(size - i + 1)
			switch r.IntN(6) {
			case 0:
				b.Set(i)
				m[i] = true
			case 1:
				b.Clear(i)
				m[i] = false
			case 2:
				var fresh uint64
				for k := i; k < i+n; k++ {
					if !m[k] {
						fresh++
					}
					m[k] = true
				}
				if got := b.SetRange(i, n); got != fresh {
					t.Fatalf("size %d: SetRange(%d, %d) = %d, want %d", size, i, n, got, fresh)
				}
			case 3:
				b.ClearRange(i, n)
				for k := i; k < i+n; k++ {
					m[k] = false
				}
			case 4:
				g, ok := b.NextClear(i, i+n)
				wg, wok := m.nextClear(i, i+n)
				if g != wg || ok != wok {
					t.Fatalf("size %d: NextClear(%d, %d) = %d, %v; want %d, %v", size, i, i+n, g, ok, wg, wok)
				}
			case 5:
				if got, want := b.ClearRun(i, n), m.clearRun(i, n); got != want {
					t.Fatalf("size %d: ClearRun(%d, %d) = %d, want %d", size, i, n, got, want)
				}
			}
			var count uint64
			for k := range m {
				if b.Get(uint64(k)) != m[k] {
					t.Fatalf("size %d: Get(%d) = %v, want %v", size, k, b.Get(uint64(k)), m[k])
				}
				if m[k] {
					count++
				}
			}
			if b.Count() != count {
				t.Fatalf("size %d: Count = %d, want %d", size, b.Count(), count)
			}
		}
	}
}
