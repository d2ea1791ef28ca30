package dump

import (
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// TestResplit: an eager run whose zero pages writePages left out becomes
// its parts, and the ZERO parts merge with the ZERO runs around them.
func TestResplit(t *testing.T) {
	const ps = image.PageSize
	run := func(addr, n uint64, st pb.PageState, off uint64) *pb.PageRun {
		return &pb.PageRun{Addr: addr, Npages: n, State: st, Offset: off}
	}
	zero, eager := pb.PageState_PAGE_STATE_ZERO, pb.PageState_PAGE_STATE_EAGER
	v := &pb.Vma{Start: 0x10000, End: 0x10000 + 10*ps, Kind: pb.VmaKind_VMA_KIND_ANON}
	e1 := run(0x10000+2*ps, 4, eager, 0)
	e2 := run(0x10000+6*ps, 3, eager, 4*ps)
	v.Pages = []*pb.PageRun{run(0x10000, 2, zero, 0), e1, e2, run(0x10000+9*ps, 1, zero, 0)}
	split := map[*pb.PageRun][]*pb.PageRun{
		// zero, data, data: the second data page is written right after the first
		e1: {run(0x10000+2*ps, 1, zero, 0), run(0x10000+3*ps, 3, eager, 0)},
		// data, then zeros to the end of the run
		e2: {run(0x10000+6*ps, 1, eager, 3*ps), run(0x10000+7*ps, 2, zero, 0)},
	}
	got := resplit(v.Pages, split)
	want := []*pb.PageRun{run(0x10000, 3, zero, 0), run(0x10000+3*ps, 4, eager, 0), run(0x10000+7*ps, 3, zero, 0)}
	if len(got) != len(want) {
		t.Fatalf("got %d runs %v, want %v", len(got), got, want)
	}
	for i := range got {
		if got[i].Addr != want[i].Addr || got[i].Npages != want[i].Npages || got[i].State != want[i].State || got[i].Offset != want[i].Offset {
			t.Errorf("run %d: %v, want %v", i, got[i], want[i])
		}
	}
	v.Pages = got
	if err := image.ValidateMemory(&pb.MemoryMap{Vmas: []*pb.Vma{v}, PagesBytes: 4 * ps}); err != nil {
		t.Errorf("resplit memory map: %v", err)
	}
	if zeroSkippable(&pb.Vma{Kind: pb.VmaKind_VMA_KIND_FILE}) {
		t.Error("a private file mapping's zero page would be left out: the file's data would show again")
	}
}
