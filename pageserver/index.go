package pageserver

import (
	"math/bits"
	"slices"

	"github.com/lazycr/lazycr/uffd"
)

// lazyIndex numbers every lazy page: page k of run i has global index
// first[i]+k. Runs keep the boundaries the dump gave (one per VMA part), so
// a push frame never spans two of them.
type lazyIndex struct {
	runs   []uffd.Run // sorted, disjoint
	first  []uint64
	total  uint64
	ranges *Ranges // merged, for bounds checks and WELCOME
}

func newLazyIndex(pids []uint32, runs []uffd.Run) (*lazyIndex, error) {
	ranges, err := NewTreeRanges(pids, runs) // validates spaces, alignment and overlap
	if err != nil {
		return nil, err
	}
	rs := slices.Clone(runs)
	slices.SortFunc(rs, func(a, b uffd.Run) int {
		if a.Addr < b.Addr {
			return -1
		}
		return 1
	})
	x := &lazyIndex{runs: rs, first: make([]uint64, len(rs)), ranges: ranges}
	for i, r := range rs {
		x.first[i] = x.total
		x.total += r.Npages
	}
	return x, nil
}

// run returns the index of the run holding addr, or -1.
func (x *lazyIndex) run(addr uint64) int {
	i, ok := slices.BinarySearchFunc(x.runs, addr, func(r uffd.Run, a uint64) int {
		switch {
		case r.End() <= a:
			return -1
		case r.Addr > a:
			return 1
		}
		return 0
	})
	if !ok {
		return -1
	}
	return i
}

// index returns the global index of a lazy page address (checked by the
// caller against ranges).
func (x *lazyIndex) index(addr uint64) uint64 {
	i := x.run(addr)
	return x.first[i] + (addr-x.runs[i].Addr)/PageSize
}

// runOf returns the run holding global page index g < total.
func (x *lazyIndex) runOf(g uint64) int {
	i, ok := slices.BinarySearch(x.first, g)
	if !ok {
		i--
	}
	return i
}

// bitmap is a set of global page indexes.
type bitmap []uint64

func newBitmap(n uint64) bitmap { return make(bitmap, (n+63)/64) }

func (b bitmap) get(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }

func (b bitmap) set(i uint64) { b[i/64] |= 1 << (i % 64) }

// setRange sets [i, i+n) and returns how many bits were clear.
func (b bitmap) setRange(i, n uint64) uint64 {
	var fresh uint64
	for ; n > 0; i, n = i+1, n-1 {
		if i%64 == 0 && n >= 64 {
			fresh += uint64(64 - bits.OnesCount64(b[i/64]))
			b[i/64] = ^uint64(0)
			i, n = i+63, n-63
			continue
		}
		if !b.get(i) {
			fresh++
			b.set(i)
		}
	}
	return fresh
}

// nextClear returns the first clear index in [from, to).
func (b bitmap) nextClear(from, to uint64) (uint64, bool) {
	for i := from; i < to; {
		w := b[i/64] | (1<<(i%64) - 1) // ignore bits below i
		if w == ^uint64(0) {
			i = (i/64 + 1) * 64
			continue
		}
		j := i/64*64 + uint64(bits.TrailingZeros64(^w))
		if j < to {
			return j, true
		}
		return 0, false
	}
	return 0, false
}

// clearRun returns how many consecutive clear bits start at i, up to max.
func (b bitmap) clearRun(i, max uint64) uint64 {
	var n uint64
	for n < max && !b.get(i+n) {
		n++
	}
	return n
}
