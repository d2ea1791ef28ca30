package lazypages

import (
	"math/rand/v2"
	"testing"
)

// benchLayout is 4096 runs of 64 pages (1 GiB) with 16-page gaps, mapped
// at their dump addresses, and 64 Ki random addresses inside the runs.
func benchLayout(b *testing.B) (*Index, *Translation, []uint64) {
	var runs []Run
	var segs []Seg
	a := uint64(0x7f0000000000)
	for range 4096 {
		runs = append(runs, Run{Addr: a, Npages: 64})
		segs = append(segs, Seg{Cur: a, Dump: a, Len: 64 * P})
		a += 80 * P
	}
	x, err := NewIndex(runs)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTranslation(segs)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	addrs := make([]uint64, 1<<16)
	for i := range addrs {
		addrs[i] = runs[r.IntN(len(runs))].Addr + uint64(r.IntN(64))*P
	}
	return x, tr, addrs
}

// BenchmarkLookup: the index of a faulting or acked address.
func BenchmarkLookup(b *testing.B) {
	x, _, addrs := benchLayout(b)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		x.Lookup(addrs[i&(len(addrs)-1)])
		i++
	}
}

// BenchmarkAddr: the address of a page index (acks, retries).
func BenchmarkAddr(b *testing.B) {
	x, _, _ := benchLayout(b)
	i := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		x.Addr((i * 7919) % x.Pages())
		i++
	}
}

// BenchmarkRunEnd: the end of a page's run (fault-around, push batches).
func BenchmarkRunEnd(b *testing.B) {
	x, _, _ := benchLayout(b)
	i := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		x.RunEnd((i * 7919) % x.Pages())
		i++
	}
}

// BenchmarkToDump: a fault's current address to its dump-time address.
func BenchmarkToDump(b *testing.B) {
	_, tr, addrs := benchLayout(b)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		tr.ToDump(addrs[i&(len(addrs)-1)])
		i++
	}
}

// BenchmarkByDump: where 16 arriving pages go in the process (every
// install).
func BenchmarkByDump(b *testing.B) {
	_, tr, addrs := benchLayout(b)
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		a := addrs[i&(len(addrs)-1)]
		tr.ByDump(a, a+16*P, func(cur, dump, n uint64) {})
		i++
	}
}

// BenchmarkNextNeeded: the push's next unsent page and the length of its
// unsent stretch, in a bitmap with one page in 1024 unsent.
func BenchmarkNextNeeded(b *testing.B) {
	x, _, _ := benchLayout(b)
	bm := NewBitmap(x.Pages())
	bm.SetRange(0, x.Pages())
	r := rand.New(rand.NewPCG(3, 4))
	for range x.Pages() / 1024 {
		bm.Clear(r.Uint64N(x.Pages()))
	}
	i := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		if g, ok := bm.NextClear((i*7919)%x.Pages(), x.Pages()); ok {
			bm.ClearRun(g, 64)
		}
		i++
	}
}

// BenchmarkSetRange: marking 256 pages sent or acked.
func BenchmarkSetRange(b *testing.B) {
	bm := NewBitmap(1 << 18)
	i := uint64(0)
	b.ReportAllocs()
	for b.Loop() {
		bm.SetRange((i*7919)%(1<<18-300), 256)
		i++
	}
}
