package dump

import (
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
)

// TestPrivateAnon checks that prescan picks exactly the mappings vmaOf
// makes private anonymous (ANON, HEAP, STACK): a mapping prescan missed
// is only scanned later, one it took wrongly would get anonymous runs.
func TestPrivateAnon(t *testing.T) {
	cp := &Checkpoint{pid: 1}
	for _, path := range []string{"", "[heap]", "[stack]", "[anon:x y]", "/dev/zero (deleted)", "[anon_shmem:z]",
		"[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[uprobes]", "/memfd:a (deleted)", "/SYSV00000000", "/gone (deleted)"} {
		m := &proc.Mapping{Start: 0x10000, End: 0x20000, Read: true, Write: true, Path: path}
		v, err := cp.vmaOf(m)
		anon := err == nil && (v.Kind == pb.VmaKind_VMA_KIND_ANON || v.Kind == pb.VmaKind_VMA_KIND_HEAP || v.Kind == pb.VmaKind_VMA_KIND_STACK)
		if got := privateAnon(m); got != anon {
			t.Errorf("private %q: privateAnon %v, vmaOf kind %v (err %v)", path, got, v.GetKind(), err)
		}
		m.Shared = true
		if privateAnon(m) {
			t.Errorf("shared %q: privateAnon true", path)
		}
	}
}

// TestWholeLazy: which private anonymous mappings a lazy dump makes one
// lazy run without a scan (smaps Rss and Swap in kB).
func TestWholeLazy(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		size, rssKB, swapKB uint64
		want                bool
	}{
		{4096 * mib, 4096 * 1024, 0, true},           // dense
		{4096 * mib, 2048 * 1024, 0, true},           // half populated
		{4096 * mib, 1024 * 1024, 1024 * 1024, true}, // half, swap counts
		{4096 * mib, 1024 * 1024, 0, false},          // sparse: 3 GiB unpopulated
		{8 * mib, 4, 0, true},                        // a thread stack: within the slack
		{64 * mib, 4, 0, true},                       // a malloc arena
		{65 * mib, 4, 0, false},                      // beyond the slack
		{64 * mib, 0, 0, false},                      // nothing populated: the scan is free
		{1 << 40, 1024, 0, false},                    // a reservation
	} {
		if got := wholeLazy(c.size, (c.rssKB+c.swapKB)<<10); got != c.want {
			t.Errorf("size %d MiB, rss %d kB, swap %d kB: wholeLazy %v, want %v", c.size/mib, c.rssKB, c.swapKB, got, c.want)
		}
	}
}
