package dump

import (
	"bytes"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// TestReadVMAsPaths reads this process's VMAs the way a dump does: by the
// BPF path when the pre-freeze read verified every bit, by smaps when a VMA
// got a bit after it that it did not verify, or with no pre-freeze read.
func TestReadVMAsPaths(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loading a BPF iterator takes CAP_BPF and CAP_PERFMON")
	}
	pid := os.Getpid()
	// The Go runtime may map memory between two reads: try a few times.
	var pre *preFreeze
	var r vmaRead
	for range 5 {
		pre.close()
		pre = readBeforeFreeze(pid, zerolog.Nop())
		if pre.prog == nil {
			t.Fatalf("bpf path not prepared: %s", pre.why)
		}
		var err error
		if r, err = readVMAs(pid, pid, pre); err != nil {
			t.Fatal(err)
		}
		if r.how == VMAReadBPF {
			break
		}
	}
	defer pre.close()
	if r.how != VMAReadBPF {
		t.Fatalf("read by %s, want bpf: %s", r.how, r.why)
	}
	for _, m := range r.maps {
		if m.VmFlags == nil {
			t.Errorf("vma %#x-%#x %s: no VmFlags", m.Start, m.End, m.Path)
		}
	}

	// A flag no VMA had before: the freeze must not trust its name.
	var advice int
	for _, c := range []struct {
		bit    uint
		advice int
	}{{25, unix.MADV_WIPEONFORK}, {26, unix.MADV_DONTDUMP}, {16, unix.MADV_RANDOM}, {15, unix.MADV_SEQUENTIAL}, {17, unix.MADV_DONTFORK}} {
		if uint64(pre.verified)&(1<<c.bit) == 0 {
			advice = c.advice
			break
		}
	}
	if advice == 0 {
		t.Skipf("every candidate bit already verified (%#x)", uint64(pre.verified))
	}
	b, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	if err := unix.Madvise(b, advice); err != nil {
		t.Fatal(err)
	}
	r, err = readVMAs(pid, pid, pre)
	if err != nil {
		t.Fatal(err)
	}
	if r.how != VMAReadSmaps || !strings.Contains(r.why, "not verified") {
		t.Errorf("after madvise(%d): read by %s (%s), want smaps for a bit not verified", advice, r.how, r.why)
	}

	r, err = readVMAs(pid, pid, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.how != VMAReadSmaps || !strings.Contains(r.why, "no read before the freeze") {
		t.Errorf("without a pre-freeze read: read by %s (%s), want smaps", r.how, r.why)
	}
}

// TestPreSmapsUsed: the density hint for wholeLazy from smaps before the
// freeze: exact for the same range, a lower bound for a VMA grown at
// either end, none for one that shrank, split or is new.
func TestPreSmapsUsed(t *testing.T) {
	const kib, mib = 1 << 10, 1 << 20
	p := newPreSmaps([]proc.Mapping{
		{Start: 0x10000000, End: 0x20000000, Rss: 1024, Swap: 1024}, // 256 MiB, 2 MiB used
		{Start: 0x30000000, End: 0x30100000, Rss: 64},
		{Start: 0x30200000, End: 0x30300000, Rss: 32},
	})
	for _, c := range []struct {
		name       string
		start, end uint64
		want       uint64
		ok         bool
	}{
		{"same", 0x10000000, 0x20000000, 2 * mib, true},
		{"grown up (brk)", 0x10000000, 0x28000000, 2 * mib, true},
		{"grown down", 0x08000000, 0x20000000, 2 * mib, true},
		{"merged both", 0x30000000, 0x30300000, 96 * kib, true},
		{"shrunk", 0x10000000, 0x18000000, 0, false},
		{"split tail", 0x18000000, 0x20000000 - 0x1000, 0, false},
		{"new", 0x40000000, 0x40001000, 0, false},
	} {
		got, ok := p.used(c.start, c.end)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: used(%#x, %#x) = %d, %v; want %d, %v", c.name, c.start, c.end, got, ok, c.want, c.ok)
		}
	}
	var none *preSmaps
	if _, ok := none.used(0x10000000, 0x20000000); ok {
		t.Error("a member bound in the freeze has a hint")
	}
}

// TestParseNumaPolicies: the VMAs whose numa_maps policy is not "default"
// are listed by start address; a malformed line is an error.
func TestParseNumaPolicies(t *testing.T) {
	in := "557da6f72000 default file=/usr/bin/head mapped=2 N0=2 kernelpagesize_kB=4\n" +
		"7f86381a1000 bind=static:0 anon=4 dirty=4 active=0 N0=4 kernelpagesize_kB=4\n" +
		"7f863838d000 local\n" +
		"7f8638391000 prefer:0 anon=4 dirty=4 active=0 N0=4 kernelpagesize_kB=4\n"
	got, err := parseNumaPolicies(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]bool{0x7f86381a1000: true, 0x7f863838d000: true, 0x7f8638391000: true}
	if !maps.Equal(got, want) {
		t.Errorf("parseNumaPolicies = %v, want %v", got, want)
	}
	for _, bad := range []string{"7f86381a1000\n", "zz default\n", "7f86381a1001 bind:0\n", "7f86381a1000  bind:0\n"} {
		if got, err := parseNumaPolicies(strings.NewReader(bad)); err == nil {
			t.Errorf("parseNumaPolicies(%q) = %v, want an error", bad, got)
		}
	}
}

// FuzzParseNumaPolicies: an error exactly when no result; every address
// listed is page-aligned and starts a line whose policy is not "default".
func FuzzParseNumaPolicies(f *testing.F) {
	f.Add([]byte("557da6f72000 default file=/usr/bin/head mapped=2 N0=2\n7f863838d000 local\n"))
	f.Add([]byte("7f8638391000 prefer:0 anon=4\n"))
	f.Add([]byte("1000"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseNumaPolicies(bytes.NewReader(b))
		if (err != nil) == (got != nil) {
			t.Fatalf("parseNumaPolicies = %v, %v: want exactly one of them", got, err)
		}
		for a := range got {
			if a%image.PageSize != 0 {
				t.Fatalf("address %#x is not page-aligned", a)
			}
			if !bytes.Contains(b, []byte(strconv.FormatUint(a, 16))) && !bytes.Contains(bytes.ToLower(b), []byte(strconv.FormatUint(a, 16))) {
				t.Fatalf("address %#x is not in the input", a)
			}
		}
	})
}
