package vmattr

import (
	"errors"
	"slices"

	"github.com/lazycr/lazycr/image"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// Locking. Per VMA: mlock(2) sets VM_LOCKED ("lo"), mlock2(MLOCK_ONFAULT)
// VM_LOCKED|VM_LOCKONFAULT ("lo lf"). For the address space:
// mlockall(MCL_FUTURE[|MCL_ONFAULT]) puts those flags in mm->def_flags,
// which every later mapping inherits and which /proc shows only there —
// so the dump reads them off a mapping made while the process is frozen.
//
// A locked VMA (without "lf") has every page present: the dump keeps its
// pages eager even in a lazy dump ([Populated]), since mlock on restore
// populates the range, which a lazy page must not be.
//
// Locking needs CAP_IPC_LOCK or room under RLIMIT_MEMLOCK (mlock(2)):
// restore locks while the process still has lazycr's credentials, before
// its own are set, so a process that locked memory and then dropped
// privileges comes back locked.
type mlockAttr struct{}

func (mlockAttr) check(v *pb.Vma) error { return nil }

func (mlockAttr) apply(c Caller, v *pb.Vma) error {
	if !has(v, "lo") {
		return nil
	}
	var flags uintptr
	name := "mlock2"
	if has(v, "lf") {
		flags, name = unix.MLOCK_ONFAULT, "mlock2(MLOCK_ONFAULT)"
	}
	_, err := call(c, name, unix.SYS_MLOCK2, uintptr(v.Start), uintptr(v.End-v.Start), flags)
	if errors.Is(err, unix.ENOMEM) && flags == 0 && lockedDespiteGuard(c, v) {
		return nil
	}
	return err
}

// lockedDespiteGuard reports whether mlock2 that failed with ENOMEM on v
// locked it all the same. mlock(2) first sets VM_LOCKED on the range, then
// populates it, and the populate stops at a guard page with ENOMEM — as it
// did in the original, which is how a VMA with guard pages came to be
// locked (mlockall(MCL_CURRENT) ignores that error). ENOMEM also means
// RLIMIT_MEMLOCK, which leaves the VMA unlocked; the kernel tells the two
// apart for us: it refuses MADV_GUARD_INSTALL in a VM_LOCKED VMA (EINVAL),
// and installing a guard over a guard page changes nothing otherwise.
func lockedDespiteGuard(c Caller, v *pb.Vma) bool {
	g := guardRuns(v)
	if len(g) == 0 {
		return false
	}
	_, err := c.Call(unix.SYS_MADVISE, uintptr(g[0].Addr), uintptr(image.PageSize), unix.MADV_GUARD_INSTALL)
	return errors.Is(err, unix.EINVAL)
}

func (mlockAttr) show(v *pb.Vma) string {
	switch {
	case has(v, "lo") && has(v, "lf"):
		return "locked-on-fault"
	case has(v, "lo"):
		return "locked"
	}
	return ""
}

// Populated reports whether every page of v must be present when the
// process runs (locked without MLOCK_ONFAULT).
func Populated(v *pb.Vma) bool { return has(v, "lo") && !has(v, "lf") }

type mlockallAttr struct{}

func (mlockallAttr) dump(_ Caller, fresh []string, a *pb.MmAttrs) error {
	if slices.Contains(fresh, "lo") {
		a.Mlockall = unix.MCL_FUTURE
		if slices.Contains(fresh, "lf") {
			a.Mlockall |= unix.MCL_ONFAULT
		}
	}
	return nil
}

func (mlockallAttr) apply(c Caller, a *pb.MmAttrs) error {
	if a.Mlockall == 0 {
		return nil
	}
	// Only MCL_FUTURE (and MCL_ONFAULT): the VMAs locked now are locked
	// one by one, as they were.
	_, err := call(c, "mlockall", unix.SYS_MLOCKALL, uintptr(a.Mlockall&(unix.MCL_FUTURE|unix.MCL_ONFAULT)))
	return err
}

func (mlockallAttr) show(a *pb.MmAttrs) string {
	switch {
	case a.Mlockall&unix.MCL_FUTURE == 0:
		return ""
	case a.Mlockall&unix.MCL_ONFAULT != 0:
		return "mlockall(MCL_FUTURE|MCL_ONFAULT)"
	}
	return "mlockall(MCL_FUTURE)"
}
