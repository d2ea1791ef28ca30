package probe

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapping is memory the probes map for the kernel to work on (a range to
// register on userfaultfd, a range to scan). It is mmap(2)ed, not Go
// memory: the garbage collector never moves it, so its address may travel
// as the plain integer the kernel ABI wants for a range ([kabi.PmScanArg]
// Start/End, UFFDIO_REGISTER's range) — unlike a pointer to a Go buffer,
// which must stay an unsafe.Pointer field.
type mapping struct {
	addr uint64 // where the kernel mapped it
	b    []byte // the same bytes, for the probe to touch
}

// mapMemory wraps [unix.MmapPtr]: length bytes of fd (-1: anonymous).
func mapMemory(fd int, length, prot, flags int) (*mapping, error) {
	p, err := unix.MmapPtr(fd, 0, nil, uintptr(length), prot, flags)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return &mapping{addr: uint64(uintptr(p)), b: unsafe.Slice((*byte)(p), length)}, nil
}

// unmap wraps [unix.MunmapPtr].
func (m *mapping) unmap() {
	_ = unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(m.b)), uintptr(len(m.b)))
}
