package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/lazycr/lazycr/image"
)

// Images the size of the data: sparse_thp writes 64 pieces of 64 KiB into
// a 16 GiB MADV_HUGEPAGE reservation, one per transparent huge page, so 128
// MiB of huge pages hold 4 MiB of data, and reads 64 MiB it never writes
// (the huge zero page). A plain dump must write about the data, not the huge
// pages; after a plain restore and after a post-copy migration the program
// verifies every piece, the zeros around them and the untouched rest.

// sparseReport is sparse_thp's first line.
type sparseReport struct {
	Pid        int    `json:"pid"`
	Base       hexU64 `json:"base"`
	Len        uint64 `json:"len"`
	Pieces     uint64 `json:"pieces"`
	Piece      uint64 `json:"piece"`
	AnonHugeKB uint64 `json:"anon_huge_kb"`
}

// startSparse starts sparse_thp and waits until it verified its memory
// once. It skips when the kernel gave the reservation no huge page (THP
// disabled): the zero-filled huge page case then does not arise.
func startSparse(t *testing.T) (*proc, sparseReport) {
	t.Helper()
	p := start(t, buildC(t, "sparse_thp"))
	var r sparseReport
	waitReport(t, p, &r)
	if r.AnonHugeKB == 0 {
		t.Skip("the reservation got no transparent huge page (THP disabled?)")
	}
	lazyWaitTick(t, p, "verify", 1)
	return p, r
}

func TestZeroPagesLeftOut(t *testing.T) {
	p, r := startSparse(t)
	data := r.Pieces * r.Piece
	dir := dumpKill(t, p)
	st, err := os.Stat(filepath.Join(dir, image.PagesFile(uint32(r.Pid))))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d KiB of data in %d KiB of huge pages: pages file %d KiB", data>>10, r.AnonHugeKB, st.Size()>>10)
	if uint64(st.Size()) > 2*data {
		t.Errorf("pages file is %d bytes for %d bytes of non-zero data (want at most twice the data)", st.Size(), data)
	}
	q := restoreFrom(t, p, dir)
	lazyRequireRounds(t, q, "verify", 2)
	checkSequence(t, q, "verify")
}

func TestZeroPagesLazy(t *testing.T) {
	p, r := startSparse(t)
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	lazyRequireRounds(t, m.restored, "verify", 2)
	checkSequence(t, m.restored, "verify")
	// The huge pages holding data are populated and go over the wire (the
	// parts of them that read as zeros as ZERO frames, without their
	// bytes); the pages that only ever read the huge zero page are
	// answered locally.
	_, e := m.target.output()
	s := parseLazySummary(t, e)
	if limit := int64(r.Pieces*(2<<20)) + 16<<20; s.bytesCopied > limit {
		t.Errorf("target copied %d bytes, more than the %d MiB of huge pages holding data (+16 MiB)", s.bytesCopied, r.Pieces*2)
	}
}
