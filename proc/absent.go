package proc

import "os"

// ScanAbsent lists the pages of [start, end) that hold no data, as merged
// ranges: neither present nor swapped out (never populated, or dropped),
// or mapping the shared zero page (only ever read). In a private anonymous
// mapping such a page reads as zeros (mmap(2) MAP_ANONYMOUS: "initialized
// to zero"); a swapped-out page is data and is never listed. It is
// [ScanPopulated]'s complement: one PAGEMAP_SCAN walk, which skips page
// tables that do not exist, so it costs what is populated, not the size of
// the range.
func ScanAbsent(pagemap *os.File, start, end uint64) ([]Range, error) {
	regions, err := ScanPopulated(pagemap, start, end)
	if err != nil {
		return nil, err
	}
	var out []Range
	add := func(s, e uint64) {
		if s >= e {
			return
		}
		if k := len(out); k > 0 && out[k-1].End == s {
			out[k-1].End = e
			return
		}
		out = append(out, Range{Start: s, End: e})
	}
	at := start
	for _, g := range regions {
		if g.ZeroPFN {
			continue // reads as zeros: absent too
		}
		s, e := max(g.Start, start), min(g.End, end)
		if s >= e {
			continue
		}
		add(at, s)
		at = max(at, e)
	}
	add(at, end)
	return out, nil
}
