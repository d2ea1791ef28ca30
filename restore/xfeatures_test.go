package restore

import (
	"errors"
	"strings"
	"testing"
)

// TestCheckXfeatures (qa6 G9): an image whose process used XSAVE
// components this host lacks is refused, naming them (the inventory
// recorded the source's xfeatures but nothing checked them: a tampered
// image with an unknown component restored).
func TestCheckXfeatures(t *testing.T) {
	if err := checkXfeatures(0x2e7, 0x602e7); err != nil {
		t.Errorf("a subset of the host's features: %v", err)
	}
	err := checkXfeatures(0x602e7, 0x207)
	if !errors.Is(err, ErrIncompatible) {
		t.Fatalf("AVX-512 and AMX on a host without them: %v, want ErrIncompatible", err)
	}
	for _, n := range []string{"AVX-512 opmask", "AMX TILEDATA"} {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
	if err := checkXfeatures(1<<62|3, 3); err == nil || !strings.Contains(err.Error(), "xfeature 62") {
		t.Errorf("unknown component: %v", err)
	}
	host, err := hostXfeatures()
	if err != nil {
		t.Skipf("no ARCH_GET_XCOMP_SUPP on this kernel: %v", err)
	}
	if host&3 != 3 {
		t.Errorf("this host's xfeatures %#x lack x87 and SSE", host)
	}
}
