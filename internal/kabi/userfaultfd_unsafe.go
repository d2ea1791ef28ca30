package kabi

import "unsafe"

// userfaultfd ioctl requests, include/uapi/linux/userfaultfd.h.
var (
	UFFDIO_API          = IOWR(UFFDIO, UFFDIO_NR_API, unsafe.Sizeof(UffdioAPI{}))
	UFFDIO_REGISTER     = IOWR(UFFDIO, UFFDIO_NR_REGISTER, unsafe.Sizeof(UffdioRegister{}))
	UFFDIO_UNREGISTER   = IOR(UFFDIO, UFFDIO_NR_UNREGISTER, unsafe.Sizeof(UffdioRange{}))
	UFFDIO_WAKE         = IOR(UFFDIO, UFFDIO_NR_WAKE, unsafe.Sizeof(UffdioRange{}))
	UFFDIO_COPY         = IOWR(UFFDIO, UFFDIO_NR_COPY, unsafe.Sizeof(UffdioCopy{}))
	UFFDIO_ZEROPAGE     = IOWR(UFFDIO, UFFDIO_NR_ZEROPAGE, unsafe.Sizeof(UffdioZeropage{}))
	UFFDIO_MOVE         = IOWR(UFFDIO, UFFDIO_NR_MOVE, unsafe.Sizeof(UffdioMove{}))
	UFFDIO_WRITEPROTECT = IOWR(UFFDIO, UFFDIO_NR_WRITEPROTECT, unsafe.Sizeof(UffdioWriteprotect{}))
	UFFDIO_CONTINUE     = IOWR(UFFDIO, UFFDIO_NR_CONTINUE, unsafe.Sizeof(UffdioContinue{}))
	UFFDIO_POISON       = IOWR(UFFDIO, UFFDIO_NR_POISON, unsafe.Sizeof(UffdioPoison{}))

	// USERFAULTFD_IOC_NEW is _IO(USERFAULTFD_IOC, 0x00) on /dev/userfaultfd:
	// its argument is the userfaultfd(2) flags, it returns a new uffd.
	USERFAULTFD_IOC_NEW = IO(USERFAULTFD_IOC, 0x00)
)

// UffdioCopy is struct uffdio_copy. Src points to the caller's buffer, so
// it is an unsafe.Pointer: the garbage collector then keeps the buffer
// alive and in place for the ioctl (a uint64 would not pin it, and a buffer
// on a goroutine stack could move when the stack grows). Dst is an address
// in the registered process, not in ours. Copy is written by the kernel:
// bytes copied, or a negative errno.
type UffdioCopy struct {
	Dst  uint64
	Src  unsafe.Pointer
	Len  uint64
	Mode uint64
	Copy int64
}

// SizeofUffdMsg is sizeof(struct uffd_msg).
const SizeofUffdMsg = int(unsafe.Sizeof(UffdMsg{}))
