package vmattr

import (
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// madviseFlags maps the VmFlags that madvise(2) sets to the advice that
// sets them again (fs/proc/task_mmu.c show_smap_vma_flags; proc(5)
// "VmFlags"). THP and KSM advice have their own files.
var madviseFlags = []struct {
	flag, name string
	advice     uintptr
}{
	{"sr", "sequential", unix.MADV_SEQUENTIAL},
	{"rr", "random", unix.MADV_RANDOM},
	{"dc", "dontfork", unix.MADV_DONTFORK},
	{"wf", "wipeonfork", unix.MADV_WIPEONFORK},
	{"dd", "dontdump", unix.MADV_DONTDUMP},
}

// madviseAttr is the madvise(2) state kept in vm_flags: read-ahead hints
// (VM_SEQ_READ, VM_RAND_READ), VM_DONTCOPY, VM_WIPEONFORK, VM_DONTDUMP.
// Lost, a child forked after restore would see memory it must not
// (WIPEONFORK, DONTFORK) and a core dump would hold what it must not.
type madviseAttr struct{}

func (madviseAttr) check(v *pb.Vma) error { return nil }

func (madviseAttr) apply(c Caller, v *pb.Vma) error {
	for _, m := range madviseFlags {
		if !has(v, m.flag) {
			continue
		}
		if err := madvise(c, v, m.advice, m.name); err != nil {
			return err
		}
	}
	return nil
}

func (madviseAttr) show(v *pb.Vma) string {
	s := ""
	for _, m := range madviseFlags {
		if has(v, m.flag) {
			if s != "" {
				s += ","
			}
			s += m.name
		}
	}
	if s == "" {
		return ""
	}
	return "madv=" + s
}

func madvise(c Caller, v *pb.Vma, advice uintptr, name string) error {
	_, err := call(c, "madvise("+name+")", unix.SYS_MADVISE, uintptr(v.Start), uintptr(v.End-v.Start), advice)
	return err
}
