package vmattr

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// Guard regions. madvise(2) MADV_GUARD_INSTALL (Linux 6.13) turns pages
// of a mapping into guard pages: page table markers, not VMAs, so that any
// access raises SIGSEGV (glibc and allocators use them for stack and heap
// guards). They are not a VmFlag of their own: Linux 6.15 shows each guard
// page in /proc/PID/pagemap (bit 58) and to PAGEMAP_SCAN (PAGE_IS_GUARD),
// and a later kernel marks the VMAs that may hold some with VM_MAYBE_GUARD
// ("gu" in VmFlags); see Documentation/admin-guide/mm/pagemap.rst and
// Documentation/filesystems/proc.rst.
//
// Dump: [DumpGuards] scans the VMAs that may hold guard pages (only those
// marked "gu" where the kernel marks them) and turns their guard pages into
// GUARD page runs. A guard page also reads as "swapped" in pagemap and
// PAGEMAP_SCAN, and reading its data fails (EIO): it must not stay a
// populated run.
//
// Restore: a GUARD run gets its guard again with MADV_GUARD_INSTALL once
// the VMA's data is in (installing zaps the range's pages) and before it is
// locked (the kernel refuses a guard in a VM_LOCKED VMA: EINVAL). In a
// lazy restore this is before the userfaultfd registration: a GUARD run is
// never a lazy run, so the page server never serves it and the handler
// never copies into it — it must not: UFFDIO_COPY overwrites a guard
// marker (measured on 6.18), and an access to a guard page raises SIGSEGV
// rather than a userfault, so no fault ever asks for it.
//
// Refused: a guard page in a shared memory mapping (anonymous shared,
// memfd, unlinked tmpfs), whose object's page under the guard cannot be
// read through the mapping; a kernel that installs guards but cannot show
// them, when a VMA has pages it shows as swapped out (they may be guards).
type guardAttr struct{}

// GuardSupport is how the running kernel shows guard regions (the
// guard-regions probe in package probe finds out).
type GuardSupport int

const (
	// GuardNone: the kernel has no MADV_GUARD_INSTALL (before Linux 6.13),
	// so no process has guard pages.
	GuardNone GuardSupport = iota
	// GuardFlagged: the VMAs that may hold guard pages have "gu" in
	// VmFlags, and PAGEMAP_SCAN finds the pages (PAGE_IS_GUARD): only the
	// VMAs with "gu" are scanned.
	GuardFlagged
	// GuardScan: PAGEMAP_SCAN finds guard pages but no VmFlag marks their
	// VMAs (Linux 6.15 to 6.18): every VMA is scanned.
	GuardScan
	// GuardBlind: guard pages can be installed but not seen (Linux 6.13,
	// 6.14: pagemap shows a guard page as swapped out). A VMA with a page
	// that reads as swapped out is refused.
	GuardBlind
)

func (s GuardSupport) String() string {
	switch s {
	case GuardNone:
		return "none"
	case GuardFlagged:
		return "flagged"
	case GuardScan:
		return "scan"
	case GuardBlind:
		return "blind"
	}
	return fmt.Sprintf("GuardSupport(%d)", int(s))
}

// Scanner lists the pages of [start, end) that are in every PAGEMAP_SCAN
// category of mask (kabi.PAGE_IS_*), as merged ranges: the dump passes
// [proc.ScanCategory] on the process's pagemap.
type Scanner func(start, end, mask uint64) ([]proc.Range, error)

// ErrRefused marks an error of [DumpGuards] that refuses the VMA (the
// dump reports it as unsupported), as opposed to a failure to read.
var ErrRefused = errors.New("cannot be restored exactly")

// DumpGuards finds v's guard pages with scan, as s allows, and turns them
// into GUARD runs of v.Pages (which must tile v). It refuses (wrapping
// [ErrRefused]) what cannot come back.
func DumpGuards(v *pb.Vma, s GuardSupport, scan Scanner) error {
	if special(v) {
		return nil
	}
	switch s {
	case GuardNone:
		return nil
	case GuardFlagged:
		if !has(v, "gu") {
			return nil
		}
	case GuardBlind:
		rs, err := scan(v.Start, v.End, kabi.PAGE_IS_SWAPPED)
		if err != nil {
			return err
		}
		if len(rs) > 0 {
			return fmt.Errorf("%w: page %#x reads as swapped out, and this kernel (before Linux 6.15) shows a guard page (MADV_GUARD_INSTALL) the same way: it cannot tell whether it is one", ErrRefused, rs[0].Start)
		}
		return nil
	}
	rs, err := scan(v.Start, v.End, kabi.PAGE_IS_GUARD)
	if err != nil {
		return err
	}
	if len(rs) == 0 {
		return nil
	}
	if v.Kind == pb.VmaKind_VMA_KIND_SHARED_ANON || v.Shm != 0 {
		return fmt.Errorf("%w: guard page at %#x in a shared memory mapping: the object's page under it cannot be read through the mapping", ErrRefused, rs[0].Start)
	}
	for _, r := range rs {
		if r.Start < v.Start || r.End > v.End || r.Start >= r.End || r.Start%image.PageSize != 0 || r.End%image.PageSize != 0 {
			return fmt.Errorf("guard range %#x-%#x does not fit vma %#x-%#x", r.Start, r.End, v.Start, v.End)
		}
	}
	v.Pages = carveGuards(v, rs)
	return nil
}

// carveGuards returns v's runs with the ranges rs (sorted, disjoint,
// inside v) turned into GUARD runs; pages no run covers are ZERO.
func carveGuards(v *pb.Vma, rs []proc.Range) []*pb.PageRun {
	runs := v.Pages
	if len(runs) == 0 {
		runs = []*pb.PageRun{{Addr: v.Start, Npages: (v.End - v.Start) / image.PageSize, State: pb.PageState_PAGE_STATE_ZERO}}
	}
	var out []*pb.PageRun
	add := func(r *pb.PageRun, s, e uint64, st pb.PageState) {
		if e <= s {
			return
		}
		n := &pb.PageRun{Addr: s, Npages: (e - s) / image.PageSize, State: st}
		if st == pb.PageState_PAGE_STATE_EAGER {
			n.Offset = r.Offset + (s - r.Addr)
		}
		if k := len(out); k > 0 && st == pb.PageState_PAGE_STATE_GUARD && out[k-1].State == st && out[k-1].Addr+out[k-1].Npages*image.PageSize == s {
			out[k-1].Npages += n.Npages
			return
		}
		out = append(out, n)
	}
	g := 0
	for _, r := range runs {
		at, end := r.Addr, r.Addr+r.Npages*image.PageSize
		for at < end {
			for g < len(rs) && rs[g].End <= at {
				g++
			}
			if g == len(rs) || rs[g].Start >= end {
				add(r, at, end, r.State)
				break
			}
			add(r, at, max(at, rs[g].Start), r.State)
			ge := min(end, rs[g].End)
			add(r, max(at, rs[g].Start), ge, pb.PageState_PAGE_STATE_GUARD)
			at = ge
		}
	}
	return out
}

// guardRuns returns v's GUARD runs.
func guardRuns(v *pb.Vma) []*pb.PageRun {
	var out []*pb.PageRun
	for _, r := range v.Pages {
		if r.State == pb.PageState_PAGE_STATE_GUARD {
			out = append(out, r)
		}
	}
	return out
}

func (guardAttr) check(v *pb.Vma) error { return nil }

func (guardAttr) apply(c Caller, v *pb.Vma) error {
	for _, r := range guardRuns(v) {
		if _, err := call(c, fmt.Sprintf("madvise(MADV_GUARD_INSTALL) at %#x", r.Addr), unix.SYS_MADVISE,
			uintptr(r.Addr), uintptr(r.Npages*image.PageSize), unix.MADV_GUARD_INSTALL); err != nil {
			return err
		}
	}
	return nil
}

func (guardAttr) show(v *pb.Vma) string {
	var n uint64
	for _, r := range guardRuns(v) {
		n += r.Npages
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("guard=%d", n)
}
