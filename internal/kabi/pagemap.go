package kabi

// PAGEMAP_SCAN, include/uapi/linux/fs.h; see Documentation/admin-guide/mm/pagemap.rst.
// The ioctl is issued on an open /proc/PID/pagemap and returns the number of
// PageRegion entries it filled.

// PAGE_IS_* page categories (PmScanArg masks, PageRegion.Categories).
const (
	PAGE_IS_WPALLOWED  = 1 << 0
	PAGE_IS_WRITTEN    = 1 << 1
	PAGE_IS_FILE       = 1 << 2
	PAGE_IS_PRESENT    = 1 << 3
	PAGE_IS_SWAPPED    = 1 << 4
	PAGE_IS_PFNZERO    = 1 << 5
	PAGE_IS_HUGE       = 1 << 6
	PAGE_IS_SOFT_DIRTY = 1 << 7
	PAGE_IS_GUARD      = 1 << 8
)

// PM_SCAN_* flags (PmScanArg.Flags).
const (
	PM_SCAN_WP_MATCHING   = 1 << 0
	PM_SCAN_CHECK_WPASYNC = 1 << 1
)

// PageRegion is struct page_region: [Start, End) shares Categories.
type PageRegion struct {
	Start      uint64
	End        uint64
	Categories uint64
}
