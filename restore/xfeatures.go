package restore

import (
	"fmt"
	"math/bits"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// archGetXcompSupp is ARCH_GET_XCOMP_SUPP (arch/x86/include/uapi/asm/prctl.h,
// Linux 5.16+): arch_prctl(2) writes the xfeatures this kernel and CPU
// support for user space, the dynamically enabled ones (AMX) included.
const archGetXcompSupp = 0x1021

// hostXfeatures returns the xfeatures this host supports, or an error on
// a kernel without ARCH_GET_XCOMP_SUPP (then nothing is checked).
func hostXfeatures() (uint64, error) {
	var mask uint64
	if _, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, archGetXcompSupp, uintptr(unsafe.Pointer(&mask)), 0); e != 0 {
		return 0, fmt.Errorf("arch_prctl ARCH_GET_XCOMP_SUPP: %w", e)
	}
	return mask, nil
}

// xfeatureNames names the XSAVE state components (Intel SDM vol. 1,
// 13.1 "XSAVE-supported features and state-component bitmaps").
var xfeatureNames = map[int]string{
	0: "x87", 1: "SSE", 2: "AVX", 3: "MPX BNDREGS", 4: "MPX BNDCSR",
	5: "AVX-512 opmask", 6: "AVX-512 ZMM_Hi256", 7: "AVX-512 Hi16_ZMM",
	9: "PKRU", 11: "CET user", 17: "AMX TILECFG", 18: "AMX TILEDATA", 19: "APX",
}

// checkXfeatures refuses an image whose process used XSAVE state
// components (image, the dumping thread's xfeatures) that this host does
// not support (host): its registers could not be loaded, and code that
// chose, say, AVX-512 routines at start-up would die of SIGILL here.
func checkXfeatures(image, host uint64) error {
	missing := image &^ host
	if missing == 0 {
		return nil
	}
	var names []string
	for m := missing; m != 0; m &= m - 1 {
		b := bits.TrailingZeros64(m)
		if n, ok := xfeatureNames[b]; ok {
			names = append(names, n)
		} else {
			names = append(names, fmt.Sprintf("xfeature %d", b))
		}
	}
	return fmt.Errorf("%w: the process used CPU state this host lacks: %s (xfeatures %#x, this host %#x): restore it on a CPU with the same extensions",
		ErrIncompatible, strings.Join(names, ", "), image, host)
}
