package kabi

import "unsafe"

// PAGEMAP_SCAN is _IOWR('f', 16, struct pm_scan_arg), include/uapi/linux/fs.h.
var PAGEMAP_SCAN = IOWR('f', 16, unsafe.Sizeof(PmScanArg{}))

// SizeofPmScanArg is sizeof(struct pm_scan_arg), the value of PmScanArg.Size.
const SizeofPmScanArg = uint64(unsafe.Sizeof(PmScanArg{}))
