package dump

import (
	"fmt"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// TestTakeShmPages checks that the first VMA to map an object page keeps
// its EAGER data and a later VMA of the same pages gets FILE runs there,
// by object offset (not address), zero runs left alone.
func TestTakeShmPages(t *testing.T) {
	const P = image.PageSize
	eager, zero := pb.PageState_PAGE_STATE_EAGER, pb.PageState_PAGE_STATE_ZERO
	runs := func(v *pb.Vma) string {
		s := ""
		for _, r := range v.Pages {
			s += fmt.Sprintf("%d:%d%s ", (r.Addr-v.Start)/P, r.Npages, r.State.String()[11:12])
		}
		return s
	}
	held := &pages{}
	// Object pages 0-3 at 0x10000.
	a := &pb.Vma{Start: 0x10000, End: 0x10000 + 4*P, Pages: []*pb.PageRun{
		{Addr: 0x10000, Npages: 3, State: eager}, {Addr: 0x10000 + 3*P, Npages: 1, State: zero}}}
	if n, _ := takeShmPages(a, held, nil); n != 0 || runs(a) != "0:3E 3:1Z " {
		t.Errorf("first vma: %d pages turned, runs %s", n, runs(a))
	}
	// Object pages 2-5 (offset 2 pages) elsewhere: 2 and 3 are held.
	b := &pb.Vma{Start: 0x80000, End: 0x80000 + 4*P, Offset: 2 * P, Pages: []*pb.PageRun{{Addr: 0x80000, Npages: 4, State: eager}}}
	if n, _ := takeShmPages(b, held, nil); n != 2 || runs(b) != "0:2F 2:2E " {
		t.Errorf("second vma: %d pages turned, runs %s", n, runs(b))
	}
	// All of 0-5 held now.
	c := &pb.Vma{Start: 0x90000, End: 0x90000 + 6*P, Pages: []*pb.PageRun{{Addr: 0x90000, Npages: 6, State: eager}}}
	if n, _ := takeShmPages(c, held, nil); n != 6 || runs(c) != "0:6F " {
		t.Errorf("third vma: %d pages turned, runs %s", n, runs(c))
	}
	// Object pages 6-9, of which 7 and 8 hold data.
	d := &pb.Vma{Start: 0xa0000, End: 0xa0000 + 4*P, Offset: 6 * P, Pages: []*pb.PageRun{{Addr: 0xa0000, Npages: 4, State: eager}}}
	data := &pages{}
	data.add(7)
	data.add(8)
	if f, z := takeShmPages(d, held, data); f != 0 || z != 2 || runs(d) != "0:1Z 1:2E 3:1Z " {
		t.Errorf("fourth vma: %d to file, %d to zero, runs %s", f, z, runs(d))
	}
	if err := image.ValidateMemory(&pb.MemoryMap{Vmas: []*pb.Vma{c}}); err != nil {
		t.Errorf("third vma: %v", err)
	}
}

// The pages bitmap: a nil set holds nothing, add grows it, 64-page words
// keep their neighbours.
func TestPagesBitmap(t *testing.T) {
	var none *pages
	if none.has(0) || none.has(1<<40) {
		t.Error("a nil pages holds a page")
	}
	p := &pages{}
	want := map[uint64]bool{0: true, 63: true, 64: true, 1000: true, 262143: true}
	for n := range want {
		p.add(n)
	}
	for n := uint64(0); n < 262200; n++ {
		if p.has(n) != want[n] {
			t.Fatalf("page %d: has %v, want %v", n, p.has(n), want[n])
		}
	}
}
