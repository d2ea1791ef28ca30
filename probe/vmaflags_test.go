package probe

import (
	"os"
	"testing"
)

// TestProbeVMAFlags: as root on this kernel (6.18, with BTF) the iterator
// works and verifies at least the bits of a readable private mapping
// (rd mr mw me: 0x71).
func TestProbeVMAFlags(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loading a BPF iterator takes CAP_BPF and CAP_PERFMON")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	r := probeVMAFlags()
	if !r.OK || r.Value&0x71 != 0x71 {
		t.Errorf("probe %s: ok %v value %#x: %s", r.Name, r.OK, r.Value, r.Detail)
	}
	t.Log(r)
}
