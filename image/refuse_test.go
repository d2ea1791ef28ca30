package image

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
)

// wantErr checks that err wraps sentinel and names the file.
func wantErr(t *testing.T, err, sentinel error, file string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v naming %s", sentinel, file)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %q does not wrap %q", err, sentinel)
	}
	if !strings.Contains(err.Error(), file) {
		t.Fatalf("error %q does not name %s", err, file)
	}
}

// smallInventory is a small valid inventory file.
func smallInventory(t *testing.T) []byte {
	b, err := Encode(KindInventory, &pb.Inventory{FormatVersion: 1, Arch: "amd64", RootPid: 42})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeTruncated(t *testing.T) {
	b := smallInventory(t)
	for n := 0; n < len(b); n++ {
		err := Decode(InventoryFile, b[:n], KindInventory, &pb.Inventory{})
		wantErr(t, err, ErrTruncated, InventoryFile)
		if n < HeaderSize && !strings.Contains(err.Error(), "header") {
			t.Errorf("%d bytes: %q does not say the header is short", n, err)
		}
		if n >= HeaderSize && !strings.Contains(err.Error(), "payload") {
			t.Errorf("%d bytes: %q does not say the payload is short", n, err)
		}
		// The same through Load.
		fsys := sampleFS(t, sampleSet())
		fsys[InventoryFile] = &fstest.MapFile{Data: b[:n]}
		_, err = Load(fsys)
		wantErr(t, err, ErrTruncated, InventoryFile)
	}
}

func TestDecodeFlippedPayloadByte(t *testing.T) {
	b := smallInventory(t)
	for i := HeaderSize; i < len(b); i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x40
		err := Decode(InventoryFile, c, KindInventory, &pb.Inventory{})
		wantErr(t, err, ErrCorrupt, InventoryFile)
		if !strings.Contains(err.Error(), "checksum") {
			t.Errorf("byte %d flipped: %q does not mention the checksum", i, err)
		}
	}
}

func TestDecodeFlippedHeaderByte(t *testing.T) {
	b := smallInventory(t)
	for i := 0; i < HeaderSize; i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x01
		err := Decode(InventoryFile, c, KindInventory, &pb.Inventory{})
		var want error
		switch {
		case i < 8:
			want = ErrBadMagic
		case i == 12: // version 1 → 0
			want = ErrCorrupt
		case i < 16 && i >= 12:
			want = ErrNewerVersion
		case i >= 16 && i < 24: // length 1 bit larger: truncated, or smaller: trailing bytes
			if l := binary.LittleEndian.Uint64(c[16:24]); l > MaxMessageSize {
				want = ErrCorrupt
			} else if l > uint64(len(c)-HeaderSize) {
				want = ErrTruncated
			} else {
				want = ErrCorrupt
			}
		default: // kind, crc, reserved
			want = ErrCorrupt
		}
		wantErr(t, err, want, InventoryFile)
	}
}

func TestDecodeBadMagic(t *testing.T) {
	b := smallInventory(t)
	copy(b, "CRIUIMG\x00")
	wantErr(t, Decode(InventoryFile, b, KindInventory, &pb.Inventory{}), ErrBadMagic, InventoryFile)
	// A short file with a wrong magic is not a lazycr file either.
	wantErr(t, Decode(InventoryFile, b[:10], KindInventory, &pb.Inventory{}), ErrBadMagic, InventoryFile)
	wantErr(t, Decode(InventoryFile, []byte("{\"json\": true}\n"), KindInventory, &pb.Inventory{}), ErrBadMagic, InventoryFile)
}

// forge frames payload with an arbitrary header and a valid checksum.
func forge(kind Kind, version uint32, payload []byte) []byte {
	h := Header{Kind: kind, Version: version, Length: uint64(len(payload)), CRC: crcOf(payload)}
	return append(h.MarshalBinary(), payload...)
}

func TestDecodeNewerVersion(t *testing.T) {
	payload, err := proto.Marshal(&pb.Inventory{FormatVersion: 2, LazycrVersion: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	b := forge(KindInventory, FormatVersion+1, payload)
	err = Decode(InventoryFile, b, KindInventory, &pb.Inventory{})
	wantErr(t, err, ErrNewerVersion, InventoryFile)
	if !strings.Contains(err.Error(), "version 2") {
		t.Errorf("%q does not give the file's version", err)
	}

	fsys := sampleFS(t, sampleSet())
	fsys[TreeFile].Data = forge(KindTree, FormatVersion+1, fsys[TreeFile].Data[HeaderSize:])
	_, err = Load(fsys)
	wantErr(t, err, ErrNewerVersion, TreeFile)

	// A version-1 frame whose inventory claims a newer format.
	fsys = sampleFS(t, sampleSet())
	fsys[InventoryFile].Data = forge(KindInventory, FormatVersion, payload)
	_, err = Load(fsys)
	wantErr(t, err, ErrNewerVersion, InventoryFile)
}

func TestDecodeWrongKind(t *testing.T) {
	s := sampleSet()
	b, err := Encode(KindTree, s.Tree)
	if err != nil {
		t.Fatal(err)
	}
	err = Decode(InventoryFile, b, KindInventory, &pb.Inventory{})
	wantErr(t, err, ErrCorrupt, InventoryFile)
	if !strings.Contains(err.Error(), `"TREE"`) {
		t.Errorf("%q does not say what the file holds", err)
	}
	// Through Load: an fd table where the memory map should be.
	fsys := sampleFS(t, s)
	fsys[MemoryFile(rootPid)] = fsys[FdsFile(rootPid)]
	_, err = Load(fsys)
	wantErr(t, err, ErrCorrupt, MemoryFile(rootPid))
	// A pages file where a message should be, and the reverse.
	fsys = sampleFS(t, s)
	fsys[FdsFile(childPid)] = fsys[PagesFile(rootPid)]
	_, err = Load(fsys)
	wantErr(t, err, ErrCorrupt, FdsFile(childPid))
	fsys = sampleFS(t, s)
	fsys[PagesFile(rootPid)] = fsys[TreeFile]
	_, err = Load(fsys)
	wantErr(t, err, ErrCorrupt, PagesFile(rootPid))
}

func TestDecodeTrailingBytes(t *testing.T) {
	b := append(smallInventory(t), 0)
	wantErr(t, Decode(InventoryFile, b, KindInventory, &pb.Inventory{}), ErrCorrupt, InventoryFile)
}

func TestDecodeUndecodablePayload(t *testing.T) {
	// Field 2 (lazycr_version) as a string holding invalid UTF-8.
	b := forge(KindInventory, FormatVersion, []byte{0x12, 0x02, 0xff, 0xfe})
	wantErr(t, Decode(InventoryFile, b, KindInventory, &pb.Inventory{}), ErrCorrupt, InventoryFile)
	// A length running past the end.
	b = forge(KindInventory, FormatVersion, []byte{0x12, 0x7f, 'a'})
	wantErr(t, Decode(InventoryFile, b, KindInventory, &pb.Inventory{}), ErrCorrupt, InventoryFile)
}

func TestDecodeOversizeLength(t *testing.T) {
	h := Header{Kind: KindInventory, Version: FormatVersion, Length: MaxMessageSize + 1}
	wantErr(t, Decode(InventoryFile, h.MarshalBinary(), KindInventory, &pb.Inventory{}), ErrCorrupt, InventoryFile)
	h.Length = ^uint64(0)
	wantErr(t, Decode(InventoryFile, h.MarshalBinary(), KindInventory, &pb.Inventory{}), ErrCorrupt, InventoryFile)
}

func TestLoadMissingFile(t *testing.T) {
	for _, name := range []string{InventoryFile, TreeFile, MemoryFile(rootPid), FdsFile(rootPid), MemoryFile(childPid), FdsFile(childPid), PagesFile(rootPid)} {
		t.Run(name, func(t *testing.T) {
			fsys := sampleFS(t, sampleSet())
			delete(fsys, name)
			_, err := Load(fsys)
			wantErr(t, err, fs.ErrNotExist, name)
		})
	}
	// A process without page data needs no pages file (the child has none).
	if _, ok := sampleFS(t, sampleSet())[PagesFile(childPid)]; ok {
		t.Fatal("the sample child has a pages file")
	}
	// LoadDir names the directory.
	dir := filepath.Join(t.TempDir(), "nothing-here")
	if _, err := LoadDir(dir); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) {
		t.Errorf("LoadDir of a missing directory: %v", err)
	}
	dir = t.TempDir()
	if _, err := LoadDir(dir); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), InventoryFile) {
		t.Errorf("LoadDir of an empty directory: %v", err)
	}
	writeFile(t, dir, "f", nil)
	if _, err := LoadDir(filepath.Join(dir, "f")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("LoadDir of a file: %v", err)
	}
}

func TestPagesFileSize(t *testing.T) {
	s := sampleSet()
	mm := s.Memory[rootPid]
	name := PagesFile(rootPid)
	good := pagesFile(pageData(mm))

	for _, tc := range []struct {
		what string
		data []byte
		want error
	}{
		{"shorter than its header says", good[:len(good)-1], ErrTruncated},
		{"a page short", good[:len(good)-PageSize], ErrTruncated},
		{"header only", good[:HeaderSize], ErrTruncated},
		{"half a header", good[:HeaderSize/2], ErrTruncated},
		{"empty", nil, ErrTruncated},
		{"longer than its header says", append(append([]byte(nil), good...), 0), ErrCorrupt},
		{"not matching pages_bytes (one page more)", pagesFile(append(pageData(mm), pageFill(0)...)), ErrInvalid},
		{"not matching pages_bytes (one page less)", pagesFile(pageData(mm)[PageSize:]), ErrInvalid},
		{"unfinished (zero header)", append(make([]byte, HeaderSize), pageData(mm)...), ErrBadMagic},
	} {
		t.Run(tc.what, func(t *testing.T) {
			fsys := sampleFS(t, s)
			fsys[name] = &fstest.MapFile{Data: tc.data}
			_, err := Load(fsys)
			wantErr(t, err, tc.want, name)

			dir := t.TempDir()
			saveSample(t, dir, s)
			writeFile(t, dir, name, tc.data)
			_, err = LoadDir(dir)
			wantErr(t, err, tc.want, name)
			if tc.want != ErrInvalid {
				r, err := OpenPages(dir, rootPid)
				if err == nil {
					r.Close()
				}
				wantErr(t, err, tc.want, name)
			}
		})
	}

	// A flipped page byte passes the size checks but not Verify.
	dir := t.TempDir()
	saveSample(t, dir, s)
	b := readFile(t, dir, name)
	b[HeaderSize+5*PageSize+17] ^= 1
	writeFile(t, dir, name, b)
	if _, err := LoadDir(dir); err != nil {
		t.Fatal(err)
	}
	r, err := OpenPages(dir, rootPid)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	wantErr(t, r.Verify(), ErrCorrupt, name)
}

func TestValidateRefuses(t *testing.T) {
	mmFile, fdsFile := MemoryFile(rootPid), FdsFile(rootPid)
	for _, tc := range []struct {
		what   string
		file   string
		want   error
		breaks func(s *Set)
	}{
		{"overlapping VMAs", mmFile, ErrInvalid, func(s *Set) {
			v := s.Memory[rootPid].Vmas
			v[1].Start -= PageSize
			v[1].Pages = nil
		}},
		{"VMAs out of order", mmFile, ErrInvalid, func(s *Set) {
			v := s.Memory[rootPid].Vmas
			v[0], v[1] = v[1], v[0]
		}},
		{"unaligned VMA start", MemoryFile(childPid), ErrInvalid, func(s *Set) { s.Memory[childPid].Vmas[0].Start += 8 }},
		{"unaligned VMA end", MemoryFile(childPid), ErrInvalid, func(s *Set) { s.Memory[childPid].Vmas[0].End += 1 }},
		{"empty VMA", mmFile, ErrInvalid, func(s *Set) { v := s.Memory[rootPid].Vmas[3]; v.End = v.Start; v.Pages = nil }},
		{"runs leave a gap", mmFile, ErrInvalid, func(s *Set) { s.Memory[rootPid].Vmas[2].Pages[1].Addr += PageSize }},
		{"runs stop short of the end", MemoryFile(childPid), ErrInvalid, func(s *Set) {
			p := s.Memory[childPid].Vmas[0].Pages
			s.Memory[childPid].Vmas[0].Pages = p[:len(p)-1]
		}},
		{"run runs past the VMA", MemoryFile(childPid), ErrInvalid, func(s *Set) { s.Memory[childPid].Vmas[0].Pages[1].Npages++ }},
		{"run of zero pages", mmFile, ErrInvalid, func(s *Set) {
			v := s.Memory[rootPid].Vmas[0]
			v.Pages = append([]*pb.PageRun{{Addr: v.Start, Npages: 0, State: zero}}, v.Pages...)
		}},
		{"run with a huge page count", mmFile, ErrInvalid, func(s *Set) { s.Memory[rootPid].Vmas[0].Pages[0].Npages = 1 << 62 }},
		{"run with an unknown state", mmFile, ErrInvalid, func(s *Set) { s.Memory[rootPid].Vmas[0].Pages[0].State = 99 }},
		{"run with no state", mmFile, ErrInvalid, func(s *Set) { s.Memory[rootPid].Vmas[0].Pages[0].State = 0 }},
		{"eager run outside the pages file", mmFile, ErrInvalid, func(s *Set) {
			r := eagerRuns(s.Memory[rootPid])
			r[len(r)-1].Offset += PageSize
		}},
		{"eager run at an offset that wraps", mmFile, ErrInvalid, func(s *Set) { eagerRuns(s.Memory[rootPid])[0].Offset = ^uint64(0) &^ (PageSize - 1) }},
		{"unaligned eager offset", mmFile, ErrInvalid, func(s *Set) { eagerRuns(s.Memory[rootPid])[1].Offset++ }},
		{"overlapping eager runs", mmFile, ErrInvalid, func(s *Set) {
			r := eagerRuns(s.Memory[rootPid])
			r[1].Offset = r[0].Offset // both at 0; pages_bytes still adds up
		}},
		{"pages_bytes larger than the eager runs", mmFile, ErrInvalid, func(s *Set) { s.Memory[rootPid].PagesBytes += PageSize }},
		{"process without threads", TreeFile, ErrInvalid, func(s *Set) { s.Tree.Processes[1].Threads = nil }},
		{"thread without registers", TreeFile, ErrInvalid, func(s *Set) { s.Tree.Processes[0].Threads[1].Regs = nil }},
		{"duplicate pid", TreeFile, ErrInvalid, func(s *Set) { s.Tree.Processes[1].Pid = rootPid }},
		{"pid 0", TreeFile, ErrInvalid, func(s *Set) { s.Tree.Processes[1].Pid = 0 }},
		{"no process", TreeFile, ErrInvalid, func(s *Set) { s.Tree.Processes = nil }},
		{"fd out of order", fdsFile, ErrInvalid, func(s *Set) { f := s.Fds[rootPid].Fds; f[3], f[4] = f[4], f[3] }},
		{"fd listed twice", fdsFile, ErrInvalid, func(s *Set) { s.Fds[rootPid].Fds[4].Fd = 3 }},
		{"negative fd", fdsFile, ErrInvalid, func(s *Set) { s.Fds[rootPid].Fds[0].Fd = -1 }},
		{"fd without kind", fdsFile, ErrInvalid, func(s *Set) { s.Fds[rootPid].Fds[6].Kind = nil }},
		{"newer inventory format", InventoryFile, ErrNewerVersion, func(s *Set) { s.Inventory.FormatVersion = FormatVersion + 1 }},
	} {
		t.Run(tc.what, func(t *testing.T) {
			s := sampleSet()
			tc.breaks(s)
			wantErr(t, s.Validate(), tc.want, tc.file)
			if s.Tree != nil && len(s.Tree.Processes) > 1 && s.Tree.Processes[1].Pid == 0 {
				return // Load looks for mm-0.img, which Files does not write.
			}
			// Load refuses it too, once it went through the files.
			files, err := s.Files()
			if err != nil {
				t.Fatal(err)
			}
			fsys := sampleFS(t, sampleSet())
			for n, b := range files {
				fsys[n] = &fstest.MapFile{Data: b}
			}
			_, err = Load(fsys)
			wantErr(t, err, tc.want, tc.file)
			// And Save writes nothing.
			dir := filepath.Join(t.TempDir(), "img")
			if err := Save(dir, s); !errors.Is(err, tc.want) {
				t.Fatalf("Save: %v, want %v", err, tc.want)
			}
		})
	}

	// Sets with a missing part.
	s := sampleSet()
	delete(s.Memory, childPid)
	wantErr(t, s.Validate(), ErrInvalid, MemoryFile(childPid))
	s = sampleSet()
	delete(s.Fds, childPid)
	wantErr(t, s.Validate(), ErrInvalid, FdsFile(childPid))
	if err := (&Set{}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty set: %v, want ErrInvalid", err)
	}
}

func eagerRuns(mm *pb.MemoryMap) []*pb.PageRun {
	var out []*pb.PageRun
	for _, v := range mm.Vmas {
		for _, r := range v.Pages {
			if r.State == eager {
				out = append(out, r)
			}
		}
	}
	return out
}

func TestCountPages(t *testing.T) {
	mm := sampleMemory(rootPid)
	var total PageCounts
	for _, v := range mm.Vmas {
		c := CountPages(v)
		if c.Total() != (v.End-v.Start)/PageSize {
			t.Errorf("vma %#x-%#x: counted %d pages, has %d", v.Start, v.End, c.Total(), (v.End-v.Start)/PageSize)
		}
		total = total.Add(c)
	}
	// From the layout in sampleMemory.
	want := PageCounts{Zero: 1 + 4 + 4 + 28 + 4 + 2, Eager: 10, Lazy: 2 + 10 + 2, File: 1 + 1 + 1, Guard: 1}
	if total != want {
		t.Errorf("CountPages over the sample = %+v, want %+v", total, want)
	}
	if total.Eager*PageSize != mm.PagesBytes {
		t.Errorf("eager pages %d, pages_bytes %d", total.Eager, mm.PagesBytes)
	}
	if total.Populated() != want.Eager+want.Lazy+want.File {
		t.Errorf("Populated() = %d", total.Populated())
	}
}

func TestParseHeaderShortGarbage(t *testing.T) {
	// A file too short for a header is truncated only if what it has is a
	// prefix of the magic; anything else is not a lazycr file.
	for _, b := range []string{"", "L", "LAZY", "LAZYCR\x00", "LAZYCR\x00\x1aTREE"} {
		if _, err := ParseHeader([]byte(b), KindTree, MaxMessageSize); !errors.Is(err, ErrTruncated) {
			t.Errorf("ParseHeader(%q): %v, want ErrTruncated", b, err)
		}
	}
	for _, b := range []string{"{}", "\x7fELF", "LAZYCR\x01", "LAZYCR\x00\x1b"} {
		if _, err := ParseHeader([]byte(b), KindTree, MaxMessageSize); !errors.Is(err, ErrBadMagic) {
			t.Errorf("ParseHeader(%q): %v, want ErrBadMagic", b, err)
		}
	}
}
