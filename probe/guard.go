package probe

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/vmattr"
	"golang.org/x/sys/unix"
)

var guards struct {
	once sync.Once
	s    vmattr.GuardSupport
	r    Result
}

// GuardRegions reports how this kernel shows guard pages (madvise(2)
// MADV_GUARD_INSTALL), probed once per process: the dump needs it to know
// which VMAs to scan for them (package vmattr, guard.go).
func GuardRegions() (vmattr.GuardSupport, Result) {
	guards.once.Do(func() { guards.s, guards.r = probeGuardRegions() })
	return guards.s, guards.r
}

// probeGuardRegions maps 2 pages, installs a guard on the first, and looks
// for it in VmFlags ("gu") and with PAGEMAP_SCAN (PAGE_IS_GUARD).
func probeGuardRegions() (vmattr.GuardSupport, Result) {
	const name = "guard-regions"
	page := os.Getpagesize()
	m, err := mapMemory(-1, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return vmattr.GuardBlind, fail(name, false, err)
	}
	defer m.unmap()
	if err := unix.Madvise(m.b[:page], unix.MADV_GUARD_INSTALL); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return vmattr.GuardNone, Result{Name: name, OK: true, Value: uint64(vmattr.GuardNone),
				Detail: "no MADV_GUARD_INSTALL (Linux < 6.13): no process has guard pages"}
		}
		// Cannot tell: the dump refuses what may be a guard page.
		return vmattr.GuardBlind, fail(name, false, fmt.Errorf("madvise(MADV_GUARD_INSTALL) at %#x: %w", m.addr, err))
	}
	flagged := false
	maps, err := proc.ReadSmaps(os.Getpid())
	if err != nil {
		return vmattr.GuardBlind, fail(name, false, err)
	}
	for _, mp := range maps {
		if mp.Start <= m.addr && m.addr < mp.End {
			flagged = slices.Contains(mp.VmFlags, "gu")
		}
	}
	f, err := proc.OpenPagemap(os.Getpid())
	if err != nil {
		return vmattr.GuardBlind, fail(name, false, err)
	}
	defer f.Close()
	rs, err := proc.ScanCategory(f, m.addr, m.addr+uint64(2*page), kabi.PAGE_IS_GUARD)
	switch {
	case errors.Is(err, proc.ErrScanUnsupported):
		return vmattr.GuardBlind, Result{Name: name, Value: uint64(vmattr.GuardBlind),
			Detail: "guard pages exist but PAGEMAP_SCAN cannot show them (Linux < 6.15): dump refuses a VMA with pages that read as swapped out"}
	case err != nil:
		return vmattr.GuardBlind, fail(name, false, err)
	case len(rs) != 1 || rs[0] != (proc.Range{Start: m.addr, End: m.addr + uint64(page)}):
		return vmattr.GuardBlind, Result{Name: name, Value: uint64(vmattr.GuardBlind),
			Detail: fmt.Sprintf("PAGEMAP_SCAN PAGE_IS_GUARD returned %v, want the first of 2 pages at %#x: not trusting it", rs, m.addr)}
	case flagged:
		return vmattr.GuardFlagged, Result{Name: name, OK: true, Value: uint64(vmattr.GuardFlagged),
			Detail: "VmFlags \"gu\" marks VMAs with guard pages, PAGEMAP_SCAN finds them: dump scans only those VMAs"}
	}
	return vmattr.GuardScan, Result{Name: name, OK: true, Value: uint64(vmattr.GuardScan),
		Detail: "PAGEMAP_SCAN finds guard pages, no VmFlag marks their VMAs: dump scans every VMA"}
}
