package vmattr

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Protection. A VMA's protection is exact when it is mapped with it; but
// page data cannot be written into a PROT_NONE page (neither
// process_vm_writev(2) nor /proc/PID/mem reach it) and process_vm_writev
// needs PROT_WRITE. So a VMA with page data to write is mapped with
// [FillProt], filled, and given its protection with mprotect(2) after.
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
// written: its own, plus read and write while it has eager pages and its
// own protection lacks either. A shared file mapping never gets more (its
// data is the file's, and a read-only file cannot be mapped writable).
func FillProt(v *pb.Vma) uint32 {
	const rw = unix.PROT_READ | unix.PROT_WRITE
	if v.Prot&rw == rw || (v.Kind == pb.VmaKind_VMA_KIND_FILE && v.Shared) || !hasEager(v) {
		return v.Prot
	}
	return v.Prot | rw
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
