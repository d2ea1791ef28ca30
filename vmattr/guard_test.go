package vmattr

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

const (
	zero  = pb.PageState_PAGE_STATE_ZERO
	eager = pb.PageState_PAGE_STATE_EAGER
	lazy  = pb.PageState_PAGE_STATE_LAZY
	file  = pb.PageState_PAGE_STATE_FILE
	grd   = pb.PageState_PAGE_STATE_GUARD
)

// pg is the address of page n of the test VMA (which starts at 0x10000).
func pg(n uint64) uint64 { return 0x10000 + n*image.PageSize }

func runsString(rs []*pb.PageRun) string {
	var out []string
	for _, r := range rs {
		s := fmt.Sprintf("%d+%d %s", (r.Addr-0x10000)/image.PageSize, r.Npages, strings.TrimPrefix(r.State.String(), "PAGE_STATE_"))
		if r.State == eager {
			s += fmt.Sprintf("@%#x", r.Offset)
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

func TestCarveGuards(t *testing.T) {
	v := &pb.Vma{Start: pg(0), End: pg(10), Pages: []*pb.PageRun{
		{Addr: pg(0), Npages: 2, State: zero},
		{Addr: pg(2), Npages: 4, State: lazy},
		{Addr: pg(6), Npages: 3, State: eager, Offset: 0x4000},
		{Addr: pg(9), Npages: 1, State: file},
	}}
	got := runsString(carveGuards(v, []proc.Range{{Start: pg(1), End: pg(3)}, {Start: pg(7), End: pg(8)}, {Start: pg(9), End: pg(10)}}))
	want := "0+1 ZERO, 1+2 GUARD, 3+3 LAZY, 6+1 EAGER@0x4000, 7+1 GUARD, 8+1 EAGER@0x6000, 9+1 GUARD"
	if got != want {
		t.Errorf("carved runs:\n%s\nwant:\n%s", got, want)
	}
	// A VMA without runs is all zero but its guards.
	empty := &pb.Vma{Start: pg(0), End: pg(4)}
	if got := runsString(carveGuards(empty, []proc.Range{{Start: pg(3), End: pg(4)}})); got != "0+3 ZERO, 3+1 GUARD" {
		t.Errorf("runless VMA carved to %s", got)
	}
}

// fakeScanner answers PAGE_IS_GUARD with guards and PAGE_IS_SWAPPED with
// swapped, recording the masks asked for.
type fakeScanner struct {
	guards, swapped []proc.Range
	err             error
	asked           []uint64
}

func (f *fakeScanner) scan(start, end, mask uint64) ([]proc.Range, error) {
	f.asked = append(f.asked, mask)
	if f.err != nil {
		return nil, f.err
	}
	if mask == kabi.PAGE_IS_SWAPPED {
		return f.swapped, nil
	}
	return f.guards, nil
}

func TestDumpGuards(t *testing.T) {
	g := []proc.Range{{Start: pg(1), End: pg(2)}}
	for _, tc := range []struct {
		name    string
		s       GuardSupport
		kind    pb.VmaKind
		flags   []string
		sc      fakeScanner
		asked   []uint64
		runs    string // "" when unchanged
		refused string
	}{
		{name: "no kernel support", s: GuardNone, flags: []string{"gu"}, sc: fakeScanner{guards: g}},
		{name: "flagged, no gu", s: GuardFlagged, sc: fakeScanner{guards: g}},
		{name: "flagged, gu", s: GuardFlagged, flags: []string{"gu"}, sc: fakeScanner{guards: g},
			asked: []uint64{kabi.PAGE_IS_GUARD}, runs: "0+1 EAGER@0x0, 1+1 GUARD, 2+2 EAGER@0x2000"},
		{name: "scan", s: GuardScan, sc: fakeScanner{guards: g},
			asked: []uint64{kabi.PAGE_IS_GUARD}, runs: "0+1 EAGER@0x0, 1+1 GUARD, 2+2 EAGER@0x2000"},
		{name: "scan, none found", s: GuardScan, asked: []uint64{kabi.PAGE_IS_GUARD}},
		{name: "blind, nothing swapped", s: GuardBlind, asked: []uint64{kabi.PAGE_IS_SWAPPED}},
		{name: "blind, swapped", s: GuardBlind, sc: fakeScanner{swapped: g}, asked: []uint64{kabi.PAGE_IS_SWAPPED},
			refused: "page 0x11000 reads as swapped out"},
		{name: "shared anonymous", s: GuardFlagged, kind: pb.VmaKind_VMA_KIND_SHARED_ANON, flags: []string{"gu"},
			sc: fakeScanner{guards: g}, asked: []uint64{kabi.PAGE_IS_GUARD}, refused: "guard page at 0x11000 in a shared memory mapping"},
		{name: "special", s: GuardScan, kind: pb.VmaKind_VMA_KIND_VDSO, sc: fakeScanner{guards: g}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := vma(3, tc.flags...)
			if tc.kind != 0 {
				v.Kind = tc.kind
			}
			before := runsString(v.Pages)
			err := DumpGuards(v, tc.s, tc.sc.scan)
			if fmt.Sprint(tc.sc.asked) != fmt.Sprint(tc.asked) {
				t.Errorf("scanned for %#x, want %#x", tc.sc.asked, tc.asked)
			}
			if tc.refused != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.refused) {
					t.Errorf("error %v, want a refusal with %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.runs
			if want == "" {
				want = before
			}
			if got := runsString(v.Pages); got != want {
				t.Errorf("runs %s, want %s", got, want)
			}
		})
	}
	// A failing scan is an error, not a refusal.
	sc := fakeScanner{err: unix.EIO}
	if err := DumpGuards(vma(3, "gu"), GuardFlagged, sc.scan); err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("scan failure: %v, want an error that is not a refusal", err)
	}
	// A range outside the VMA is not believed.
	sc = fakeScanner{guards: []proc.Range{{Start: pg(3), End: pg(5)}}}
	if err := DumpGuards(vma(3, "gu"), GuardFlagged, sc.scan); err == nil {
		t.Error("a guard range past the VMA accepted")
	}
}

// guardCaller answers mlock2 with mlockErr and madvise with madviseErr once
// a mlock2 has been made (the VMA is then locked).
type guardCaller struct {
	fakeCaller
	mlockErr, lockedMadviseErr error
	locked                     bool
}

func (c *guardCaller) Call(nr uintptr, args ...uintptr) (uintptr, error) {
	c.fakeCaller.Call(nr, args...)
	switch {
	case nr == unix.SYS_MLOCK2:
		c.locked = true
		return 0, c.mlockErr
	case nr == unix.SYS_MADVISE && c.locked:
		return 0, c.lockedMadviseErr
	}
	return 0, nil
}

func TestGuardApply(t *testing.T) {
	v := vma(3, "lo")
	v.Pages = []*pb.PageRun{{Addr: pg(0), Npages: 1, State: eager}, {Addr: pg(1), Npages: 2, State: grd}, {Addr: pg(3), Npages: 1, State: grd}}
	install := func(n, npages uint64) string {
		return fmt.Sprintf("%d %#x %#x %#x", unix.SYS_MADVISE, pg(n), npages*image.PageSize, unix.MADV_GUARD_INSTALL)
	}
	mlock := fmt.Sprintf("%d 0x10000 0x4000 0x0", unix.SYS_MLOCK2)
	for _, tc := range []struct {
		name              string
		mlockErr, madvErr error
		want              []string
		fails             bool
	}{
		{"guards before the lock", nil, nil, []string{install(1, 2), install(3, 1), mlock}, false},
		// mlock stops populating at the guard page, VM_LOCKED set: the
		// guard probe then gets EINVAL.
		{"locked despite the guard", unix.ENOMEM, unix.EINVAL, []string{install(1, 2), install(3, 1), mlock, install(1, 1)}, false},
		// ENOMEM for RLIMIT_MEMLOCK: not locked, the probe succeeds.
		{"not locked", unix.ENOMEM, nil, []string{install(1, 2), install(3, 1), mlock, install(1, 1)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &guardCaller{mlockErr: tc.mlockErr, lockedMadviseErr: tc.madvErr}
			err := Apply(c, v)
			if (err != nil) != tc.fails {
				t.Fatalf("Apply: %v, want failure %v", err, tc.fails)
			}
			if got, want := strings.Join(c.calls, "\n"), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("syscalls:\n%s\nwant:\n%s", got, want)
			}
		})
	}
	if s := Show(v); !strings.Contains(s, "guard=3") {
		t.Errorf("Show = %q, want guard=3", s)
	}
}

// FuzzCarveGuards: carving any guard ranges into any tiling keeps a tiling
// of the VMA, turns exactly the guard pages into GUARD, keeps every other
// page's state, and keeps an eager page at its pages-file offset.
func FuzzCarveGuards(f *testing.F) {
	f.Add([]byte{2, 1, 4, 3, 3, 2}, []byte{1, 2, 7, 1})
	f.Add([]byte{10, 2}, []byte{0, 10})
	f.Fuzz(func(t *testing.T, runs, guards []byte) {
		v := &pb.Vma{Start: pg(0)}
		at, off := uint64(0), uint64(0)
		for i := 0; i+1 < len(runs) && i < 64; i += 2 {
			n := uint64(runs[i]%16) + 1
			st := pb.PageState(runs[i+1]%4 + 1)
			r := &pb.PageRun{Addr: pg(at), Npages: n, State: st}
			if st == eager {
				r.Offset = off
				off += n * image.PageSize
			}
			v.Pages = append(v.Pages, r)
			at += n
		}
		if at == 0 {
			at = 1
		}
		v.End = pg(at)
		// Page states before, and the eager offsets.
		state := make([]pb.PageState, at)
		offset := make([]uint64, at)
		for p := range state {
			state[p] = zero
		}
		for _, r := range v.Pages {
			for k := uint64(0); k < r.Npages; k++ {
				p := (r.Addr-v.Start)/image.PageSize + k
				state[p], offset[p] = r.State, r.Offset+k*image.PageSize
			}
		}
		var rs []proc.Range
		isGuard := make([]bool, at)
		p := uint64(0)
		for i := 0; i+1 < len(guards) && i < 64; i += 2 {
			s := p + uint64(guards[i]%8)
			e := s + uint64(guards[i+1]%4) + 1
			if e > at {
				break
			}
			rs = append(rs, proc.Range{Start: pg(s), End: pg(e)})
			for q := s; q < e; q++ {
				isGuard[q] = true
			}
			p = e + 1
		}
		out := carveGuards(v, rs)
		next := v.Start
		for _, r := range out {
			if r.Addr != next || r.Npages == 0 {
				t.Fatalf("runs %s do not tile the VMA", runsString(out))
			}
			for k := uint64(0); k < r.Npages; k++ {
				q := (r.Addr-v.Start)/image.PageSize + k
				switch {
				case isGuard[q] != (r.State == grd):
					t.Fatalf("page %d: state %v, guard %v (runs %s)", q, r.State, isGuard[q], runsString(out))
				case !isGuard[q] && r.State != state[q]:
					t.Fatalf("page %d: state %v, was %v", q, r.State, state[q])
				case r.State == eager && r.Offset+k*image.PageSize != offset[q]:
					t.Fatalf("page %d: offset %#x, was %#x", q, r.Offset+k*image.PageSize, offset[q])
				}
			}
			next = r.Addr + r.Npages*image.PageSize
		}
		if next != v.End {
			t.Fatalf("runs %s end at %#x, VMA at %#x", runsString(out), next, v.End)
		}
	})
}
