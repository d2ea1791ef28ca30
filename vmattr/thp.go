package vmattr

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Transparent huge pages: per VMA, MADV_HUGEPAGE/MADV_NOHUGEPAGE ("hg",
// "nh"); for the whole address space, prctl(PR_SET_THP_DISABLE), whose
// second argument may carry PR_THP_DISABLE_EXCEPT_ADVISED (Linux 6.18) and
// which PR_GET_THP_DISABLE reports back as 1 or 1|that flag (prctl(2);
// Documentation/admin-guide/mm/transhuge.rst).
type thpAttr struct{}

func (thpAttr) check(v *pb.Vma) error {
	if has(v, "hg") && has(v, "nh") {
		return fmt.Errorf("both MADV_HUGEPAGE and MADV_NOHUGEPAGE (VmFlags \"hg nh\")")
	}
	return nil
}

func (thpAttr) apply(c Caller, v *pb.Vma) error {
	switch {
	case has(v, "hg"):
		return madvise(c, v, unix.MADV_HUGEPAGE, "hugepage")
	case has(v, "nh"):
		return madvise(c, v, unix.MADV_NOHUGEPAGE, "nohugepage")
	}
	return nil
}

func (thpAttr) show(v *pb.Vma) string {
	switch {
	case has(v, "hg"):
		return "thp=always"
	case has(v, "nh"):
		return "thp=never"
	}
	return ""
}

type thpDisableAttr struct{}

func (thpDisableAttr) dump(c Caller, _ []string, a *pb.MmAttrs) error {
	r, err := call(c, "prctl(PR_GET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_GET_THP_DISABLE, 0, 0, 0, 0)
	if err != nil {
		return err
	}
	a.ThpDisable = uint32(r)
	return nil
}

func (thpDisableAttr) apply(c Caller, a *pb.MmAttrs) error {
	if a.ThpDisable&1 == 0 {
		return nil
	}
	_, err := call(c, fmt.Sprintf("prctl(PR_SET_THP_DISABLE, 1, %#x)", a.ThpDisable&^1), unix.SYS_PRCTL,
		unix.PR_SET_THP_DISABLE, 1, uintptr(a.ThpDisable&^1), 0, 0)
	return err
}

func (thpDisableAttr) show(a *pb.MmAttrs) string {
	switch {
	case a.ThpDisable&1 == 0:
		return ""
	case a.ThpDisable&unix.PR_THP_DISABLE_EXCEPT_ADVISED != 0:
		return "THP disabled except where advised"
	}
	return "THP disabled"
}
