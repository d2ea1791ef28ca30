package lazypages

import (
	"cmp"
	"fmt"
	"slices"
)

// A Seg maps current addresses [Cur, Cur+Len) of a process to dump-time
// (keyed) addresses [Dump, Dump+Len).
type Seg struct{ Cur, Dump, Len uint64 }

// A Translation maps a process's current addresses to the dump-time
// addresses its pages had, following mremap(2) and munmap(2). Its segments
// are disjoint both ways: a dump-time page is at one current address at
// most. The zero Translation maps nothing. Not safe for concurrent use.
type Translation struct {
	byCur  []Seg // sorted by Cur
	byDump []Seg // the same segments sorted by Dump
}

// NewTranslation returns the translation of segs (any order): each
// page-aligned, non-empty, not wrapping, and disjoint from the others both
// in current and in dump-time addresses.
func NewTranslation(segs []Seg) (*Translation, error) {
	t := &Translation{byCur: slices.Clone(segs)}
	for _, s := range segs {
		if s.Len%PageSize != 0 || s.Len == 0 {
			return nil, fmt.Errorf("translate %#x → %#x: length %#x is not a positive multiple of the page size: %w", s.Cur, s.Dump, s.Len, ErrBadRun)
		}
		if err := checkRun(s.Cur, s.Len/PageSize); err != nil {
			return nil, fmt.Errorf("translate %#x → %#x: %w", s.Cur, s.Dump, err)
		}
		if err := checkRun(s.Dump, s.Len/PageSize); err != nil {
			return nil, fmt.Errorf("translate %#x → %#x: %w", s.Cur, s.Dump, err)
		}
	}
	t.sortCur()
	t.index()
	for k := 1; k < len(t.byCur); k++ {
		if p, s := t.byCur[k-1], t.byCur[k]; s.Cur < p.Cur+p.Len {
			return nil, fmt.Errorf("translate %#x: overlaps %#x+%#x: %w", s.Cur, p.Cur, p.Len, ErrBadRun)
		}
		if p, s := t.byDump[k-1], t.byDump[k]; s.Dump < p.Dump+p.Len {
			return nil, fmt.Errorf("translate to %#x: overlaps %#x+%#x: %w", s.Dump, p.Dump, p.Len, ErrBadRun)
		}
	}
	return t, nil
}

func (t *Translation) sortCur() {
	slices.SortFunc(t.byCur, func(a, b Seg) int { return cmp.Compare(a.Cur, b.Cur) })
}

// index rebuilds byDump from byCur.
func (t *Translation) index() {
	t.byDump = append(t.byDump[:0], t.byCur...)
	slices.SortFunc(t.byDump, func(a, b Seg) int { return cmp.Compare(a.Dump, b.Dump) })
}

// Clone returns an independent copy of t (a forked child's).
func (t *Translation) Clone() *Translation {
	return &Translation{byCur: slices.Clone(t.byCur), byDump: slices.Clone(t.byDump)}
}

// Segs returns the segments sorted by current address (callers must not
// modify them).
func (t *Translation) Segs() []Seg { return t.byCur }

// ToDump returns the dump-time address of current address cur, and false
// if cur is not mapped.
func (t *Translation) ToDump(cur uint64) (uint64, bool) {
	lo, hi := 0, len(t.byCur)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s := t.byCur[m]; s.Cur+s.Len <= cur {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(t.byCur) && t.byCur[lo].Cur <= cur {
		s := t.byCur[lo]
		return s.Dump + cur - s.Cur, true
	}
	return 0, false
}

// ByCur calls fn for each mapped part of current range [a, b), in current
// address order, with its current and dump-time address and its length.
func (t *Translation) ByCur(a, b uint64, fn func(cur, dump, n uint64)) {
	lo, hi := 0, len(t.byCur)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s := t.byCur[m]; s.Cur+s.Len <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for _, s := range t.byCur[lo:] {
		if s.Cur >= b {
			break
		}
		l, h := max(a, s.Cur), min(b, s.Cur+s.Len)
		if l < h {
			fn(l, s.Dump+l-s.Cur, h-l)
		}
	}
}

// ByDump calls fn for each mapped part of dump-time range [a, b), in
// dump-time address order, with its current and dump-time address and its
// length.
func (t *Translation) ByDump(a, b uint64, fn func(cur, dump, n uint64)) {
	lo, hi := 0, len(t.byDump)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s := t.byDump[m]; s.Dump+s.Len <= a {
			lo = m + 1
		} else {
			hi = m
		}
	}
	for _, s := range t.byDump[lo:] {
		if s.Dump >= b {
			break
		}
		l, h := max(a, s.Dump), min(b, s.Dump+s.Len)
		if l < h {
			fn(s.Cur+l-s.Dump, l, h-l)
		}
	}
}

// Cut removes current range [a, b) (munmap(2)) and returns the removed
// pieces in current address order.
func (t *Translation) Cut(a, b uint64) []Seg {
	var keep, cut []Seg
	for _, s := range t.byCur {
		lo, hi := max(a, s.Cur), min(b, s.Cur+s.Len)
		if lo >= hi {
			keep = append(keep, s)
			continue
		}
		if s.Cur < lo {
			keep = append(keep, Seg{Cur: s.Cur, Dump: s.Dump, Len: lo - s.Cur})
		}
		cut = append(cut, Seg{Cur: lo, Dump: s.Dump + lo - s.Cur, Len: hi - lo})
		if hi < s.Cur+s.Len {
			keep = append(keep, Seg{Cur: hi, Dump: s.Dump + hi - s.Cur, Len: s.Cur + s.Len - hi})
		}
	}
	if len(cut) == 0 {
		return nil
	}
	t.byCur = keep
	t.index()
	return cut
}

// Move moves the translation of current range [from, from+n) to [to,
// to+n) (mremap(2)): whatever was mapped at the destination is cut first
// (the kernel unmapped it), and a part of the source range that was not
// mapped is not mapped at the destination either.
func (t *Translation) Move(from, to, n uint64) {
	t.Cut(to, to+n)
	moved := t.Cut(from, from+n)
	if len(moved) == 0 {
		return
	}
	for _, s := range moved {
		s.Cur = s.Cur - from + to
		t.byCur = append(t.byCur, s)
	}
	t.sortCur()
	t.index()
}
