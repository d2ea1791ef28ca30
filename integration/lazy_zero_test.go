package integration

import (
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
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
	// The count may miss a page or two: a page that another path filled
	// first (EEXIST: howExisted) is not counted by the install that found
	// it there. Seen once in CI (8191 of 8192; its bytes did not cross the
	// wire: the check below held), not reproduced in 8 runs; what matters
	// here is that the zero pages' bytes are not sent.
	if zeroed+4 < r.ZeroPages {
		t.Errorf("target zero-filled %d pages the source read as zeros, want at least the process's %d (less a few)", zeroed, r.ZeroPages)
	}
	if limit := data + 4<<20; s.bytesCopied > limit {
		t.Errorf("target copied %d bytes, more than the %d bytes of data pages (+4 MiB): zero pages crossed the wire", s.bytesCopied, data)
	}
}

// lazyAbsentRE is the target summary's count of lazy pages the source
// said it never had.
var lazyAbsentRE = regexp.MustCompile(`(?m); never populated at the source (\d+);`)

// TestLazyAbsentPages migrates lazy_holes, whose 96 MiB mapping is half
// holes (never written, read once, or written and dropped with
// MADV_DONTNEED) and whose 1 GiB mapping holds 1 MiB of data. The dump
// makes the dense mapping one lazy run without scanning it while frozen;
// the source scans it after the resume and names its holes (ABSENT). The
// process checks every word after the migration (holes must read zero,
// data must be its own) and writes into a hole each round; the target
// must have taken the holes as absent, never copied them, and copied
// about the data only.
func TestLazyAbsentPages(t *testing.T) {
	p := start(t, buildC(t, "lazy_holes"), "96")
	var r struct {
		Pid       int    `json:"pid"`
		Base      hexU64 `json:"base"`
		Pages     uint64 `json:"pages"`
		HolePages uint64 `json:"hole_pages"`
	}
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "verify", 1)
	statsFile := filepath.Join(t.TempDir(), "source.json")
	m := migrateLazy(t, lazyEnv{}, p, []string{"--stats-file", statsFile}, nil)
	lazyRequireRounds(t, m.restored, "verify", 3)
	checkSequence(t, m.restored, "verify")
	_, e := m.target.output()
	s := parseLazySummary(t, e)
	a := lazyAbsentRE.FindStringSubmatch(e)
	if a == nil {
		t.Fatalf("target summary lacks the pages never populated at the source:\n%s", e)
	}
	absent, _ := strconv.ParseUint(a[1], 10, 64)
	data := int64(r.Pages-r.HolePages)*4096 + 1<<20
	t.Logf("%d of %d pages holes: %d absent at the target, %d bytes copied (%d bytes of data pages)", r.HolePages, r.Pages, absent, s.bytesCopied, data)
	// A hole the process touches early may be asked for before the
	// source's scan is done (and answered as ZERO): most, not all.
	if absent < r.HolePages/2 {
		t.Errorf("target took %d pages as absent, want most of the process's %d holes", absent, r.HolePages)
	}
	if limit := data + 4<<20; s.bytesCopied > limit {
		t.Errorf("target copied %d bytes, more than the %d bytes of data pages (+4 MiB)", s.bytesCopied, data)
	}
	// The dump's pages_populated counts what the process populated, not
	// the whole of a mapping made one lazy run unscanned (QA4 F1: it
	// counted every page of the holed mapping, holes included).
	ds := readStats(t, statsFile).Dump
	if ds == nil {
		t.Fatal("source stats file has no dump section")
	}
	dataPages := uint64(data) / 4096
	if ds.PagesPopulated < dataPages || ds.PagesPopulated > dataPages+2048 {
		t.Errorf("dump pages_populated %d, want the process's %d data pages (+8 MiB of its other memory at most)", ds.PagesPopulated, dataPages)
	}
}

// TestLazyMapOps migrates qa4_mapops, which right after the resume, on
// memory that has not arrived yet, moves part of a region away with
// MREMAP_DONTUNMAP, shrinks and grows one in place, populates one with
// MADV_POPULATE_WRITE, mlocks one, read(2)s into the middle of pages,
// stores one word into pages and opens data it had made PROT_NONE, and
// checks every word of all of it, zeros where the map change left none.
func TestLazyMapOps(t *testing.T) {
	t.Parallel()
	p := start(t, buildC(t, "qa4_mapops"))
	var r struct {
		Pid int `json:"pid"`
	}
	waitReport(t, p, &r)
	lazyWaitTick(t, p, "round", 1)
	m := migrateLazy(t, lazyEnv{}, p, nil, nil)
	lazyWaitTick(t, m.restored, "ops", 1)
	lazyRequireRounds(t, m.restored, "round", 2)
	checkSequence(t, m.restored, "round")
}

// TestLazyForkRemoteRead migrates qa4_remote over a slow link (a proxy
// capping the source at 16 MB/s): in the lazy phase it forks pairs of
// children, the second reading the first's memory with process_vm_readv
// and exiting before the first touches it. The handler took the reader for
// the child (the fault named the reader's tid) and closed the child's uffd
// when the reader exited: the child read zeros (QA4 F0).
func TestLazyForkRemoteRead(t *testing.T) {
	t.Parallel()
	orig := start(t, buildC(t, "qa4_remote"), "64")
	var r struct {
		Pid   int    `json:"pid"`
		Pairs uint64 `json:"pairs"`
	}
	waitReport(t, orig, &r)
	progress(t, orig)
	src := startLazySource(t, nil, orig.pid, "127.0.0.1")
	proxy := startLazyProxy(t, &lazyProxy{upstream: src.addr, rate: 16 << 20})
	dst := startLazyTarget(t, nil, proxy.addr())
	p := adopt(t, lazyResumedPID(t, dst))
	p.continueOutput(orig, true)
	t.Cleanup(func() { unix.Kill(p.pid, unix.SIGKILL) })
	lazyWaitTick(t, p, "pair", r.Pairs)
	dst.requireExit(t, 0)
	src.requireExit(t, 0)
}
