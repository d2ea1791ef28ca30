package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
)

// Committed seed corpora live in testdata/fuzz/<FuzzName>; TestFuzzSeeds
// regenerates them with LAZYCR_WRITE_FUZZ_SEEDS=1.

// isReadError reports whether err is one of the documented reader errors.
func isReadError(err error) bool {
	for _, s := range []error{ErrBadMagic, ErrNewerVersion, ErrTruncated, ErrCorrupt, ErrInvalid, fs.ErrNotExist} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// fuzzDecode decodes data as kind into a fresh message from newMsg. An error
// must be a documented one naming the file; a success must survive a
// re-encode, and check must not panic.
func fuzzDecode[M proto.Message](t *testing.T, data []byte, fix bool, kind Kind, newMsg func() M, check func(M)) {
	const name = "fuzz.img"
	if fix {
		data = fixFrame(data)
	}
	m := newMsg()
	err := Decode(name, data, kind, m)
	if err != nil {
		if !isReadError(err) || !strings.Contains(err.Error(), name) {
			t.Fatalf("undocumented error or file not named: %v", err)
		}
		return
	}
	check(m)
	b, err := Encode(kind, m)
	if err != nil {
		t.Fatalf("re-encode a decoded message: %v", err)
	}
	m2 := newMsg()
	if err := Decode(name, b, kind, m2); err != nil {
		t.Fatalf("decode a re-encoded message: %v", err)
	}
	if !proto.Equal(m, m2) {
		t.Fatalf("re-encoded message differs:\n%v\n%v", m, m2)
	}
}

// fixFrame rewrites the length and checksum of a framed file so that a
// mutated payload gets past the checksum and reaches the decoder.
func fixFrame(data []byte) []byte {
	if len(data) < HeaderSize {
		return data
	}
	b := append([]byte(nil), data...)
	binary.LittleEndian.PutUint64(b[16:24], uint64(len(b)-HeaderSize))
	binary.LittleEndian.PutUint32(b[24:28], crcOf(b[HeaderSize:]))
	return b
}

func addEncoded(f *testing.F, kind Kind, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := Encode(kind, m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
		f.Add(b, false)
	}
}

func FuzzDecodeInventory(f *testing.F) {
	addEncoded(f, KindInventory, sampleSet().Inventory, &pb.Inventory{})
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		fuzzDecode(t, data, fix, KindInventory, func() *pb.Inventory { return &pb.Inventory{} }, func(m *pb.Inventory) {
			s := &Set{Inventory: m, Tree: &pb.ProcessTree{}}
			_ = s.Validate()
		})
	})
}

func FuzzDecodeTree(f *testing.F) {
	addEncoded(f, KindTree, sampleSet().Tree, &pb.ProcessTree{Processes: []*pb.Process{process(7, 1, thread(7))}})
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		fuzzDecode(t, data, fix, KindTree, func() *pb.ProcessTree { return &pb.ProcessTree{} }, func(m *pb.ProcessTree) {
			s := &Set{Inventory: &pb.Inventory{}, Tree: m, Memory: map[uint32]*pb.MemoryMap{}, Fds: map[uint32]*pb.FdTable{}}
			for _, p := range m.Processes {
				s.Memory[p.Pid] = &pb.MemoryMap{}
				s.Fds[p.Pid] = &pb.FdTable{}
			}
			if err := s.Validate(); err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate: undocumented error %v", err)
			}
			_ = s.Root()
		})
	})
}

func FuzzDecodeMemory(f *testing.F) {
	addEncoded(f, KindMemory, sampleMemory(rootPid), smallMemory(childPid))
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		fuzzDecode(t, data, fix, KindMemory, func() *pb.MemoryMap { return &pb.MemoryMap{} }, func(m *pb.MemoryMap) {
			err := ValidateMemory(m)
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidateMemory: undocumented error %v", err)
			}
			var eagerPages uint64
			for _, v := range m.Vmas {
				c := CountPages(v)
				if err == nil && c.Total() != (v.End-v.Start)/PageSize {
					t.Fatalf("valid vma %#x-%#x: CountPages counts %d pages", v.Start, v.End, c.Total())
				}
				eagerPages += c.Eager
			}
			if err == nil && eagerPages*PageSize != m.PagesBytes {
				t.Fatalf("valid map: %d eager pages, pages_bytes %d", eagerPages, m.PagesBytes)
			}
		})
	})
}

func FuzzDecodeFds(f *testing.F) {
	addEncoded(f, KindFds, sampleFds(rootPid), &pb.FdTable{Pid: 1})
	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		fuzzDecode(t, data, fix, KindFds, func() *pb.FdTable { return &pb.FdTable{} }, func(m *pb.FdTable) {
			err := validateFds(m)
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("validateFds: undocumented error %v", err)
			}
			if err == nil {
				for i, fd := range m.Fds {
					if fd.Kind == nil || fd.Fd < 0 || (i > 0 && fd.Fd <= m.Fds[i-1].Fd) {
						t.Fatalf("valid table has fd %d (index %d) out of order or without kind", fd.Fd, i)
					}
				}
			}
		})
	})
}

var allKinds = []Kind{KindInventory, KindTree, KindMemory, KindFds, KindPages}

func FuzzParseHeader(f *testing.F) {
	for _, k := range allKinds {
		f.Add((Header{Kind: k, Version: FormatVersion, Length: 100, CRC: 0xdeadbeef}).MarshalBinary(), uint8(0), uint64(MaxMessageSize))
	}
	f.Add((Header{Kind: KindTree, Version: 2}).MarshalBinary(), uint8(1), uint64(0))
	f.Add([]byte("LAZYCR\x00\x1a"), uint8(0), uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, k uint8, max uint64) {
		want := allKinds[int(k)%len(allKinds)]
		h, err := ParseHeader(b, want, max)
		if err != nil {
			if !isReadError(err) {
				t.Fatalf("undocumented error %v", err)
			}
			if h != (Header{}) {
				t.Fatalf("error %v with a non-zero header %+v", err, h)
			}
			return
		}
		if len(b) < HeaderSize || h.Kind != want || h.Version == 0 || h.Version > FormatVersion || h.Length > max {
			t.Fatalf("accepted %+v from %d bytes (want kind %s, max %d)", h, len(b), want, max)
		}
		if !bytes.Equal(h.MarshalBinary(), b[:HeaderSize]) {
			t.Fatalf("MarshalBinary(ParseHeader(b)) != b[:32]")
		}
	})
}

// boundedReaderAt fails the test on any read outside [0, size), except the
// header read, which may ask for more than a short file holds.
type boundedReaderAt struct {
	t    *testing.T
	r    *bytes.Reader
	size int64
}

func (b boundedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 && len(p) == HeaderSize {
		return b.r.ReadAt(p, off)
	}
	if off < 0 || off+int64(len(p)) > b.size {
		b.t.Fatalf("read of %d bytes at %d outside the %d-byte file", len(p), off, b.size)
	}
	return b.r.ReadAt(p, off)
}

func FuzzPagesReader(f *testing.F) {
	data := pageData(sampleMemory(rootPid))[:3*PageSize]
	f.Add(pagesFile(data), uint64(0), uint32(PageSize))
	f.Add(pagesFile(data), uint64(2*PageSize), uint32(PageSize+1))
	f.Add(pagesFile(nil), uint64(0), uint32(0))
	f.Fuzz(func(t *testing.T, file []byte, off uint64, n uint32) {
		r, err := NewPagesReader("pages-1.img", boundedReaderAt{t, bytes.NewReader(file), int64(len(file))}, int64(len(file)))
		if err != nil {
			if !isReadError(err) || !strings.Contains(err.Error(), "pages-1.img") {
				t.Fatalf("undocumented error or file not named: %v", err)
			}
			return
		}
		if r.Size() != uint64(len(file)-HeaderSize) {
			t.Fatalf("Size() = %d for a %d-byte file", r.Size(), len(file))
		}
		n %= 1 << 20
		buf := make([]byte, n)
		err = r.ReadAt(buf, off)
		inside := off <= r.Size() && uint64(n) <= r.Size()-off
		switch {
		case inside && err != nil:
			t.Fatalf("ReadAt(%d bytes at %d) of %d page bytes: %v", n, off, r.Size(), err)
		case inside && !bytes.Equal(buf, file[HeaderSize+off:HeaderSize+off+uint64(n)]):
			t.Fatalf("ReadAt(%d bytes at %d) returned other bytes", n, off)
		case !inside && !errors.Is(err, ErrCorrupt):
			t.Fatalf("ReadAt(%d bytes at %d) of %d page bytes: %v, want ErrCorrupt", n, off, r.Size(), err)
		}
		err = r.Verify()
		h, _ := ParseHeader(file, KindPages, MaxPagesSize)
		if ok := crcOf(file[HeaderSize:]) == h.CRC; ok != (err == nil) {
			t.Fatalf("Verify: %v, checksum matches: %v", err, ok)
		}
	})
}

func FuzzLoad(f *testing.F) {
	add := func(s *Set, pid uint32) {
		fsys := sampleFS(f, s)
		get := func(n string) []byte {
			if m := fsys[n]; m != nil {
				return m.Data
			}
			return nil
		}
		f.Add(get(InventoryFile), get(TreeFile), get(MemoryFile(pid)), get(FdsFile(pid)), get(PagesFile(pid)), pid, true)
	}
	add(minimalSet(), 7)
	add(&Set{
		Inventory: &pb.Inventory{FormatVersion: 1},
		Tree:      &pb.ProcessTree{Processes: []*pb.Process{{Pid: 9, Threads: []*pb.Thread{{Tid: 9, Regs: &pb.Registers{}}}}}},
		Memory:    map[uint32]*pb.MemoryMap{9: smallMemory(9)},
		Fds:       map[uint32]*pb.FdTable{9: {Pid: 9}},
	}, 9)
	f.Fuzz(func(t *testing.T, inv, tree, mm, fds, pages []byte, pid uint32, fix bool) {
		if fix { // let mutated payloads past the checksums
			inv, tree, mm, fds = fixFrame(inv), fixFrame(tree), fixFrame(mm), fixFrame(fds)
		}
		fsys := fstest.MapFS{}
		for n, b := range map[string][]byte{InventoryFile: inv, TreeFile: tree, MemoryFile(pid): mm, FdsFile(pid): fds, PagesFile(pid): pages} {
			if b != nil {
				fsys[n] = &fstest.MapFile{Data: b}
			}
		}
		s, err := Load(fsys)
		if err != nil {
			if s != nil {
				t.Fatalf("Load returned a set with error %v", err)
			}
			if !isReadError(err) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Load returned a set that does not validate: %v", err)
		}
		// Writing the set out and loading it again gives the same set.
		files, err := s.Files()
		if err != nil {
			t.Fatal(err)
		}
		fsys2 := fstest.MapFS{}
		for n, b := range files {
			fsys2[n] = &fstest.MapFile{Data: b}
		}
		if m := fsys[PagesFile(pid)]; m != nil {
			fsys2[PagesFile(pid)] = m
		}
		s2, err := Load(fsys2)
		if err != nil {
			t.Fatalf("reload: %v", err)
		}
		assertSetEqual(t, s, s2)
	})
}

// minimalSet is a small valid set with one eager page, for fuzz seeds.
func minimalSet() *Set {
	const a = 0x7f2000000000
	mm := &pb.MemoryMap{Pid: 7, Vmas: []*pb.Vma{{Start: a, End: a + 3*PageSize, Prot: 3, Kind: pb.VmaKind_VMA_KIND_ANON,
		Pages: tile(a, 1, eager, 1, lazy, 1, zero)}}}
	assignOffsets(mm)
	return &Set{
		Inventory: &pb.Inventory{FormatVersion: 1, Arch: "amd64", RootPid: 7, PageSize: PageSize},
		Tree: &pb.ProcessTree{Processes: []*pb.Process{{Pid: 7, Comm: "m", Threads: []*pb.Thread{{Tid: 7,
			Regs: &pb.Registers{Rip: 0x401000, Rsp: a + 3*PageSize - 8}}}}}},
		Memory: map[uint32]*pb.MemoryMap{7: mm},
		Fds: map[uint32]*pb.FdTable{7: {Pid: 7, Fds: []*pb.Fd{{Fd: 0, Kind: &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: 1}}},
			{Fd: 3, Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Family: 2, Type: 2, LocalAddr: "127.0.0.1", LocalPort: 1}}}}}},
	}
}
