package vmaflags

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }

// mmapFixed maps anonymous memory over b (MAP_FIXED) and returns it.
func mmapFixed(b []byte, prot, flags int) ([]byte, error) {
	p, err := unix.MmapPtr(-1, 0, unsafePointer(b), uintptr(len(b)), prot, flags|unix.MAP_FIXED)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice((*byte)(p), len(b)), nil
}
