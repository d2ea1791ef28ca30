package vmattr

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
)

// Caller runs system calls inside the process being dumped or restored
// (the ptrace engine's injected syscalls).
type Caller interface {
	// Call runs nr with args and returns its result.
	Call(nr uintptr, args ...uintptr) (uintptr, error)
	// CallIn runs nr with args, the argument equal to [In] replaced by the
	// address of a copy of in inside the process.
	CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error)
	// ReadProc reads the file name of the process's directory in
	// lazycr's /proc (/proc/PID/name), for what no syscall reaches.
	ReadProc(name string) ([]byte, error)
	// WriteProc writes data to /proc/PID/name with one write(2).
	WriteProc(name string, data []byte) error
}

// In marks the argument of [Caller.CallIn] that points to its input.
const In = ^uintptr(0) - 1

// WithIn returns a copy of args with the argument equal to [In] replaced
// by addr, for implementations of [Caller.CallIn].
func WithIn(args []uintptr, addr uintptr) []uintptr {
	a := make([]uintptr, len(args))
	for i, v := range args {
		if v == In {
			v = addr
		}
		a[i] = v
	}
	return a
}

// vmaAttr is one per-VMA attribute.
type vmaAttr interface {
	// check refuses a VMA whose attribute cannot be restored exactly
	// (dump half: nil when it can).
	check(v *pb.Vma) error
	// apply re-creates the attribute on the mapped VMA, once its data is
	// in (restore half).
	apply(c Caller, v *pb.Vma) error
	// show describes the attribute for `lazycr show`, "" when the VMA
	// does not have it.
	show(v *pb.Vma) string
}

// vmaAttrs in restore order: the final protection first (mlock populates
// according to it, as it did in the original), then advice, then guard
// pages (refused in a locked VMA), then locking.
var vmaAttrs = []vmaAttr{protAttr{}, madviseAttr{}, thpAttr{}, ksmAttr{}, anonNameAttr{}, guardAttr{}, mlockAttr{}, mempolicyAttr{}}

// mmAttr is one address-space-wide attribute.
type mmAttr interface {
	// dump reads the attribute into a; fresh are the VmFlags of a mapping
	// the process got while frozen.
	dump(c Caller, fresh []string, a *pb.MmAttrs) error
	// apply sets it in the restored process after every VMA is mapped.
	apply(c Caller, a *pb.MmAttrs) error
	show(a *pb.MmAttrs) string
}

var mmAttrs = []mmAttr{thpDisableAttr{}, memoryMergeAttr{}, coredumpFilterAttr{}, mlockallAttr{}}

// refused are VmFlags lazycr cannot re-create, with the reason.
var refused = map[string]string{
	"ss": "shadow stack",
	"sl": "sealed mapping (mseal)",
	// A userfaultfd in missing mode is also what a lazy migration's page
	// handler registers: a copy whose memory is still arriving.
	"um": "registered with a userfaultfd in missing mode: the process's own, or the page handler of a lazy migration still bringing its memory in (dump it once `lazycr restore --lazy-from` has finished)",
	"uw": "registered with a userfaultfd of the process (write-protect mode)",
	"ui": "registered with a userfaultfd of the process (minor mode)",
	"sf": "synchronous page faults (MAP_SYNC)",
}

// Check refuses a VMA with an attribute that cannot be restored exactly,
// naming it (the caller wraps it as unsupported); it is the dump half of
// every per-VMA attribute.
func Check(v *pb.Vma) error {
	for _, f := range v.VmFlags {
		if why, ok := refused[f]; ok {
			return fmt.Errorf("%s (VmFlags %q)", why, f)
		}
	}
	for _, a := range vmaAttrs {
		if err := a.check(v); err != nil {
			return err
		}
	}
	return nil
}

// Apply re-creates every attribute of v, a VMA already mapped at its
// address (with [FillProt]) and holding its data.
func Apply(c Caller, v *pb.Vma) error {
	for _, a := range vmaAttrs {
		if err := a.apply(c, v); err != nil {
			return fmt.Errorf("vma %#x-%#x: %w", v.Start, v.End, err)
		}
	}
	return nil
}

// Show describes v's attributes in one line for `lazycr show`: "-" when it
// has none beyond its protection, or is a special mapping the kernel
// provides with its own flags ([vdso], [vvar], …), which restore moves
// rather than makes.
func Show(v *pb.Vma) string {
	if special(v) {
		return "-"
	}
	var out []string
	for _, a := range vmaAttrs {
		if s := a.show(v); s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// DumpMM reads the address space's own attributes; fresh are the VmFlags
// of a mapping made in the frozen process (it inherits mm->def_flags).
func DumpMM(c Caller, fresh []string) (*pb.MmAttrs, error) {
	a := &pb.MmAttrs{}
	for _, m := range mmAttrs {
		if err := m.dump(c, fresh, a); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// ApplyMM sets the address space's attributes; it runs after every VMA is
// mapped, filled and given its own attributes (mlockall(MCL_FUTURE) would
// lock, and populate, whatever is mapped after it).
func ApplyMM(c Caller, a *pb.MmAttrs) error {
	if a == nil {
		return nil
	}
	for _, m := range mmAttrs {
		if err := m.apply(c, a); err != nil {
			return err
		}
	}
	return nil
}

// ShowMM describes the address-space attributes, "" when there are none.
func ShowMM(a *pb.MmAttrs) string {
	if a == nil {
		return ""
	}
	var out []string
	for _, m := range mmAttrs {
		if s := m.show(a); s != "" {
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

func special(v *pb.Vma) bool {
	switch v.Kind {
	case pb.VmaKind_VMA_KIND_VDSO, pb.VmaKind_VMA_KIND_VVAR, pb.VmaKind_VMA_KIND_VVAR_VCLOCK, pb.VmaKind_VMA_KIND_VSYSCALL:
		return true
	}
	return false
}

func has(v *pb.Vma, flag string) bool { return slices.Contains(v.VmFlags, flag) }

// call runs a syscall and names it in the error.
func call(c Caller, what string, nr uintptr, args ...uintptr) (uintptr, error) {
	r, err := c.Call(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("injected %s: %w", what, err)
	}
	return r, nil
}
