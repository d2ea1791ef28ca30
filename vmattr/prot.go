package vmattr

import (
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Protection. A VMA's protection is exact when it is mapped with it; but
// process_vm_writev(2) needs PROT_WRITE (a write through /proc/PID/mem
// reaches a read-only or PROT_NONE page of a private mapping, FOLL_FORCE,
// at a slower rate). So a VMA with page data to write is mapped with
// [FillProt], filled, and given its protection with mprotect(2) after.
//
// Commit accounting. mmap(2) charges a private writable mapping to the
// commit limit and marks it VM_ACCOUNT ("ac" in VmFlags, unless it is
// MAP_NORESERVE, "nr"; Documentation/mm/overcommit-accounting.rst).
// mprotect(2) to read-only or PROT_NONE keeps the mark of a file mapping,
// and of an anonymous one only once it has an anon_vma, i.e. once a page of
// it was written (mm/mprotect.c mprotect_fixup: "cannot reduce our commit
// if we make it unwritable again except in the anonymous case where no
// anon_vma has yet to be assigned"); a mapping made without PROT_WRITE
// never gets it, even when its pages are written through /proc/PID/mem.
// The mark matters: without it, making the mapping writable again is
// charged anew and can fail (ENOMEM) under vm.overcommit_memory=2 where
// the original's would not, and Committed_AS differs. So a private VMA
// that is not writable is mapped writable when it has "ac" (and an
// anonymous one is given an anon_vma before its mprotect: by its eager
// pages being written, or, with none, by populating its first page for
// writing and dropping that fresh zero page again), and with its own
// protection when it has neither "ac" nor "nr" (its eager pages are then
// written through /proc/PID/mem).
//
// Max protection. mprotect(2) may later give a mapping only what its
// VM_MAYREAD/VM_MAYWRITE/VM_MAYEXEC allow ("mr mw me" in VmFlags). For a
// MAP_SHARED file mapping VM_MAYWRITE comes from the file having been open
// for writing when it was mapped (mmap(2): EACCES "a file mapping was
// requested, but fd is not open for reading" / "MAP_SHARED was requested and
// PROT_WRITE is set, but fd is not open in read/write mode"; do_mmap clears
// VM_MAYWRITE otherwise), so the file is opened again with [OpenAccess].
type protAttr struct{}

func (protAttr) check(v *pb.Vma) error { return nil }

func (protAttr) apply(c Caller, v *pb.Vma) error {
	fill := FillProt(v)
	if fill == v.Prot {
		return nil
	}
	if accounted(v) && anonymous(v) && !hasEager(v) {
		// No page was written: the VMA has no anon_vma yet, and mprotect
		// would drop its VM_ACCOUNT. A write fault on its first page makes
		// one (MADV_POPULATE_WRITE, madvise(2)); the page holds the zeros
		// the fault made, not data (a lazy page's data is installed later,
		// through the userfaultfd registered after this), so it is dropped
		// again and the range stays as the image has it.
		page := uintptr(image.PageSize)
		if _, err := call(c, "madvise(populate_write)", unix.SYS_MADVISE, uintptr(v.Start), page, unix.MADV_POPULATE_WRITE); err != nil {
			return err
		}
		if _, err := call(c, "madvise(dontneed)", unix.SYS_MADVISE, uintptr(v.Start), page, unix.MADV_DONTNEED); err != nil {
			return err
		}
	}
	if _, err := call(c, fmt.Sprintf("mprotect(%s)", ProtString(v.Prot)), unix.SYS_MPROTECT,
		uintptr(v.Start), uintptr(v.End-v.Start), uintptr(v.Prot)); err != nil {
		return err
	}
	return nil
}

func (protAttr) show(v *pb.Vma) string {
	var may uint32
	for f, p := range map[string]uint32{"mr": unix.PROT_READ, "mw": unix.PROT_WRITE, "me": unix.PROT_EXEC} {
		if has(v, f) {
			may |= p
		}
	}
	// The usual case (everything allowed) is not worth a word; a special
	// mapping's VmFlags are the kernel's business.
	if may == unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC || len(v.VmFlags) == 0 {
		return ""
	}
	return "may=" + ProtString(may)
}

// FillProt is the protection to map v with so that its page data can be
// written and its commit accounting comes out as the original's: its own,
// plus read and write for a private mapping with VM_ACCOUNT ("ac") or
// while it has eager pages and its own protection lacks either; but its
// own for a private mapping with eager pages that was never accounted
// (mapping it writable would account it). A shared file mapping never
// gets more (its data is the file's, and a read-only file cannot be
// mapped writable).
func FillProt(v *pb.Vma) uint32 {
	const rw = unix.PROT_READ | unix.PROT_WRITE
	switch {
	case v.Prot&rw == rw || (v.Kind == pb.VmaKind_VMA_KIND_FILE && v.Shared):
		return v.Prot
	case accounted(v):
		return v.Prot | rw
	case !hasEager(v) || unaccounted(v):
		return v.Prot
	}
	return v.Prot | rw
}

// accounted reports whether v is a private mapping charged to the commit
// limit (VM_ACCOUNT, "ac").
func accounted(v *pb.Vma) bool { return !v.Shared && has(v, "ac") }

// unaccounted reports whether v is a private mapping whose VmFlags are
// known and say it is not charged, though mapping it writable would charge
// it: neither "ac" nor "nr" (a MAP_NORESERVE mapping is never charged,
// writable or not).
func unaccounted(v *pb.Vma) bool {
	return !v.Shared && len(v.VmFlags) > 0 && !has(v, "ac") && !has(v, "nr")
}

// anonymous reports whether v is private anonymous memory (heap and stack
// included): vma_is_anonymous in the kernel, the mappings whose VM_ACCOUNT
// mprotect drops without an anon_vma.
func anonymous(v *pb.Vma) bool {
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_ANON, pb.VmaKind_VMA_KIND_HEAP, pb.VmaKind_VMA_KIND_STACK:
		return !v.Shared && v.Shm == 0
	}
	return false
}

// OpenAccess is the access mode to open a file-backed VMA's file with:
// O_RDWR for a shared mapping that may be made writable ("mw"), else
// O_RDONLY (a private mapping may always be written; its pages are copies).
func OpenAccess(v *pb.Vma) int {
	if v.Shared && (has(v, "mw") || v.Prot&unix.PROT_WRITE != 0) {
		return unix.O_RDWR
	}
	return unix.O_RDONLY
}

// ProtString is PROT_* bits as the maps permission letters ("r-x").
func ProtString(p uint32) string {
	b := []byte("---")
	if p&unix.PROT_READ != 0 {
		b[0] = 'r'
	}
	if p&unix.PROT_WRITE != 0 {
		b[1] = 'w'
	}
	if p&unix.PROT_EXEC != 0 {
		b[2] = 'x'
	}
	return string(b)
}

func hasEager(v *pb.Vma) bool {
	for _, r := range v.Pages {
		if r.State == pb.PageState_PAGE_STATE_EAGER {
			return true
		}
	}
	return false
}
