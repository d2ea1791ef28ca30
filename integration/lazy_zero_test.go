package integration

import (
	"regexp"
	"strconv"
	"testing"
)

// lazyZeroRE is the target summary's count of pages the source sent as
// zeros.
var lazyZeroRE = regexp.MustCompile(`(?m); zero-filled at the source (\d+);`)

// TestLazyZeroPagesNotSent migrates lazy_halfzero, whose memory is half
// pages of zero bytes (populated: lazy pages, not holes), with dump --lazy
// / restore --lazy-from. The process checks every word of its memory,
// zeros included, after the migration; the target must have installed the
// zero pages without their bytes (UFFDIO_ZEROPAGE after a ZERO frame) and
// copied about the data pages only.
func TestLazyZeroPagesNotSent(t *testing.T) {
	p := start(t, buildC(t, "lazy_halfzero"), "64")
	var r struct {
		Pid       int    `json:"pid"`
		Base      hexU64 `json:"base"`
		Pages     uint64 `json:"pages"`
		ZeroPages uint64 `json:"zero_pages"`
	}
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	lazyRequireRounds(t, m.restored, "verify", 2)
	checkSequence(t, m.restored, "verify")
	_, e := m.target.output()
	s := parseLazySummary(t, e)
	z := lazyZeroRE.FindStringSubmatch(e)
	if z == nil {
		t.Fatalf("target summary lacks the pages zero-filled at the source:\n%s", e)
	}
	zeroed, _ := strconv.ParseUint(z[1], 10, 64)
	data := int64(r.Pages-r.ZeroPages) * 4096
	t.Logf("%d of %d pages zero: %d zero-filled at the source, %d bytes copied (%d bytes of data pages)", r.ZeroPages, r.Pages, zeroed, s.bytesCopied, data)
	if zeroed < r.ZeroPages {
		t.Errorf("target zero-filled %d pages the source read as zeros, want at least the process's %d", zeroed, r.ZeroPages)
	}
	if limit := data + 4<<20; s.bytesCopied > limit {
		t.Errorf("target copied %d bytes, more than the %d bytes of data pages (+4 MiB): zero pages crossed the wire", s.bytesCopied, data)
	}
}
