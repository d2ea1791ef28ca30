package kabi

// ioctl request encoding, include/uapi/asm-generic/ioctl.h (x86 uses the
// generic layout): nr in bits 0-7, type in bits 8-15, size in bits 16-29,
// direction in bits 30-31.
const (
	iocNRBits   = 8
	iocTypeBits = 8
	iocSizeBits = 14

	iocNRShift   = 0
	iocTypeShift = iocNRShift + iocNRBits
	iocSizeShift = iocTypeShift + iocTypeBits
	iocDirShift  = iocSizeShift + iocSizeBits

	// IOC_NONE, IOC_WRITE and IOC_READ are the _IOC_* directions.
	IOC_NONE  = 0
	IOC_WRITE = 1
	IOC_READ  = 2
)

// IOC is the C macro _IOC(dir, type, nr, size).
func IOC(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | typ<<iocTypeShift | nr<<iocNRShift | size<<iocSizeShift
}

// IO is the C macro _IO(type, nr).
func IO(typ, nr uintptr) uintptr { return IOC(IOC_NONE, typ, nr, 0) }

// IOR is the C macro _IOR(type, nr, size): the kernel writes to user memory.
func IOR(typ, nr, size uintptr) uintptr { return IOC(IOC_READ, typ, nr, size) }

// IOW is the C macro _IOW(type, nr, size): the kernel reads user memory.
func IOW(typ, nr, size uintptr) uintptr { return IOC(IOC_WRITE, typ, nr, size) }

// IOWR is the C macro _IOWR(type, nr, size).
func IOWR(typ, nr, size uintptr) uintptr { return IOC(IOC_READ|IOC_WRITE, typ, nr, size) }
