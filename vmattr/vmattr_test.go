package vmattr

import (
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// fakeCaller records the syscalls it is asked to run, as text, and answers
// from results (by syscall number; 0 when absent).
type fakeCaller struct {
	calls   []string
	results map[uintptr]uintptr
	errs    map[uintptr]error
	// procFiles are the process's /proc files ReadProc answers with.
	procFiles map[string][]byte
}

func (f *fakeCaller) Call(nr uintptr, args ...uintptr) (uintptr, error) {
	s := fmt.Sprint(nr)
	for _, a := range args {
		s += fmt.Sprintf(" %#x", a)
	}
	f.calls = append(f.calls, s)
	return f.results[nr], f.errs[nr]
}

func (f *fakeCaller) CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error) {
	r, err := f.Call(nr, args...)
	f.calls[len(f.calls)-1] += fmt.Sprintf(" in=%q", in)
	return r, err
}

// ReadProc answers from procFiles.
func (f *fakeCaller) ReadProc(name string) ([]byte, error) {
	if b, ok := f.procFiles[name]; ok {
		return b, nil
	}
	return nil, fs.ErrNotExist
}

func (f *fakeCaller) WriteProc(name string, data []byte) error {
	f.calls = append(f.calls, fmt.Sprintf("write %s %s", name, data))
	return nil
}

func vma(prot uint32, flags ...string) *pb.Vma {
	return &pb.Vma{Start: 0x10000, End: 0x14000, Prot: prot, Kind: pb.VmaKind_VMA_KIND_ANON,
		VmFlags: append([]string{"mr", "mw", "me"}, flags...),
		Pages:   []*pb.PageRun{{Addr: 0x10000, Npages: 4, State: pb.PageState_PAGE_STATE_EAGER}}}
}

// withoutData makes v's pages ZERO (no eager page).
func withoutData(v *pb.Vma) *pb.Vma {
	for _, r := range v.Pages {
		r.State = pb.PageState_PAGE_STATE_ZERO
	}
	return v
}

func TestApplyRecordsSyscalls(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    *pb.Vma
		want []string
	}{
		{"plain rw", vma(unix.PROT_READ | unix.PROT_WRITE), nil},
		{"prot none with data", vma(unix.PROT_NONE, "ac"),
			[]string{fmt.Sprintf("%d 0x10000 0x4000 0x0", unix.SYS_MPROTECT)}},
		{"read-only with data", vma(unix.PROT_READ, "ac"),
			[]string{fmt.Sprintf("%d 0x10000 0x4000 0x1", unix.SYS_MPROTECT)}},
		// Mapped with its own protection (its data is written through
		// /proc/PID/mem): mapping it writable would account it.
		{"read-only unaccounted with data", vma(unix.PROT_READ), nil},
		{"prot none unaccounted with data", vma(unix.PROT_NONE), nil},
		// MAP_NORESERVE: never accounted, so filled writable.
		{"read-only noreserve with data", vma(unix.PROT_READ, "nr"),
			[]string{fmt.Sprintf("%d 0x10000 0x4000 0x1", unix.SYS_MPROTECT)}},
		// Accounted, no page written: an anon_vma first (a write fault
		// on the first page, whose zeros are dropped), else mprotect
		// drops VM_ACCOUNT.
		{"read-only accounted without data", withoutData(vma(unix.PROT_READ, "ac")), []string{
			fmt.Sprintf("%d 0x10000 0x1000 %#x", unix.SYS_MADVISE, unix.MADV_POPULATE_WRITE),
			fmt.Sprintf("%d 0x10000 0x1000 %#x", unix.SYS_MADVISE, unix.MADV_DONTNEED),
			fmt.Sprintf("%d 0x10000 0x4000 0x1", unix.SYS_MPROTECT)}},
		// A file mapping keeps VM_ACCOUNT without an anon_vma.
		{"read-only accounted file without data", func() *pb.Vma {
			v := withoutData(vma(unix.PROT_READ, "ac"))
			v.Kind = pb.VmaKind_VMA_KIND_FILE
			return v
		}(), []string{fmt.Sprintf("%d 0x10000 0x4000 0x1", unix.SYS_MPROTECT)}},
		{"read-only unaccounted without data", withoutData(vma(unix.PROT_READ)), nil},
		{"madvise, in table order", vma(3, "wf", "dd", "sr"), []string{
			fmt.Sprintf("%d 0x10000 0x4000 %#x", unix.SYS_MADVISE, unix.MADV_SEQUENTIAL),
			fmt.Sprintf("%d 0x10000 0x4000 %#x", unix.SYS_MADVISE, unix.MADV_WIPEONFORK),
			fmt.Sprintf("%d 0x10000 0x4000 %#x", unix.SYS_MADVISE, unix.MADV_DONTDUMP)}},
		{"thp and ksm", vma(3, "nh", "mg"), []string{
			fmt.Sprintf("%d 0x10000 0x4000 %#x", unix.SYS_MADVISE, unix.MADV_NOHUGEPAGE),
			fmt.Sprintf("%d 0x10000 0x4000 %#x", unix.SYS_MADVISE, unix.MADV_MERGEABLE)}},
		{"locked after the final protection", vma(unix.PROT_READ, "ac", "lo"), []string{
			fmt.Sprintf("%d 0x10000 0x4000 0x1", unix.SYS_MPROTECT),
			fmt.Sprintf("%d 0x10000 0x4000 0x0", unix.SYS_MLOCK2)}},
		{"named", func() *pb.Vma { v := vma(3); v.Name = "[anon:arena 1]"; return v }(), []string{
			fmt.Sprintf("%d %#x %#x 0x10000 0x4000 %#x in=\"arena 1\\x00\"", unix.SYS_PRCTL, unix.PR_SET_VMA, unix.PR_SET_VMA_ANON_NAME, In)}},
		{"locked on fault", vma(3, "lo", "lf"), []string{
			fmt.Sprintf("%d 0x10000 0x4000 %#x", unix.SYS_MLOCK2, unix.MLOCK_ONFAULT)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f fakeCaller
			if err := Apply(&f, tc.v); err != nil {
				t.Fatal(err)
			}
			if got, want := strings.Join(f.calls, "\n"), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("syscalls:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestApplyErrorNamesVMA(t *testing.T) {
	f := fakeCaller{errs: map[uintptr]error{unix.SYS_MADVISE: unix.EINVAL}}
	err := Apply(&f, vma(3, "mg"))
	if err == nil || !strings.Contains(err.Error(), "vma 0x10000-0x14000: injected madvise(mergeable)") {
		t.Fatalf("error %v does not name the vma and the advice", err)
	}
}

func TestFillProt(t *testing.T) {
	const rw = unix.PROT_READ | unix.PROT_WRITE
	for _, tc := range []struct {
		name string
		v    *pb.Vma
		want uint32
	}{
		{"PROT_NONE accounted with data", vma(unix.PROT_NONE, "ac"), rw},
		{"PROT_NONE accounted without data", withoutData(vma(unix.PROT_NONE, "ac")), rw},
		{"read-only accounted without data", withoutData(vma(unix.PROT_READ, "ac")), rw},
		{"PROT_NONE without data", withoutData(vma(unix.PROT_NONE)), unix.PROT_NONE},
		{"PROT_NONE unaccounted with data", vma(unix.PROT_NONE), unix.PROT_NONE},
		{"read-only unaccounted with data", vma(unix.PROT_READ), unix.PROT_READ},
		{"read-only noreserve with data", vma(unix.PROT_READ, "nr"), rw},
		{"read-only with data, flags unknown", func() *pb.Vma { v := vma(unix.PROT_READ); v.VmFlags = nil; return v }(), rw},
		{"shared anonymous read-only with data", func() *pb.Vma { v := vma(unix.PROT_READ, "ac"); v.Shared = true; return v }(), rw},
	} {
		if got := FillProt(tc.v); got != tc.want {
			t.Errorf("%s: fill %s, want %s", tc.name, ProtString(got), ProtString(tc.want))
		}
	}
	shared := vma(unix.PROT_READ)
	shared.Kind, shared.Shared = pb.VmaKind_VMA_KIND_FILE, true
	if got := FillProt(shared); got != unix.PROT_READ {
		t.Errorf("shared file: fill %#x, want its own r", got)
	}
	if OpenAccess(shared) != unix.O_RDWR {
		t.Error("shared file with mw: want O_RDWR")
	}
	shared.VmFlags = []string{"rd", "mr", "me"}
	if OpenAccess(shared) != unix.O_RDONLY {
		t.Error("shared file without mw: want O_RDONLY")
	}
	shared.Shared = false
	if OpenAccess(shared) != unix.O_RDONLY {
		t.Error("private file: want O_RDONLY")
	}
}

func TestCheckRefuses(t *testing.T) {
	for _, f := range []string{"ss", "sl", "um", "uw"} {
		if err := Check(vma(3, f)); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", f)) {
			t.Errorf("VmFlags %s: %v, want a refusal naming it", f, err)
		}
	}
	if err := Check(vma(3, "hg", "nh")); err == nil {
		t.Error("hg with nh accepted")
	}
	if err := Check(vma(3, "wf", "dd", "lo", "mg", "hg")); err != nil {
		t.Errorf("restorable flags refused: %v", err)
	}
}

func TestMM(t *testing.T) {
	f := fakeCaller{results: map[uintptr]uintptr{unix.SYS_PRCTL: 1},
		procFiles: map[string][]byte{"coredump_filter": []byte("0000007b\n")}}
	a, err := DumpMM(&f, []string{"rd", "wr", "lo", "lf"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Mlockall != unix.MCL_FUTURE|unix.MCL_ONFAULT || a.ThpDisable != 1 || !a.MemoryMerge || a.GetCoredumpFilter() != 0x7b {
		t.Fatalf("DumpMM = %v", a)
	}
	f.calls = nil
	if err := ApplyMM(&f, a); err != nil {
		t.Fatal(err)
	}
	want := []string{
		fmt.Sprintf("%d %#x 0x1 0x0 0x0 0x0", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE),
		fmt.Sprintf("%d %#x 0x1 0x0 0x0 0x0", unix.SYS_PRCTL, unix.PR_SET_MEMORY_MERGE),
		"write coredump_filter 0x7b", // hex with 0x: the kernel parses it with base 0
		fmt.Sprintf("%d %#x", unix.SYS_MLOCKALL, unix.MCL_FUTURE|unix.MCL_ONFAULT),
	}
	if got := strings.Join(f.calls, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("ApplyMM syscalls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if s := ShowMM(a); s != "THP disabled, KSM for every mapping, coredump_filter 0x7b, mlockall(MCL_FUTURE|MCL_ONFAULT)" {
		t.Errorf("ShowMM = %q", s)
	}
	// An image from before coredump_filter was recorded leaves it alone.
	f.calls = nil
	a.CoredumpFilter = nil
	if err := ApplyMM(&f, a); err != nil || slices.ContainsFunc(f.calls, func(c string) bool { return strings.HasPrefix(c, "write") }) {
		t.Errorf("ApplyMM without coredump_filter: %v, %q", err, f.calls)
	}
	f = fakeCaller{procFiles: map[string][]byte{"coredump_filter": []byte("7b\n7b")}}
	if _, err := DumpMM(&f, nil); err == nil {
		t.Error("a malformed coredump_filter is accepted")
	}
	// Without KSM the kernel says EINVAL: nothing to restore.
	f = fakeCaller{errs: map[uintptr]error{unix.SYS_PRCTL: unix.EINVAL}}
	if _, err := DumpMM(&f, nil); err == nil {
		t.Error("PR_GET_THP_DISABLE failing is not an error")
	}
}

// allowed are the only syscalls restoring VMA attributes may inject: no
// advice that drops data (MADV_DONTNEED, MADV_REMOVE, …) can come from an
// image; but for the MADV_DONTNEED of the page a MADV_POPULATE_WRITE just
// populated (with zeros) in a VMA without eager pages (protAttr).
var allowed = map[uintptr]bool{unix.SYS_MPROTECT: true, unix.SYS_MADVISE: true, unix.SYS_MLOCK2: true, unix.SYS_PRCTL: true}

var allowedAdvice = map[uintptr]bool{
	unix.MADV_SEQUENTIAL: true, unix.MADV_RANDOM: true, unix.MADV_DONTFORK: true, unix.MADV_WIPEONFORK: true,
	unix.MADV_DONTDUMP: true, unix.MADV_HUGEPAGE: true, unix.MADV_NOHUGEPAGE: true, unix.MADV_MERGEABLE: true,
	// Zaps the range, but only GUARD runs get it, which hold no data.
	unix.MADV_GUARD_INSTALL: true,
}

// checkingCaller fails the test on a syscall restoring v's attributes
// must not inject.
type checkingCaller struct {
	t *testing.T
	v *pb.Vma
	// populated is the page MADV_POPULATE_WRITE populated last, which
	// MADV_DONTNEED may drop (it holds the zeros of that fault).
	populated *uintptr
}

func (c checkingCaller) Call(nr uintptr, args ...uintptr) (uintptr, error) {
	if !allowed[nr] {
		c.t.Fatalf("syscall %d injected", nr)
	}
	if nr == unix.SYS_MADVISE {
		switch {
		case args[2] == unix.MADV_POPULATE_WRITE && !hasEager(c.v) && args[1] == 0x1000:
			*c.populated = args[0]
		case args[2] == unix.MADV_DONTNEED && *c.populated == args[0] && args[1] == 0x1000:
			*c.populated = 0
		case !allowedAdvice[args[2]]:
			c.t.Fatalf("madvise advice %d injected", args[2])
		}
	}
	if nr == unix.SYS_PRCTL && (args[0] != unix.PR_SET_VMA || args[1] != unix.PR_SET_VMA_ANON_NAME) {
		c.t.Fatalf("prctl %d %d injected", args[0], args[1])
	}
	return 0, nil
}

func (c checkingCaller) CallIn(in []byte, nr uintptr, args ...uintptr) (uintptr, error) {
	if len(in) > maxAnonName {
		c.t.Fatalf("%d bytes passed in", len(in))
	}
	return c.Call(nr, args...)
}

func (c checkingCaller) ReadProc(name string) ([]byte, error) {
	c.t.Fatalf("ReadProc(%q) while restoring a VMA", name)
	return nil, nil
}

func (c checkingCaller) WriteProc(name string, _ []byte) error {
	c.t.Fatalf("WriteProc(%q) while restoring a VMA", name)
	return nil
}

// FuzzVmFlags feeds arbitrary VmFlags and protections: Check, Show and
// Apply never panic, and Apply injects only whitelisted calls on the VMA's
// own range.
func FuzzVmFlags(f *testing.F) {
	f.Add("rd wr mr mw me ac lo lf wf dd", uint32(3), true, "")
	f.Add("rd mr mw me sr rr dc hg mg", uint32(0), false, "[anon_shmem:x]")
	f.Add("ss sl um", uint32(7), true, "[heap]")
	f.Add("rd wr", uint32(3), true, "[anon:heap of mine]")
	f.Add("rd mr mw me ac", uint32(1), false, "")
	f.Add("mr mw me", uint32(0), true, "")
	f.Fuzz(func(t *testing.T, flags string, prot uint32, eager bool, name string) {
		v := vma(prot&7, strings.Fields(flags)...)
		v.Name = name
		if !eager {
			v.Pages[0].State = pb.PageState_PAGE_STATE_ZERO
		}
		_ = Check(v)
		_ = Show(v)
		if fp := FillProt(v); fp&v.Prot != v.Prot {
			t.Fatalf("FillProt %#x drops bits of %#x", fp, v.Prot)
		}
		if err := Apply(checkingCaller{t, v, new(uintptr)}, v); err != nil && Check(v) == nil {
			t.Fatalf("Apply fails on a VMA Check accepts: %v", err)
		}
	})
}

// TestWithIn: only the argument equal to In is replaced, and args is left
// as it was.
func TestWithIn(t *testing.T) {
	args := []uintptr{1, In, 3}
	got := WithIn(args, 0x7000)
	if !slices.Equal(got, []uintptr{1, 0x7000, 3}) || !slices.Equal(args, []uintptr{1, In, 3}) {
		t.Fatalf("WithIn(%v) = %v", args, got)
	}
}

// FuzzCoredumpFilter: parseCoredumpFilter never panics, and what it
// accepts reads back the same in the kernel's format.
func FuzzCoredumpFilter(f *testing.F) {
	f.Add([]byte("00000033\n"))
	f.Add([]byte("0000007b"))
	f.Add([]byte("-1\n"))
	f.Add([]byte("1ffffffff\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseCoredumpFilter(b)
		if err != nil {
			return
		}
		w, err := parseCoredumpFilter(fmt.Appendf(nil, "%08x\n", v))
		if err != nil || w != v {
			t.Fatalf("%#x does not read back: %#x, %v", v, w, err)
		}
	})
}

// outCaller answers CallOut from outs, one per call, in order.
type outCaller struct {
	calls []string
	outs  [][]byte
}

func (f *outCaller) CallOut(out []byte, nr uintptr, args ...uintptr) error {
	s := fmt.Sprint(nr)
	for _, a := range args {
		s += fmt.Sprintf(" %#x", a)
	}
	f.calls = append(f.calls, s)
	copy(out, f.outs[0])
	f.outs = f.outs[1:]
	return nil
}

// TestDumpPolicyBind: a VMA's policy is read with get_mempolicy(2)
// MPOL_F_ADDR (mode, then node mask, trimmed) and bound with mbind(2) at
// the VMA's range with maxnode one more than the mask's bits; MPOL_DEFAULT
// records nothing and binds nothing, MPOL_LOCAL passes no mask.
func TestDumpPolicyBind(t *testing.T) {
	v := vma(3)
	f := &outCaller{outs: [][]byte{{2, 0x80, 0, 0}, {1}}} // MPOL_BIND|MPOL_F_STATIC_NODES, node 0
	if err := DumpPolicy(f, v); err != nil {
		t.Fatal(err)
	}
	if v.Mempolicy != 2|1<<15 || string(v.MempolicyNodes) != "\x01" {
		t.Fatalf("recorded policy %#x nodes %x", v.Mempolicy, v.MempolicyNodes)
	}
	wantCalls := []string{
		fmt.Sprintf("%d %#x 0x0 0x0 0x10000 0x2", unix.SYS_GET_MEMPOLICY, Out),
		fmt.Sprintf("%d 0x0 %#x 0x400 0x10000 0x2", unix.SYS_GET_MEMPOLICY, Out),
	}
	if !slices.Equal(f.calls, wantCalls) {
		t.Errorf("dump calls %q, want %q", f.calls, wantCalls)
	}
	if got := Show(v); got != "mempolicy=bind=static:0" {
		t.Errorf("Show = %q", got)
	}
	var c fakeCaller
	if err := Bind(&c, v); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d 0x10000 0x4000 0x8002 %#x 0x9 0x0 in=\"\\x01\"", unix.SYS_MBIND, In); len(c.calls) != 1 || c.calls[0] != want {
		t.Errorf("bind calls %q, want %q", c.calls, want)
	}

	local := vma(3)
	if err := DumpPolicy(&outCaller{outs: [][]byte{{4, 0, 0, 0}, {}}}, local); err != nil {
		t.Fatal(err)
	}
	c = fakeCaller{}
	if err := Bind(&c, local); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d 0x10000 0x4000 0x4 0x0 0x0 0x0", unix.SYS_MBIND); len(c.calls) != 1 || c.calls[0] != want {
		t.Errorf("bind calls for MPOL_LOCAL %q, want %q", c.calls, want)
	}

	none := vma(3)
	none.Mempolicy, none.MempolicyNodes = 7, []byte{1}
	if err := DumpPolicy(&outCaller{outs: [][]byte{{0, 0, 0, 0}}}, none); err != nil {
		t.Fatal(err)
	}
	c = fakeCaller{}
	if none.Mempolicy != 0 || none.MempolicyNodes != nil || Bind(&c, none) != nil || len(c.calls) != 0 {
		t.Errorf("MPOL_DEFAULT: recorded %#x %x, bind calls %q", none.Mempolicy, none.MempolicyNodes, c.calls)
	}
	big := vma(3)
	big.Mempolicy, big.MempolicyNodes = 2, make([]byte, 200)
	if err := Bind(&c, big); err == nil {
		t.Error("a node mask larger than the kernel's is bound")
	}
}
