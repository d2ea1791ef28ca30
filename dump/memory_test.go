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
