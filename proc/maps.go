package proc

import (
	"bytes"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// Limits for maps and smaps. vm.max_map_count defaults to 65530; the limit
// leaves room for raised settings while refusing absurd input.
const (
	// MaxMappings is the largest number of mappings ParseMaps and ParseSmaps accept.
	MaxMappings = 1 << 20
	// maxMapsLine covers the fixed fields plus PATH_MAX (4096) with escapes.
	maxMapsLine = 16 << 10
	// smapsLinesPerMapping bounds the key lines per smaps entry.
	smapsLinesPerMapping = 64
)

// Mapping is one line of /proc/PID/maps, or one entry of /proc/PID/smaps
// (the smaps-only fields are zero when parsed from maps). Sizes from smaps
// are in KiB, as the kernel prints them. See proc(5).
type Mapping struct {
	Start, End                uint64
	Read, Write, Exec, Shared bool
	Offset                    uint64
	Major, Minor              uint32
	Inode                     uint64
	// Path is the pathname or pseudo-name ("[heap]", "[stack]", "[vdso]"),
	// empty for anonymous mappings. It may contain spaces; a newline in a
	// file name is shown by the kernel as "\012" and is kept escaped.
	Path string

	// smaps only.
	VmFlags                                                      []string
	Size, KernelPageSize, MMUPageSize                            uint64
	Rss, Pss, PssDirty, PssAnon, PssFile, PssShmem               uint64
	SharedClean, SharedDirty, PrivateClean, PrivateDirty         uint64
	Referenced, Anonymous, KSM, LazyFree, AnonHugePages          uint64
	ShmemPmdMapped, FilePmdMapped, SharedHugetlb, PrivateHugetlb uint64
	Swap, SwapPss, Locked                                        uint64
	THPeligible                                                  bool
	ProtectionKey                                                int
}

// Prot returns the mapping's protection as PROT_* bits for mmap(2).
func (m *Mapping) Prot() int {
	p := unix.PROT_NONE
	if m.Read {
		p |= unix.PROT_READ
	}
	if m.Write {
		p |= unix.PROT_WRITE
	}
	if m.Exec {
		p |= unix.PROT_EXEC
	}
	return p
}

// Size in bytes of the mapping (End - Start). Not to be confused with the
// smaps field Size, in KiB.
func (m *Mapping) Len() uint64 { return m.End - m.Start }

// IsSpecial reports whether the mapping is one the kernel installs itself and
// that cannot be recreated with mmap: [vdso], [vvar], [vvar_vclock] and
// [vsyscall].
func (m *Mapping) IsSpecial() bool {
	switch m.Path {
	case "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]":
		return true
	}
	return false
}

// Deleted reports whether the backing file was unlinked (the kernel appends
// " (deleted)" to the path).
func (m *Mapping) Deleted() bool { return strings.HasSuffix(m.Path, " (deleted)") }

// Anonymous reports whether the mapping has no backing file (inode 0 and a
// path that is empty or a bracketed pseudo-name such as [heap] or [stack]).
func (m *Mapping) IsAnonymous() bool {
	return m.Inode == 0 && (m.Path == "" || strings.HasPrefix(m.Path, "["))
}

// String formats m as the kernel prints the line in /proc/PID/maps
// (show_map_vma in fs/proc/task_mmu.c), without the trailing newline.
func (m *Mapping) String() string {
	perm := func(b bool, c byte) byte {
		if b {
			return c
		}
		return '-'
	}
	share := byte('p')
	if m.Shared {
		share = 's'
	}
	s := fmt.Sprintf("%08x-%08x %c%c%c%c %08x %02x:%02x %d ", m.Start, m.End,
		perm(m.Read, 'r'), perm(m.Write, 'w'), perm(m.Exec, 'x'), share,
		m.Offset, m.Major, m.Minor, m.Inode)
	if m.Path == "" {
		return s
	}
	const width = 25 + 8*6 - 1 // seq_setwidth in show_map_vma for 64-bit
	if len(s) < width {
		s += strings.Repeat(" ", width-len(s))
	}
	return s + " " + m.Path
}

// parseMapsLine parses the header line shared by maps and smaps.
func parseMapsLine(lr *lineReader, line []byte, m *Mapping) error {
	f, rest := cutField(line)
	dash := bytes.IndexByte(f, '-')
	if dash < 0 {
		return lr.malformed("address range %q", f)
	}
	var ok bool
	if m.Start, ok = parseHex(f[:dash]); !ok {
		return lr.malformed("start address %q", f[:dash])
	}
	if m.End, ok = parseHex(f[dash+1:]); !ok || m.End < m.Start {
		return lr.malformed("end address %q", f[dash+1:])
	}
	f, rest = cutField(rest)
	if len(f) != 4 {
		return lr.malformed("permissions %q", f)
	}
	flag := func(c, yes byte) (bool, bool) {
		switch c {
		case yes:
			return true, true
		case '-':
			return false, true
		}
		return false, false
	}
	var ok1, ok2, ok3 bool
	m.Read, ok1 = flag(f[0], 'r')
	m.Write, ok2 = flag(f[1], 'w')
	m.Exec, ok3 = flag(f[2], 'x')
	switch f[3] {
	case 's':
		m.Shared = true
	case 'p':
	default:
		ok1 = false
	}
	if !ok1 || !ok2 || !ok3 {
		return lr.malformed("permissions %q", f)
	}
	f, rest = cutField(rest)
	if m.Offset, ok = parseHex(f); !ok {
		return lr.malformed("offset %q", f)
	}
	f, rest = cutField(rest)
	colon := bytes.IndexByte(f, ':')
	if colon < 0 {
		return lr.malformed("device %q", f)
	}
	maj, ok1 := parseHex(f[:colon])
	min, ok2 := parseHex(f[colon+1:])
	if !ok1 || !ok2 || maj > 0xffffffff || min > 0xffffffff {
		return lr.malformed("device %q", f)
	}
	m.Major, m.Minor = uint32(maj), uint32(min)
	f, rest = cutField(rest)
	if m.Inode, ok = parseDec(f); !ok {
		return lr.malformed("inode %q", f)
	}
	m.Path = string(bytes.TrimLeft(rest, " \t"))
	return nil
}

// ParseMaps parses /proc/PID/maps. An empty input (a zombie or kernel
// thread) yields an empty, non-nil slice.
func ParseMaps(r io.Reader) ([]Mapping, error) {
	lr := newLineReader(r, "maps", maxMapsLine, MaxMappings)
	ms := []Mapping{}
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		var m Mapping
		if err := parseMapsLine(lr, line, &m); err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	if lr.err != nil {
		return nil, lr.err
	}
	return ms, nil
}

// smapsField returns a pointer to the KiB field named key, or nil.
func (m *Mapping) smapsField(key string) *uint64 {
	switch key {
	case "Size":
		return &m.Size
	case "KernelPageSize":
		return &m.KernelPageSize
	case "MMUPageSize":
		return &m.MMUPageSize
	case "Rss":
		return &m.Rss
	case "Pss":
		return &m.Pss
	case "Pss_Dirty":
		return &m.PssDirty
	case "Pss_Anon":
		return &m.PssAnon
	case "Pss_File":
		return &m.PssFile
	case "Pss_Shmem":
		return &m.PssShmem
	case "Shared_Clean":
		return &m.SharedClean
	case "Shared_Dirty":
		return &m.SharedDirty
	case "Private_Clean":
		return &m.PrivateClean
	case "Private_Dirty":
		return &m.PrivateDirty
	case "Referenced":
		return &m.Referenced
	case "Anonymous":
		return &m.Anonymous
	case "KSM":
		return &m.KSM
	case "LazyFree":
		return &m.LazyFree
	case "AnonHugePages":
		return &m.AnonHugePages
	case "ShmemPmdMapped":
		return &m.ShmemPmdMapped
	case "FilePmdMapped":
		return &m.FilePmdMapped
	case "Shared_Hugetlb":
		return &m.SharedHugetlb
	case "Private_Hugetlb":
		return &m.PrivateHugetlb
	case "Swap":
		return &m.Swap
	case "SwapPss":
		return &m.SwapPss
	case "Locked":
		return &m.Locked
	}
	return nil
}

// ParseSmaps parses /proc/PID/smaps: a maps line per mapping followed by
// "Key: N kB" lines and a "VmFlags:" line. Unknown keys are ignored so newer
// kernels parse; a key line before the first mapping is an error.
func ParseSmaps(r io.Reader) ([]Mapping, error) {
	lr := newLineReader(r, "smaps", maxMapsLine, MaxMappings*smapsLinesPerMapping)
	ms := []Mapping{}
	var cur *Mapping
	for {
		line, ok := lr.next()
		if !ok {
			break
		}
		key, rest := cutField(line)
		if len(key) == 0 || key[len(key)-1] != ':' {
			if len(ms) >= MaxMappings {
				return nil, tooLarge("smaps", lr.line, "more than %d mappings", MaxMappings)
			}
			ms = append(ms, Mapping{})
			cur = &ms[len(ms)-1]
			if err := parseMapsLine(lr, line, cur); err != nil {
				return nil, err
			}
			continue
		}
		if cur == nil {
			return nil, lr.malformed("key %q before the first mapping", key)
		}
		name := string(key[:len(key)-1])
		switch name {
		case "VmFlags":
			cur.VmFlags = []string{}
			for {
				var f []byte
				f, rest = cutField(rest)
				if len(f) == 0 {
					break
				}
				if len(cur.VmFlags) >= 64 {
					return nil, tooLarge("smaps", lr.line, "too many VmFlags")
				}
				cur.VmFlags = append(cur.VmFlags, string(f))
			}
			continue
		case "THPeligible", "ProtectionKey":
			v, _ := cutField(rest)
			n, ok := parseInt(v)
			if !ok {
				return nil, lr.malformed("%s value %q", name, v)
			}
			if name == "THPeligible" {
				cur.THPeligible = n != 0
			} else {
				cur.ProtectionKey = int(n)
			}
			continue
		}
		v, rest := cutField(rest)
		unit, _ := cutField(rest)
		n, ok := parseDec(v)
		if !ok {
			return nil, lr.malformed("%s value %q", name, v)
		}
		if p := cur.smapsField(name); p != nil {
			if string(unit) != "kB" {
				return nil, lr.malformed("%s unit %q", name, unit)
			}
			*p = n
		}
	}
	if lr.err != nil {
		return nil, lr.err
	}
	return ms, nil
}

// ReadMaps reads and parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) { return readParsed(pidPath(pid, "maps"), ParseMaps) }

// ReadSmaps reads and parses /proc/PID/smaps, in reads of at most
// [smapsReadSize] bytes so that the kernel walks each mapping's page tables
// once (see [smallReads]).
func ReadSmaps(pid int) ([]Mapping, error) {
	return readParsed(pidPath(pid, "smaps"), func(r io.Reader) ([]Mapping, error) {
		return ParseSmaps(smallReads{R: r, N: smapsReadSize})
	})
}

// smapsReadSize is the largest read(2) ReadSmaps makes: smaller than the
// page-sized seq_file buffer less one smaps record (about 1.2 KiB with a
// short path), so no record ever overflows that buffer.
const smapsReadSize = 1024

// smallReads passes each Read to R with at most N bytes.
//
// Why smaps needs it: a seq_file read(2) fills a page-sized kernel buffer
// with whole records until the caller's count is reached; the record that
// overflows the buffer is dropped and made again by the next read
// (seq_read_iter in fs/seq_file.c; Documentation/filesystems/seq_file.rst).
// An smaps record costs a walk of the mapping's page tables
// (smap_gather_stats in fs/proc/task_mmu.c), so with 4 KiB or larger reads
// about one mapping in four is walked twice — a large one doubles the
// read. With reads smaller than the buffer less a record, the kernel stops
// after the record that reaches the count and never drops one. Measured on
// this VM, CPU time of one read of the smaps of fill.c with 1 GiB in one
// mapping (4 KiB pages; median of 9): 30–33 ms in 4 KiB or 64 KiB reads,
// 15.8–16.4 ms in 512 B–2 KiB reads, 14.4–14.9 ms for smaps_rollup (each
// mapping walked once). In a lazy dump of it (the "memory map read" debug
// line's cpu, all of the memory step; median of 5): 32.2 → 18.8 ms at
// 1 GiB, 102.0 → 55.2 ms at 4 GiB; with the same memory in 24 mappings,
// where the large records happen to fall better, 20.9 → 20.9 ms and
// 60.6 → 56.3 ms (median of 7).
// BenchmarkReadSmapsReadSize compares read sizes.
type smallReads struct {
	R io.Reader
	N int
}

func (s smallReads) Read(p []byte) (int, error) {
	if len(p) > s.N {
		p = p[:s.N]
	}
	return s.R.Read(p)
}

func readParsed[T any](path string, parse func(io.Reader) (T, error)) (T, error) {
	var zero T
	f, err := openFile(path)
	if err != nil {
		return zero, err
	}
	defer f.Close()
	v, err := parse(f)
	if err != nil {
		return zero, fmt.Errorf("read %s: %w", path, err)
	}
	return v, nil
}
