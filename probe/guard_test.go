package probe

import (
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/vmattr"
	"golang.org/x/sys/unix"
)

// TestGuardRegions checks the probe's answer against the kernel directly:
// a guard page installed here shows in pagemap (bit 58) when the probe says
// guard pages can be seen, and its VMA has "gu" when it says they are
// flagged; without MADV_GUARD_INSTALL the probe says none.
func TestGuardRegions(t *testing.T) {
	s, r := GuardRegions()
	t.Logf("%s: %s", s, r)
	if s2, _ := GuardRegions(); s2 != s {
		t.Fatalf("second answer %s, first %s", s2, s)
	}
	page := os.Getpagesize()
	m, err := mapMemory(-1, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer m.unmap()
	err = unix.Madvise(m.b[:page], unix.MADV_GUARD_INSTALL)
	if errors.Is(err, unix.EINVAL) {
		if s != vmattr.GuardNone {
			t.Fatalf("no MADV_GUARD_INSTALL here, the probe says %s", s)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if s == vmattr.GuardNone {
		t.Fatal("MADV_GUARD_INSTALL works, the probe says none")
	}
	e, err := proc.ReadPagemapPid(os.Getpid(), m.addr, m.addr+uint64(2*page))
	if err != nil {
		t.Fatal(err)
	}
	if visible := s == vmattr.GuardFlagged || s == vmattr.GuardScan; visible && (!e[0].Guard() || e[1].Guard()) {
		t.Errorf("probe says %s, pagemap entries %#x %#x (want the guard bit on the first only)", s, e[0], e[1])
	}
	maps, err := proc.ReadSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for _, mp := range maps {
		if mp.Start <= m.addr && m.addr < mp.End && slices.Contains(mp.VmFlags, "gu") != (s == vmattr.GuardFlagged) {
			t.Errorf("VmFlags %v, probe says %s", mp.VmFlags, s)
		}
	}
}
