package proc

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// PagemapEntry is one 64-bit entry of /proc/PID/pagemap, describing one
// virtual page. See Documentation/admin-guide/mm/pagemap.rst.
type PagemapEntry uint64

// Present reports bit 63: the page is in RAM.
func (e PagemapEntry) Present() bool { return e&(1<<63) != 0 }

// Swapped reports bit 62: the page is in swap.
func (e PagemapEntry) Swapped() bool { return e&(1<<62) != 0 }

// FileOrSharedAnon reports bit 61: the page is file-mapped or shared anonymous.
func (e PagemapEntry) FileOrSharedAnon() bool { return e&(1<<61) != 0 }

// Guard reports bit 58: the pte is a guard region marker (madvise(2)
// MADV_GUARD_INSTALL, since Linux 6.15). A guard page also has bit 62
// set, as if swapped: it is a non-present pte that is not none.
func (e PagemapEntry) Guard() bool { return e&(1<<58) != 0 }

// UffdWP reports bit 57: the pte is userfaultfd write-protected.
func (e PagemapEntry) UffdWP() bool { return e&(1<<57) != 0 }

// Exclusive reports bit 56: the page is exclusively mapped.
func (e PagemapEntry) Exclusive() bool { return e&(1<<56) != 0 }

// SoftDirty reports bit 55: the pte is soft-dirty
// (Documentation/admin-guide/mm/soft-dirty.rst).
func (e PagemapEntry) SoftDirty() bool { return e&(1<<55) != 0 }

// PFN returns bits 0-54: the page frame number if present (zero without
// CAP_SYS_ADMIN), or swap type and offset if swapped.
func (e PagemapEntry) PFN() uint64 { return uint64(e) & (1<<55 - 1) }

// Populated reports whether the page has content (present or swapped); an
// unpopulated page reads as zeros and need not be transferred.
func (e PagemapEntry) Populated() bool { return e&(3<<62) != 0 }

// maxPagemapBytes bounds ParsePagemap input (16 GiB of address space).
const maxPagemapBytes = 32 << 20

// ParsePagemap decodes little-endian pagemap entries. Its length must be a
// multiple of 8.
func ParsePagemap(b []byte) ([]PagemapEntry, error) {
	if len(b) > maxPagemapBytes {
		return nil, tooLarge("pagemap", 0, "%d bytes", len(b))
	}
	if len(b)%8 != 0 {
		return nil, malformed("pagemap", 0, "length %d not a multiple of 8", len(b))
	}
	out := make([]PagemapEntry, len(b)/8)
	for i := range out {
		out[i] = PagemapEntry(binary.LittleEndian.Uint64(b[i*8:]))
	}
	return out, nil
}

// pagemapChunk is the size of one pread on pagemap (8192 pages).
const pagemapChunk = 64 << 10

// OpenPagemap opens /proc/PID/pagemap for [ReadPagemap]. Reading another
// process's pagemap needs PTRACE_MODE_READ access to it.
func OpenPagemap(pid int) (*os.File, error) { return openFile(pidPath(pid, "pagemap")) }

// ReadPagemap reads the entries for the pages in [start, end) from an open
// pagemap file with pread(2), 64 KiB at a time, so a 1 GiB range takes 32
// syscalls. start and end must be page aligned.
func ReadPagemap(f *os.File, start, end uint64) ([]PagemapEntry, error) {
	ps := uint64(os.Getpagesize())
	if start%ps != 0 || end%ps != 0 || end < start {
		return nil, fmt.Errorf("read pagemap %#x-%#x: %w: range not page aligned", start, end, ErrMalformed)
	}
	n := (end - start) / ps
	if n > 1<<40/8 {
		return nil, fmt.Errorf("read pagemap %#x-%#x: %w", start, end, ErrTooLarge)
	}
	out := make([]PagemapEntry, n)
	buf := make([]byte, min(pagemapChunk, n*8))
	off := int64(start / ps * 8)
	for i := uint64(0); i < n; {
		want := min(uint64(len(buf)), (n-i)*8)
		got, err := f.ReadAt(buf[:want], off)
		if got%8 != 0 || (err != nil && (err != io.EOF || got == 0)) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("read pagemap at %#x: %w", start+i*ps, err)
		}
		for j := 0; j < got; j += 8 {
			out[i] = PagemapEntry(binary.LittleEndian.Uint64(buf[j:]))
			i++
		}
		off += int64(got)
	}
	return out, nil
}

// ReadPagemapPid opens /proc/PID/pagemap, reads [start, end) and closes it.
func ReadPagemapPid(pid int, start, end uint64) ([]PagemapEntry, error) {
	f, err := OpenPagemap(pid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadPagemap(f, start, end)
}
