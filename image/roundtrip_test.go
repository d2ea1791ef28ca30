package image

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func TestEncodeDecodeEveryKind(t *testing.T) {
	s := sampleSet()
	for _, tc := range []struct {
		name string
		kind Kind
		msg  proto.Message
		into proto.Message
	}{
		{InventoryFile, KindInventory, s.Inventory, &pb.Inventory{}},
		{TreeFile, KindTree, s.Tree, &pb.ProcessTree{}},
		{MemoryFile(rootPid), KindMemory, s.Memory[rootPid], &pb.MemoryMap{}},
		{MemoryFile(childPid), KindMemory, s.Memory[childPid], &pb.MemoryMap{}},
		{FdsFile(rootPid), KindFds, s.Fds[rootPid], &pb.FdTable{}},
		{FdsFile(childPid), KindFds, s.Fds[childPid], &pb.FdTable{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Encode(tc.kind, tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			h, err := ParseHeader(b, tc.kind, MaxMessageSize)
			if err != nil {
				t.Fatal(err)
			}
			if h.Version != FormatVersion || h.Length != uint64(len(b)-HeaderSize) || h.Kind != tc.kind {
				t.Fatalf("header %+v for a %d-byte file", h, len(b))
			}
			if !bytes.Equal(h.MarshalBinary(), b[:HeaderSize]) {
				t.Fatal("MarshalBinary(ParseHeader(b)) differs from the header written")
			}
			if err := Decode(tc.name, b, tc.kind, tc.into); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(tc.msg, tc.into) {
				t.Fatalf("decoded message differs:\n got %v\nwant %v", tc.into, tc.msg)
			}
			// Deterministic: encoding the decoded message gives the same bytes.
			b2, err := Encode(tc.kind, tc.into)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatal("re-encoding the decoded message gives different bytes")
			}
		})
	}
}

// TestSampleCoversSchema makes sure the round trips above exercise every
// field of every message, every member of Fd.kind and every value of the
// enums: a field added to image.proto must be added to the sample.
func TestSampleCoversSchema(t *testing.T) {
	s := sampleSet()
	seen := map[protoreflect.FullName]bool{}
	enums := map[protoreflect.FullName]bool{}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			seen[fd.FullName()] = true
			switch {
			case fd.IsList():
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					if fd.Message() != nil {
						walk(l.Get(i).Message())
					} else if fd.Enum() != nil {
						enums[fd.Enum().Values().ByNumber(l.Get(i).Enum()).FullName()] = true
					}
				}
			case fd.Message() != nil:
				walk(v.Message())
			case fd.Enum() != nil:
				enums[fd.Enum().Values().ByNumber(v.Enum()).FullName()] = true
			}
			return true
		})
	}
	walk(s.Inventory.ProtoReflect())
	walk(s.Tree.ProtoReflect())
	for _, mm := range s.Memory {
		walk(mm.ProtoReflect())
	}
	for _, f := range s.Fds {
		walk(f.ProtoReflect())
	}
	// Enum zero values are never set on the wire; count them as seen.
	var missing []string
	file := (&pb.Inventory{}).ProtoReflect().Descriptor().ParentFile()
	for i := 0; i < file.Messages().Len(); i++ {
		md := file.Messages().Get(i)
		for j := 0; j < md.Fields().Len(); j++ {
			if f := md.Fields().Get(j); !seen[f.FullName()] && !zeroOnlyField[f.FullName()] {
				missing = append(missing, string(f.FullName()))
			}
		}
	}
	for i := 0; i < file.Enums().Len(); i++ {
		ed := file.Enums().Get(i)
		for j := 1; j < ed.Values().Len(); j++ {
			if v := ed.Values().Get(j); !enums[v.FullName()] {
				missing = append(missing, string(v.FullName()))
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the sample image set never sets: %q", missing)
	}
}

// zeroOnlyField lists fields whose realistic value in the sample is zero.
var zeroOnlyField = map[protoreflect.FullName]bool{
	"lazycr.image.v1.Process.personality":         true,
	"lazycr.image.v1.Rseq.flags":                  true,
	"lazycr.image.v1.Credentials.cap_inheritable": true,
	"lazycr.image.v1.PosixTimer.id":               true,
	"lazycr.image.v1.TimerFd.settime_flags":       true,
	"lazycr.image.v1.Device.pos":                  true,
	"lazycr.image.v1.ITimer.which":                true, // ITIMER_REAL
}

func TestSaveLoadDir(t *testing.T) {
	dir := t.TempDir()
	s := sampleSet()
	saveSample(t, dir, s)

	got, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	assertSetEqual(t, s, got)
	if got.Root().GetPid() != rootPid {
		t.Errorf("Root() = pid %d, want %d", got.Root().GetPid(), rootPid)
	}
	// No temporary files are left behind.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{FdsFile(rootPid), FdsFile(childPid), FdsFile(zombiePid), InventoryFile, MemoryFile(rootPid), MemoryFile(childPid), MemoryFile(zombiePid), PagesFile(rootPid), TreeFile}
	sort.Strings(want)
	if !equalStrings(names, want) {
		t.Errorf("image directory holds %q, want %q", names, want)
	}

	// Pages come back byte for byte, run by run.
	mm := got.Memory[rootPid]
	r, err := OpenPages(dir, rootPid)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Size() != mm.PagesBytes {
		t.Fatalf("pages Size() = %d, want %d", r.Size(), mm.PagesBytes)
	}
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	for _, v := range mm.Vmas {
		for _, run := range v.Pages {
			if run.State != eager {
				continue
			}
			for i := uint64(0); i < run.Npages; i++ {
				b := make([]byte, PageSize)
				if err := r.ReadAt(b, run.Offset+i*PageSize); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b, pageFill(run.Addr+i*PageSize)) {
					t.Fatalf("page %#x read back differs", run.Addr+i*PageSize)
				}
			}
		}
	}
	// Partial reads inside, and the exact end, are fine; one byte past is not.
	b := make([]byte, 100)
	if err := r.ReadAt(b, mm.PagesBytes-100); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadAt(b[:0], mm.PagesBytes); err != nil {
		t.Errorf("empty read at the end: %v", err)
	}
	if err := r.ReadAt(b, mm.PagesBytes-99); !errors.Is(err, ErrCorrupt) {
		t.Errorf("read past the end: %v, want ErrCorrupt", err)
	}
	if err := r.ReadAt(b, ^uint64(0)-10); !errors.Is(err, ErrCorrupt) {
		t.Errorf("read at an offset that wraps: %v, want ErrCorrupt", err)
	}
}

func TestLoadFS(t *testing.T) {
	s := sampleSet()
	got, err := Load(sampleFS(t, s))
	if err != nil {
		t.Fatal(err)
	}
	assertSetEqual(t, s, got)
}

func TestSaveRefusesInvalidSet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "img")
	s := sampleSet()
	s.Tree.Processes[0].Threads = nil
	if err := Save(dir, s); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Save of a set without threads: %v, want ErrInvalid", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Save of an invalid set created %s (%v)", dir, err)
	}
}

func TestPagesWriter(t *testing.T) {
	dir := t.TempDir()
	w, err := CreatePages(dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(make([]byte, 100)); err == nil {
		t.Error("Append of 100 bytes succeeded, want an error (not whole pages)")
	}
	if off, err := w.Append(pageFill(0x1000)); err != nil || off != 0 {
		t.Fatalf("Append = %d, %v", off, err)
	}
	// Until Close the file is not a valid pages file.
	if _, err := OpenPages(dir, 7); !errors.Is(err, ErrBadMagic) {
		t.Errorf("OpenPages of an unfinished pages file: %v, want ErrBadMagic", err)
	}
	if off, err := w.Append(append(pageFill(0x2000), pageFill(0x3000)...)); err != nil || off != PageSize {
		t.Fatalf("Append = %d, %v", off, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := OpenPages(dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Verify(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, PageSize)
	if err := r.ReadAt(b, 2*PageSize); err != nil || !bytes.Equal(b, pageFill(0x3000)) {
		t.Fatalf("ReadAt third page: %v", err)
	}

	// Abort removes the file.
	w, err = CreatePages(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(pageFill(0)); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, err := os.Stat(filepath.Join(dir, PagesFile(8))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Abort: %v, want the file gone", err)
	}

	// An empty pages file is valid.
	w, err = CreatePages(dir, 9)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r9, err := OpenPages(dir, 9)
	if err != nil {
		t.Fatal(err)
	}
	defer r9.Close()
	if err := r9.Verify(); err != nil || r9.Size() != 0 {
		t.Fatalf("empty pages file: size %d, %v", r9.Size(), err)
	}
}

// eofAtEnd is an io.ReaderAt that, as io.ReaderAt allows, returns io.EOF
// with a full read that reaches the end of the data.
type eofAtEnd struct{ b []byte }

func (r eofAtEnd) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(r.b)) {
		return 0, io.EOF
	}
	n := copy(p, r.b[off:])
	if off+int64(n) == int64(len(r.b)) {
		return n, io.EOF
	}
	return n, nil
}

func TestPagesReaderFullReadWithEOF(t *testing.T) {
	data := append(pageFill(0x1000), pageFill(0x2000)...)
	f := pagesFile(data)
	r, err := NewPagesReader("pages-1.img", eofAtEnd{f}, int64(len(f)))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(); err != nil {
		t.Fatalf("Verify over a reader that returns io.EOF at the end: %v", err)
	}
	b := make([]byte, PageSize)
	if err := r.ReadAt(b, PageSize); err != nil || !bytes.Equal(b, pageFill(0x2000)) {
		t.Fatalf("ReadAt of the last page: %v", err)
	}
}

func assertSetEqual(t *testing.T, want, got *Set) {
	t.Helper()
	if !proto.Equal(want.Inventory, got.Inventory) {
		t.Errorf("inventory differs:\n got %v\nwant %v", got.Inventory, want.Inventory)
	}
	if !proto.Equal(want.Tree, got.Tree) {
		t.Errorf("tree differs")
	}
	if len(got.Memory) != len(want.Memory) || len(got.Fds) != len(want.Fds) {
		t.Fatalf("got %d memory maps and %d fd tables, want %d and %d", len(got.Memory), len(got.Fds), len(want.Memory), len(want.Fds))
	}
	for pid, mm := range want.Memory {
		if !proto.Equal(mm, got.Memory[pid]) {
			t.Errorf("memory map of pid %d differs:\n got %v\nwant %v", pid, got.Memory[pid], mm)
		}
	}
	for pid, f := range want.Fds {
		if !proto.Equal(f, got.Fds[pid]) {
			t.Errorf("fd table of pid %d differs:\n got %v\nwant %v", pid, got.Fds[pid], f)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestWriteRefusesPlantedLinks (qa6 G8): a symbolic link planted in the
// image directory where a file is about to be written (its temporary name,
// or a pages file) is never followed: the write fails and the file the
// link names is untouched (lazycr, as root, overwrote it before).
func TestWriteRefusesPlantedLinks(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("ORIGINAL"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, InventoryFile+".tmp")); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(filepath.Join(dir, InventoryFile), []byte("image data")); err == nil {
		t.Error("writeFileAtomic wrote through a planted link")
	}
	if err := os.Symlink(victim, filepath.Join(dir, PagesFile(7))); err != nil {
		t.Fatal(err)
	}
	if w, err := CreatePages(dir, 7); err == nil {
		w.Abort()
		t.Error("CreatePages opened a planted link")
	}
	if b, _ := os.ReadFile(victim); string(b) != "ORIGINAL" {
		t.Errorf("the linked file now holds %q", b)
	}
}

// TestLoadRefusesMixedDumps (qa6 G1): the files of two dumps of the same
// process have the same names; one copied over from the other dump used to
// load silently (only the pages file's length was checked), so a restore
// ran registers of one dump on memory of the other. Every file now carries
// the inventory's set id and the memory map the pages file's CRC.
func TestLoadRefusesMixedDumps(t *testing.T) {
	save := func(dir string) *Set {
		s := sampleSet()
		id, err := NewSetID()
		if err != nil {
			t.Fatal(err)
		}
		s.Inventory.SetId = id
		for _, mm := range s.Memory {
			mm.PagesCrc32C = proto.Uint32(PagesChecksum(pageData(mm)))
		}
		saveSample(t, dir, s)
		return s
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	s := save(dirA)
	save(dirB)
	if _, err := LoadDir(dirA); err != nil {
		t.Fatalf("LoadDir of a whole dump: %v", err)
	}
	var pid uint32
	for p, mm := range s.Memory {
		if mm.PagesBytes > 0 {
			pid = p
		}
	}
	for _, name := range []string{TreeFile, MemoryFile(pid), FdsFile(pid)} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, dirA, dir)
			copyFile(t, filepath.Join(dirB, name), filepath.Join(dir, name))
			if _, err := LoadDir(dir); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "another dump") {
				t.Fatalf("LoadDir with %s of another dump = %v, want ErrInvalid naming another dump", name, err)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		// Pages of another dump: same length, a header CRC right for its
		// own data, other bytes.
		dir := t.TempDir()
		copyDir(t, dirA, dir)
		data := pageData(s.Memory[pid])
		data[0] ^= 0xff
		if err := os.WriteFile(filepath.Join(dir, PagesFile(pid)), EncodePages(data), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadDir(dir); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), PagesFile(pid)) {
			t.Fatalf("LoadDir with the pages of another dump = %v, want ErrInvalid naming %s", err, PagesFile(pid))
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		copyFile(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestLoadRefusesSpecialFiles (qa6 G14): an image file that is a FIFO (or a
// link to a device) is refused, naming it. A FIFO used to block restore
// in open(2) for good, deaf to SIGTERM (timeout(1) could not stop it).
func TestLoadRefusesSpecialFiles(t *testing.T) {
	src := t.TempDir()
	s := sampleSet()
	saveSample(t, src, s)
	var pid uint32
	for p, mm := range s.Memory {
		if mm.PagesBytes > 0 {
			pid = p
		}
	}
	for _, name := range []string{InventoryFile, TreeFile, MemoryFile(pid), PagesFile(pid)} {
		for _, kind := range []string{"fifo", "device"} {
			t.Run(name+"/"+kind, func(t *testing.T) {
				dir := t.TempDir()
				copyDir(t, src, dir)
				path := filepath.Join(dir, name)
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				var err error
				if kind == "fifo" {
					err = syscall.Mkfifo(path, 0o600)
				} else {
					err = os.Symlink("/dev/zero", path)
				}
				if err != nil {
					t.Fatal(err)
				}
				if _, err := LoadDir(dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
					t.Errorf("LoadDir = %v, want ErrCorrupt naming %s", err, name)
				}
				if name == PagesFile(pid) {
					if r, err := OpenPages(dir, pid); err == nil {
						r.Close()
						t.Error("OpenPages opened a special file")
					}
				}
			})
		}
	}
}
