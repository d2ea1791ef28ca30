package image

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

// TestCheckComplete: a set with lazy runs is refused, naming every VMA that
// lacks data with its runs; a set whose runs are all eager, zero or file is
// complete.
func TestCheckComplete(t *testing.T) {
	s := sampleSet()
	s.Inventory.Lazy = true
	err := s.CheckComplete()
	if !errors.Is(err, ErrLazySkeleton) {
		t.Fatalf("CheckComplete of a set with lazy runs: %v, want ErrLazySkeleton", err)
	}
	pid := s.Root().Pid
	for _, want := range []string{
		"dump --lazy", "restore --lazy-from",
		"vma 0x403000-0x407000 ([heap]): 2 pages in runs 0x403000+2",
		"vma 0x7f0000000000-0x7f0000010000 (anonymous): 10 pages in runs 0x7f0000002000+10",
		"vma 0x7ffc00000000-0x7ffc00021000 ([stack]): 2 pages in runs 0x7ffc0001d000+2",
		"17 pages in 4 VMAs",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !strings.Contains(err.Error(), "pid "+strconv.FormatUint(uint64(pid), 10)) {
		t.Errorf("error %q does not name pid %d", err, pid)
	}

	// Turn every lazy run into zero pages: nothing is missing any more.
	for _, mm := range s.Memory {
		for _, v := range mm.Vmas {
			for _, r := range v.Pages {
				if r.State == pb.PageState_PAGE_STATE_LAZY {
					r.State = pb.PageState_PAGE_STATE_ZERO
				}
			}
		}
	}
	if err := s.CheckComplete(); err != nil {
		t.Fatalf("CheckComplete without lazy runs: %v", err)
	}
}

// TestCheckCompleteBounded: a skeleton with many lazy VMAs and runs gets an
// error of bounded size that still counts everything.
func TestCheckCompleteBounded(t *testing.T) {
	s := sampleSet()
	mm := s.Memory[s.Root().Pid]
	const base = 0x100000000
	var vmas []*pb.Vma
	for i := range 100 {
		start := uint64(base + i*64*PageSize)
		var runs []*pb.PageRun
		for j := range 32 {
			runs = append(runs, &pb.PageRun{Addr: start + uint64(j)*2*PageSize, Npages: 1, State: pb.PageState_PAGE_STATE_LAZY},
				&pb.PageRun{Addr: start + uint64(j)*2*PageSize + PageSize, Npages: 1, State: pb.PageState_PAGE_STATE_ZERO})
		}
		vmas = append(vmas, &pb.Vma{Start: start, End: start + 64*PageSize, Kind: pb.VmaKind_VMA_KIND_ANON, Pages: runs})
	}
	mm.Vmas, mm.PagesBytes = vmas, 0
	if err := ValidateMemory(mm); err != nil {
		t.Fatal(err)
	}
	err := s.CheckComplete()
	if !errors.Is(err, ErrLazySkeleton) {
		t.Fatalf("CheckComplete: %v, want ErrLazySkeleton", err)
	}
	if n := len(err.Error()); n > 4096 {
		t.Errorf("error is %d bytes long", n)
	}
	for _, want := range []string{"3203 pages in 101 VMAs", "and 24 more runs", "93 more VMAs"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
