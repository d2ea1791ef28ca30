package kabi

import "unsafe"

// PAGEMAP_SCAN is _IOWR('f', 16, struct pm_scan_arg), include/uapi/linux/fs.h.
var PAGEMAP_SCAN = IOWR('f', 16, unsafe.Sizeof(PmScanArg{}))

// SizeofPmScanArg is sizeof(struct pm_scan_arg), the value of PmScanArg.Size.
const SizeofPmScanArg = uint64(unsafe.Sizeof(PmScanArg{}))

// PmScanArg is struct pm_scan_arg. Size must be sizeof(struct pm_scan_arg);
// WalkEnd is written by the kernel (where the walk stopped).
// Vec is a pointer into our own memory that the kernel writes through: an
// unsafe.Pointer (as cilium/ebpf's internal/sys.Pointer), so the garbage
// collector keeps the buffer alive and a stack copy moves the pointer with
// the buffer; an integer would leave the kernel writing into a stale stack.
type PmScanArg struct {
	Size              uint64
	Flags             uint64
	Start             uint64
	End               uint64
	WalkEnd           uint64
	Vec               unsafe.Pointer // *PageRegion
	VecLen            uint64
	MaxPages          uint64
	CategoryInverted  uint64
	CategoryMask      uint64
	CategoryAnyofMask uint64
	ReturnMask        uint64
}
