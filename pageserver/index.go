package pageserver

import (
	"github.com/lazycr/lazycr/lazypages"
	"github.com/lazycr/lazycr/uffd"
)

// lazyIndex is the source's page state: every lazy page numbered
// (lazypages.Index, which keeps the boundaries the dump gave, one run per
// VMA part, so a push frame never spans two of them), and the merged
// ranges every address on the wire is checked against.
type lazyIndex struct {
	*lazypages.Index
	ranges *Ranges // merged, for bounds checks and WELCOME
}

func newLazyIndex(pids []uint32, runs []uffd.Run) (*lazyIndex, error) {
	ranges, err := NewTreeRanges(pids, runs) // validates spaces, alignment and overlap
	if err != nil {
		return nil, err
	}
	x, err := lazypages.NewIndex(runs)
	if err != nil {
		return nil, err
	}
	return &lazyIndex{Index: x, ranges: ranges}, nil
}
