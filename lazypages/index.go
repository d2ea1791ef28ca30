package lazypages

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// ErrBadRun is wrapped by NewIndex's and NewTranslation's errors: a run or
// segment that is unaligned, empty, wraps around the address space or
// overlaps another.
var ErrBadRun = errors.New("bad page run")

// An Index numbers the pages of a set of disjoint runs in address order
// (see the package doc). It is immutable once built and safe for
// concurrent use.
type Index struct {
	runs []Run    // sorted by Addr, disjoint
	ends []uint64 // ends[j] = runs[j].End(): the address search reads only this
	// first[j] is the index of runs[j]'s first page; first[len(runs)] is
	// the number of pages.
	first []uint64
}

// NewIndex numbers the pages of runs (keyed addresses, any order). Each run
// must be page-aligned, non-empty and not wrap around; runs must not
// overlap (adjacent runs stay separate runs).
func NewIndex(runs []Run) (*Index, error) {
	rs := slices.Clone(runs)
	slices.SortFunc(rs, func(a, b Run) int { return cmp.Compare(a.Addr, b.Addr) })
	x := &Index{runs: rs, ends: make([]uint64, len(rs)), first: make([]uint64, len(rs)+1)}
	var total uint64
	for j, r := range rs {
		if err := checkRun(r.Addr, r.Npages); err != nil {
			return nil, fmt.Errorf("index lazy pages: %w", err)
		}
		if j > 0 && r.Addr < x.ends[j-1] {
			return nil, fmt.Errorf("index lazy pages: run at %#x overlaps the one ending %#x: %w", r.Addr, x.ends[j-1], ErrBadRun)
		}
		x.ends[j] = r.End()
		x.first[j] = total
		total += r.Npages
	}
	x.first[len(rs)] = total
	return x, nil
}

// checkRun checks a run of npages pages at addr: aligned, non-empty, not
// wrapping.
func checkRun(addr, npages uint64) error {
	switch {
	case addr%PageSize != 0:
		return fmt.Errorf("run at %#x is not page-aligned: %w", addr, ErrBadRun)
	case npages == 0:
		return fmt.Errorf("run at %#x is empty: %w", addr, ErrBadRun)
	case npages > (^uint64(0)-addr)/PageSize:
		return fmt.Errorf("run at %#x of %d pages wraps around: %w", addr, npages, ErrBadRun)
	}
	return nil
}

// Pages is the number of pages indexed.
func (x *Index) Pages() uint64 { return x.first[len(x.runs)] }

// Runs returns the runs in address order (callers must not modify them).
func (x *Index) Runs() []Run { return x.runs }

// search returns the first run j ending after addr (len(runs) if none).
func (x *Index) search(addr uint64) int {
	lo, hi := 0, len(x.ends)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.ends[m] <= addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Lookup returns the index of the page holding address addr, and false if
// no run holds addr.
func (x *Index) Lookup(addr uint64) (uint64, bool) {
	j := x.search(addr)
	if j < len(x.runs) && x.runs[j].Addr <= addr {
		return x.first[j] + (addr-x.runs[j].Addr)/PageSize, true
	}
	return 0, false
}

// RunOf returns the run (its position in Runs) holding page i < Pages().
func (x *Index) RunOf(i uint64) int {
	// The first run whose successor starts after i.
	lo, hi := 0, len(x.runs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.first[m+1] <= i {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Addr returns the address of page i < Pages().
func (x *Index) Addr(i uint64) uint64 {
	j := x.RunOf(i)
	return x.runs[j].Addr + (i-x.first[j])*PageSize
}

// RunEnd returns the index just past the last page of the run holding page
// i < Pages(): pages [i, RunEnd(i)) are contiguous in one run.
func (x *Index) RunEnd(i uint64) uint64 { return x.first[x.RunOf(i)+1] }

// Each calls fn for each part of address range [a, b) inside a run, in
// address order, with the index of its first page, its pages and its
// address.
func (x *Index) Each(a, b uint64, fn func(i0, n, addr uint64)) {
	for j := x.search(a); j < len(x.runs) && x.runs[j].Addr < b; j++ {
		r := x.runs[j]
		lo, hi := max(a, r.Addr), min(b, x.ends[j])
		if lo < hi {
			fn(x.first[j]+(lo-r.Addr)/PageSize, (hi-lo)/PageSize, lo)
		}
	}
}

// SpacePages returns the indexes [lo, hi) of the pages of the runs that
// start in space (keyed addresses sort by space first, so they are
// contiguous); an empty range for a space outside 0..MaxSpaces-1.
func (x *Index) SpacePages(space int) (lo, hi uint64) {
	if space < 0 || space >= MaxSpaces {
		return 0, 0
	}
	a, b := x.startingAt(SpaceAddr(space, 0)), len(x.runs)
	if space+1 < MaxSpaces {
		b = x.startingAt(SpaceAddr(space+1, 0))
	}
	return x.first[a], x.first[b]
}

// startingAt returns the first run starting at or after addr.
func (x *Index) startingAt(addr uint64) int {
	lo, hi := 0, len(x.runs)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.runs[m].Addr < addr {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
