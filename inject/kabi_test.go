package inject

import (
	"testing"
	"unsafe"
)

func TestKernelStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"ptrace_peeksiginfo_args", unsafe.Sizeof(peekSigInfoArgs{}), 16},
	} {
		if c.got != c.want {
			t.Errorf("sizeof(struct %s) = %d, want %d", c.name, c.got, c.want)
		}
	}
}
