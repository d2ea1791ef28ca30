package vmaflags

import (
	"fmt"
	"math/bits"
	"slices"

	"github.com/lazycr/lazycr/proc"
)

// mnemonics is show_smap_vma_flags (fs/proc/task_mmu.c, Linux 6.18,
// x86_64) by bit of vm_flags (include/linux/mm.h): "" for a bit smaps
// does not print as a mnemonic (the protection key bits come out as
// ProtectionKey), and a bit missing from the table is printed "??", as the
// kernel's table is initialised ([0 ... BITS_PER_LONG-1] = "??"). Verify
// checks it against this kernel's smaps.
var mnemonics = map[int]string{
	0:  "rd", // VM_READ
	1:  "wr", // VM_WRITE
	2:  "ex", // VM_EXEC
	3:  "sh", // VM_SHARED
	4:  "mr", // VM_MAYREAD
	5:  "mw", // VM_MAYWRITE
	6:  "me", // VM_MAYEXEC
	7:  "ms", // VM_MAYSHARE
	8:  "gd", // VM_GROWSDOWN
	9:  "um", // VM_UFFD_MISSING
	10: "pf", // VM_PFNMAP
	11: "gu", // VM_MAYBE_GUARD (Linux 6.19+; unused before)
	12: "uw", // VM_UFFD_WP
	13: "lo", // VM_LOCKED
	14: "io", // VM_IO
	15: "sr", // VM_SEQ_READ
	16: "rr", // VM_RAND_READ
	17: "dc", // VM_DONTCOPY
	18: "de", // VM_DONTEXPAND
	19: "lf", // VM_LOCKONFAULT
	20: "ac", // VM_ACCOUNT
	21: "nr", // VM_NORESERVE
	22: "ht", // VM_HUGETLB
	23: "sf", // VM_SYNC
	24: "ar", // VM_ARCH_1 (x86: VM_PAT)
	25: "wf", // VM_WIPEONFORK
	26: "dd", // VM_DONTDUMP
	// 27: VM_SOFTDIRTY "sd", only with CONFIG_MEM_SOFT_DIRTY (off here).
	28: "mm", // VM_MIXEDMAP
	29: "hg", // VM_HUGEPAGE
	30: "nh", // VM_NOHUGEPAGE
	31: "mg", // VM_MERGEABLE
	32: "",   // VM_PKEY_BIT0 (VM_HIGH_ARCH_0)
	33: "",   // VM_PKEY_BIT1
	34: "",   // VM_PKEY_BIT2
	35: "",   // VM_PKEY_BIT3 (x86 has 4 key bits)
	37: "ss", // VM_SHADOW_STACK (VM_HIGH_ARCH_5)
	40: "dp", // VM_DROPPABLE
	41: "ui", // VM_UFFD_MINOR
	42: "sl", // VM_SEALED
}

// pkeyShift and pkeyMask give the protection key bits of vm_flags on
// x86_64 (VM_PKEY_SHIFT = VM_HIGH_ARCH_BIT_0, four bits): smaps prints
// vma_pkey(vma) as ProtectionKey, when the CPU has protection keys.
const (
	pkeyShift = 32
	pkeyMask  = 0xf << pkeyShift
)

// Mnemonics returns the VmFlags smaps prints for flags, in its order (by
// bit).
func Mnemonics(flags uint64) []string {
	out := make([]string, 0, bits.OnesCount64(flags))
	for f := flags; f != 0; f &= f - 1 {
		b := bits.TrailingZeros64(f)
		m, ok := mnemonics[b]
		if !ok {
			m = "??"
		}
		if m != "" {
			out = append(out, m)
		}
	}
	return out
}

// ProtectionKey returns the memory protection key smaps prints for flags
// (0 without one).
func ProtectionKey(flags uint64) int { return int(flags & pkeyMask >> pkeyShift) }

// Verified is a set of vm_flags bits whose naming (Mnemonics,
// ProtectionKey) was seen to match this kernel's smaps.
type Verified uint64

// Covers reports whether every bit set in flags is verified.
func (v Verified) Covers(flags uint64) bool { return flags&^uint64(v) == 0 }

// Mismatch is a VMA whose flags did not read back from smaps as Mnemonics
// and ProtectionKey name them, while the iterator saw them unchanged
// before and after the smaps read.
type Mismatch struct {
	Start, End uint64
	Flags      uint64
	Smaps      []string // smaps' VmFlags
	SmapsPkey  int
}

func (m Mismatch) String() string {
	return fmt.Sprintf("vma %#x-%#x: vm_flags %#x names %q pkey %d, smaps says %q pkey %d",
		m.Start, m.End, m.Flags, Mnemonics(m.Flags), ProtectionKey(m.Flags), m.Smaps, m.SmapsPkey)
}

// Verify checks the bit table against smaps, read from a process between
// two iterator reads of it, before and after. A VMA with the same range and
// flags in both reads is stable: smaps must show it exactly as Mnemonics
// and ProtectionKey name its flags, and then its bits are verified. Any
// stable VMA that differs means the table is wrong for this kernel: Verify
// then returns no verified bits and the mismatches. A VMA that changed in
// between, or that the iterator does not see (the [vsyscall] gate area is
// no VMA of the process), verifies nothing.
func Verify(before, after []VMA, smaps []proc.Mapping) (Verified, []Mismatch) {
	type span struct{ s, e uint64 }
	b := make(map[span]uint64, len(before))
	for _, v := range before {
		b[span{v.Start, v.End}] = v.Flags
	}
	a := make(map[span]uint64, len(after))
	for _, v := range after {
		a[span{v.Start, v.End}] = v.Flags
	}
	var ok Verified
	var bad []Mismatch
	for i := range smaps {
		m := &smaps[i]
		k := span{m.Start, m.End}
		f, inB := b[k]
		g, inA := a[k]
		if !inB || !inA || f != g {
			continue
		}
		if !slices.Equal(Mnemonics(f), m.VmFlags) || ProtectionKey(f) != m.ProtectionKey {
			bad = append(bad, Mismatch{Start: m.Start, End: m.End, Flags: f, Smaps: m.VmFlags, SmapsPkey: m.ProtectionKey})
			continue
		}
		ok |= Verified(f)
	}
	if len(bad) > 0 {
		return 0, bad
	}
	return ok, nil
}
