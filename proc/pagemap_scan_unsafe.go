package proc

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// PopulatedRegion is a range of pages that hold data (present or swapped),
// as PAGEMAP_SCAN reports it.
type PopulatedRegion struct {
	Start, End uint64
	// ZeroPFN: every page of the range maps the shared zero page: it was
	// only ever read, its content is zeros.
	ZeroPFN bool
}

// ErrScanUnsupported reports a kernel without the PAGEMAP_SCAN ioctl
// (Linux < 6.7): callers fall back to reading pagemap entries.
var ErrScanUnsupported = errors.New("PAGEMAP_SCAN not supported")

// ScanPopulated lists the populated pages of [start, end) with the
// PAGEMAP_SCAN ioctl on an open /proc/PID/pagemap: one call returns ranges,
// where reading the pagemap costs 8 bytes per page (a 4 GiB mapping is 8 MiB
// of entries). See Documentation/admin-guide/mm/pagemap.rst, "PAGEMAP_SCAN".
func ScanPopulated(f *os.File, start, end uint64) ([]PopulatedRegion, error) {
	var out []PopulatedRegion
	vec := make([]kabi.PageRegion, 512)
	for start < end {
		arg := kabi.PmScanArg{
			Size:              kabi.SizeofPmScanArg,
			Start:             start,
			End:               end,
			Vec:               unsafe.Pointer(&vec[0]),
			VecLen:            uint64(len(vec)),
			CategoryAnyofMask: kabi.PAGE_IS_PRESENT | kabi.PAGE_IS_SWAPPED,
			ReturnMask:        kabi.PAGE_IS_PRESENT | kabi.PAGE_IS_SWAPPED | kabi.PAGE_IS_PFNZERO,
		}
		n, err := kabi.IoctlRet(int(f.Fd()), kabi.PAGEMAP_SCAN, unsafe.Pointer(&arg))
		if err != nil {
			if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
				return nil, fmt.Errorf("scan %s %#x-%#x: %w: %v", f.Name(), start, end, ErrScanUnsupported, err)
			}
			return nil, fmt.Errorf("scan %s %#x-%#x: %w", f.Name(), start, end, err)
		}
		for _, r := range vec[:n] {
			z := r.Categories&kabi.PAGE_IS_PFNZERO != 0
			if k := len(out); k > 0 && out[k-1].End == r.Start && out[k-1].ZeroPFN == z {
				out[k-1].End = r.End
				continue
			}
			out = append(out, PopulatedRegion{Start: r.Start, End: r.End, ZeroPFN: z})
		}
		if arg.WalkEnd <= start {
			return nil, fmt.Errorf("scan %s %#x-%#x: the walk did not advance", f.Name(), start, end)
		}
		start = arg.WalkEnd
	}
	return out, nil
}

// Range is an address range [Start, End).
type Range struct{ Start, End uint64 }

// ScanCategory lists the pages of [start, end) that are in every category
// of mask (kabi.PAGE_IS_*), merged into ranges, with the PAGEMAP_SCAN
// ioctl on an open /proc/PID/pagemap. A kernel that does not know a
// category of mask refuses the scan with EINVAL ([ErrScanUnsupported]):
// PAGE_IS_GUARD came in Linux 6.15 (Documentation/admin-guide/mm/pagemap.rst).
func ScanCategory(f *os.File, start, end, mask uint64) ([]Range, error) {
	return scanRanges(f, start, end, kabi.PmScanArg{CategoryMask: mask, ReturnMask: mask})
}

// ScanCopied lists the pages of [start, end) that are present or swapped
// out and not file pages (PAGE_IS_FILE clear, inverted in the scan), as
// merged ranges: in a private file mapping, the pages copied on write,
// whose data is no longer the file's. One PAGEMAP_SCAN walk, which skips
// page tables that do not exist (Documentation/admin-guide/mm/pagemap.rst:
// category_inverted applies before category_mask and
// category_anyof_mask).
func ScanCopied(f *os.File, start, end uint64) ([]Range, error) {
	return scanRanges(f, start, end, kabi.PmScanArg{
		CategoryInverted:  kabi.PAGE_IS_FILE,
		CategoryMask:      kabi.PAGE_IS_FILE,
		CategoryAnyofMask: kabi.PAGE_IS_PRESENT | kabi.PAGE_IS_SWAPPED,
		ReturnMask:        kabi.PAGE_IS_PRESENT | kabi.PAGE_IS_SWAPPED,
	})
}

// scanRanges runs PAGEMAP_SCAN over [start, end) with the categories of
// q (its Size, range and vector are filled in here) and merges what it
// returns into ranges.
func scanRanges(f *os.File, start, end uint64, q kabi.PmScanArg) ([]Range, error) {
	var out []Range
	vec := make([]kabi.PageRegion, 64)
	for start < end {
		arg := q
		arg.Size, arg.Start, arg.End = kabi.SizeofPmScanArg, start, end
		arg.Vec, arg.VecLen = unsafe.Pointer(&vec[0]), uint64(len(vec))
		n, err := kabi.IoctlRet(int(f.Fd()), kabi.PAGEMAP_SCAN, unsafe.Pointer(&arg))
		if err != nil {
			if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
				return nil, fmt.Errorf("scan %s %#x-%#x for categories %#x: %w: %v", f.Name(), start, end, q.CategoryMask, ErrScanUnsupported, err)
			}
			return nil, fmt.Errorf("scan %s %#x-%#x for categories %#x: %w", f.Name(), start, end, q.CategoryMask, err)
		}
		for _, r := range vec[:n] {
			if k := len(out); k > 0 && out[k-1].End == r.Start {
				out[k-1].End = r.End
				continue
			}
			out = append(out, Range{Start: r.Start, End: r.End})
		}
		if arg.WalkEnd <= start {
			return nil, fmt.Errorf("scan %s %#x-%#x: the walk did not advance", f.Name(), start, end)
		}
		start = arg.WalkEnd
	}
	return out, nil
}
