package dump

import (
	"os/exec"
	"testing"
	"unsafe"

	"github.com/lazycr/lazycr/inject"
	"golang.org/x/sys/unix"
)

// TestXsaveFeatures (qa6 G9): the XCR0 dump records (Inventory.
// xsave_features, which restore checks against the host) comes from a
// real thread's NT_X86_XSTATE: x87 and SSE are always enabled, so bits 0
// and 1 are set. It was read at the signal frame's offset and was 0 in
// every image.
func TestXsaveFeatures(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tr, err := inject.NewTracer()
	if err != nil {
		t.Skipf("no tracer: %v", err)
	}
	defer tr.Close()
	p, err := tr.Seize(cmd.Process.Pid)
	if err != nil {
		t.Skipf("seize: %v (needs CAP_SYS_PTRACE)", err)
	}
	defer p.Release()
	x, err := p.XState(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	f := xsaveFeatures(x)
	if f&3 != 3 {
		t.Errorf("xsaveFeatures of a real XSAVE area (%d bytes) = %#x, want x87 and SSE (bits 0, 1) set", len(x), f)
	}
	// What restore compares it with: ARCH_GET_XCOMP_SUPP (0x1021), the
	// same user xfeatures on the same host.
	var supp uint64
	if _, _, e := unix.Syscall(unix.SYS_ARCH_PRCTL, 0x1021, uintptr(unsafe.Pointer(&supp)), 0); e == 0 && f != supp {
		t.Errorf("xsaveFeatures %#x, ARCH_GET_XCOMP_SUPP %#x: restore on this very host would refuse", f, supp)
	}
}
