package vmattr

import (
	"errors"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// KSM: per VMA, MADV_MERGEABLE ("mg"); for the whole address space,
// prctl(PR_SET_MEMORY_MERGE), which makes every present and future VMA
// mergeable (Documentation/admin-guide/mm/ksm.rst). On a kernel without
// CONFIG_KSM both fail with EINVAL: restoring then fails, naming them.
type ksmAttr struct{}

func (ksmAttr) check(v *pb.Vma) error { return nil }

func (ksmAttr) apply(c Caller, v *pb.Vma) error {
	if !has(v, "mg") {
		return nil
	}
	return madvise(c, v, unix.MADV_MERGEABLE, "mergeable")
}

func (ksmAttr) show(v *pb.Vma) string {
	if has(v, "mg") {
		return "ksm"
	}
	return ""
}

type memoryMergeAttr struct{}

func (memoryMergeAttr) dump(c Caller, _ []string, a *pb.MmAttrs) error {
	r, err := call(c, "prctl(PR_GET_MEMORY_MERGE)", unix.SYS_PRCTL, unix.PR_GET_MEMORY_MERGE, 0, 0, 0, 0)
	if errors.Is(err, unix.EINVAL) {
		return nil // no CONFIG_KSM (or a kernel before 6.4): never set
	}
	if err != nil {
		return err
	}
	a.MemoryMerge = r == 1
	return nil
}

func (memoryMergeAttr) apply(c Caller, a *pb.MmAttrs) error {
	if !a.MemoryMerge {
		return nil
	}
	_, err := call(c, "prctl(PR_SET_MEMORY_MERGE, 1)", unix.SYS_PRCTL, unix.PR_SET_MEMORY_MERGE, 1, 0, 0, 0)
	return err
}

func (memoryMergeAttr) show(a *pb.MmAttrs) string {
	if a.MemoryMerge {
		return "KSM for every mapping"
	}
	return ""
}
