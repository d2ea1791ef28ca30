package vmaflags

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/lazycr/lazycr/proc"
)

func TestMnemonics(t *testing.T) {
	for _, c := range []struct {
		flags uint64
		want  []string
		pkey  int
	}{
		{0, []string{}, 0},
		{0x73, []string{"rd", "wr", "mr", "mw", "me"}, 0}, // rw-p anonymous
		{1<<0 | 1<<13 | 1<<19, []string{"rd", "lo", "lf"}, 0},
		{1<<27 | 1<<36, []string{"??", "??"}, 0}, // no mnemonic: "??" as the kernel prints
		{1<<0 | 3<<32, []string{"rd"}, 3},        // key bits print as ProtectionKey only
		{1 << 42, []string{"sl"}, 0},
	} {
		if got := Mnemonics(c.flags); !slices.Equal(got, c.want) {
			t.Errorf("Mnemonics(%#x) = %q, want %q", c.flags, got, c.want)
		}
		if got := ProtectionKey(c.flags); got != c.pkey {
			t.Errorf("ProtectionKey(%#x) = %d, want %d", c.flags, got, c.pkey)
		}
	}
}

// TestVerify: a stable VMA named as smaps names it verifies its bits; one
// that changed between the reads verifies nothing; a stable one named
// otherwise verifies nothing at all.
func TestVerify(t *testing.T) {
	rw := uint64(0x73)
	locked := rw | 1<<13
	before := []VMA{{Start: 0x1000, End: 0x2000, Flags: rw}, {Start: 0x3000, End: 0x4000, Flags: rw}}
	after := []VMA{{Start: 0x1000, End: 0x2000, Flags: rw}, {Start: 0x3000, End: 0x4000, Flags: locked}}
	sm := []proc.Mapping{
		{Start: 0x1000, End: 0x2000, VmFlags: []string{"rd", "wr", "mr", "mw", "me"}},
		{Start: 0x3000, End: 0x4000, VmFlags: []string{"rd", "wr", "mr", "mw", "me", "lo"}},
		{Start: 0xff600000, End: 0xff601000, VmFlags: []string{"ex"}, Path: "[vsyscall]"},
	}
	v, bad := Verify(before, after, sm)
	if len(bad) != 0 || v != Verified(rw) {
		t.Errorf("Verify = %#x, %v; want %#x, none", uint64(v), bad, rw)
	}
	if v.Covers(locked) || !v.Covers(rw) || !v.Covers(0) {
		t.Errorf("Covers wrong for %#x", uint64(v))
	}
	sm[0].VmFlags = []string{"rd", "wr", "mr", "me", "mw"} // order matters
	if v, bad := Verify(before, after, sm); v != 0 || len(bad) != 1 || bad[0].Start != 0x1000 {
		t.Errorf("Verify with a misnamed vma = %#x, %v; want 0 and the vma", uint64(v), bad)
	}
	sm[0].VmFlags = []string{"rd", "wr", "mr", "mw", "me"}
	sm[0].ProtectionKey = 1
	if v, bad := Verify(before, after, sm); v != 0 || len(bad) != 1 {
		t.Errorf("Verify with another protection key = %#x, %v; want 0 and the vma", uint64(v), bad)
	}
}

func record(start, end, flags uint64) []byte {
	b := make([]byte, recordSize)
	binary.NativeEndian.PutUint64(b, start)
	binary.NativeEndian.PutUint64(b[8:], end)
	binary.NativeEndian.PutUint64(b[16:], flags)
	return b
}

// recordOf is v's record.
func recordOf(v VMA) []byte {
	b := record(v.Start, v.End, v.Flags)
	if v.Policy {
		b[24] = 1
	}
	return b
}

func TestParseRecords(t *testing.T) {
	good := append(record(0x1000, 0x3000, 0x73), record(0x3000, 0x4000, 0x75)...)
	vmas, err := ParseRecords(good)
	if err != nil || !slices.Equal(vmas, []VMA{{0x1000, 0x3000, 0x73, false}, {0x3000, 0x4000, 0x75, false}}) {
		t.Fatalf("ParseRecords = %v, %v", vmas, err)
	}
	pol := recordOf(VMA{Start: 0x1000, End: 0x2000, Flags: 0x73, Policy: true})
	if vmas, err := ParseRecords(pol); err != nil || len(vmas) != 1 || !vmas[0].Policy {
		t.Errorf("ParseRecords of a VMA with a policy = %v, %v", vmas, err)
	}
	if vmas, err := ParseRecords(nil); err != nil || len(vmas) != 0 {
		t.Errorf("ParseRecords(nil) = %v, %v; want none", vmas, err)
	}
	for name, b := range map[string][]byte{
		"short":       good[:40],
		"empty range": record(0x1000, 0x1000, 0),
		"unaligned":   record(0x1000, 0x1800, 0),
		"overlap":     append(record(0x1000, 0x3000, 0), record(0x2000, 0x4000, 0)...),
		"backwards":   append(record(0x3000, 0x4000, 0), record(0x1000, 0x2000, 0)...),
		"policy word": func() []byte { b := record(0x1000, 0x2000, 0); b[25] = 1; return b }(),
	} {
		if vmas, err := ParseRecords(b); err == nil {
			t.Errorf("%s: ParseRecords = %v, want an error", name, vmas)
		}
	}
}

// FuzzParseRecords: an error exactly when no result; a result is sorted,
// non-overlapping, page-aligned and encodes back to the input.
func FuzzParseRecords(f *testing.F) {
	f.Add(append(record(0x1000, 0x3000, 0x73), record(0x3000, 0x4000, 0x75)...))
	f.Add(record(0, 0x1000, 1<<42))
	f.Add(recordOf(VMA{Start: 0x1000, End: 0x2000, Flags: 0x73, Policy: true}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		vmas, err := ParseRecords(b)
		if (err != nil) == (vmas != nil) {
			t.Fatalf("ParseRecords = %v, %v: want exactly one of them", vmas, err)
		}
		if err != nil {
			return
		}
		var enc []byte
		var prev uint64
		for _, v := range vmas {
			if v.Start < prev || v.End <= v.Start || v.Start%pageSize != 0 || v.End%pageSize != 0 {
				t.Fatalf("bad vma %+v after %#x", v, prev)
			}
			prev = v.End
			enc = append(enc, recordOf(v)...)
		}
		if !slices.Equal(enc, b) {
			t.Fatalf("round trip: %x != %x", enc, b)
		}
	})
}
