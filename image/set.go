package image

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing/fstest"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
)

// File names inside an image set.
const (
	InventoryFile = "inventory.img"
	TreeFile      = "tree.img"
)

// MemoryFile is the name of pid's MemoryMap file.
func MemoryFile(pid uint32) string { return "mm-" + strconv.FormatUint(uint64(pid), 10) + ".img" }

// FdsFile is the name of pid's FdTable file.
func FdsFile(pid uint32) string { return "fds-" + strconv.FormatUint(uint64(pid), 10) + ".img" }

// PagesFile is the name of pid's page data file.
func PagesFile(pid uint32) string { return "pages-" + strconv.FormatUint(uint64(pid), 10) + ".img" }

// PageSize is the page size lazycr images are written with (x86-64).
const PageSize = 4096

// Set is a whole image set in memory, without the page data.
type Set struct {
	Inventory *pb.Inventory
	Tree      *pb.ProcessTree
	Memory    map[uint32]*pb.MemoryMap // by pid
	Fds       map[uint32]*pb.FdTable   // by pid
}

// Root returns the root process of the tree.
func (s *Set) Root() *pb.Process {
	if s.Tree == nil || len(s.Tree.Processes) == 0 {
		return nil
	}
	return s.Tree.Processes[0]
}

// Files encodes every protobuf file of the set, by name. Each file
// carries the inventory's set id (if it has one), which Load checks.
func (s *Set) Files() (map[string][]byte, error) {
	s.stampSetID()
	out := map[string][]byte{}
	add := func(name string, kind Kind, m proto.Message) error {
		b, err := Encode(kind, m)
		if err != nil {
			return fmt.Errorf("encode %s: %w", name, err)
		}
		out[name] = b
		return nil
	}
	if err := add(InventoryFile, KindInventory, s.Inventory); err != nil {
		return nil, err
	}
	if err := add(TreeFile, KindTree, s.Tree); err != nil {
		return nil, err
	}
	for pid, mm := range s.Memory {
		if err := add(MemoryFile(pid), KindMemory, mm); err != nil {
			return nil, err
		}
	}
	for pid, fds := range s.Fds {
		if err := add(FdsFile(pid), KindFds, fds); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// NewSetID makes the random id a dump gives its image set
// (Inventory.SetId): Files writes it into every file of the set, and Load
// refuses a file whose id differs, one of another dump.
func NewSetID() ([]byte, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("make an image set id: %w", err)
	}
	return b, nil
}

// stampSetID copies the inventory's set id into every other file's message.
func (s *Set) stampSetID() {
	if s.Inventory == nil || len(s.Inventory.SetId) == 0 {
		return
	}
	id := s.Inventory.SetId
	if s.Tree != nil {
		s.Tree.SetId = id
	}
	for _, mm := range s.Memory {
		mm.SetId = id
	}
	for _, fds := range s.Fds {
		fds.SetId = id
	}
}

// checkSetID refuses a set whose files were written by different dumps
// (a file copied over from another dump of the same process): their set
// ids differ from the inventory's. An inventory without one (an older
// image) is not checked.
func (s *Set) checkSetID() error {
	id := s.Inventory.SetId
	if len(id) == 0 {
		return nil
	}
	check := func(name string, got []byte) error {
		if !bytes.Equal(got, id) {
			return fmt.Errorf("%s: %w: it is from another dump than %s (set id %x, %s has %x): do not mix the files of two dumps", name, ErrInvalid, InventoryFile, got, InventoryFile, id)
		}
		return nil
	}
	if err := check(TreeFile, s.Tree.SetId); err != nil {
		return err
	}
	for _, p := range s.Tree.Processes {
		if err := check(MemoryFile(p.Pid), s.Memory[p.Pid].GetSetId()); err != nil {
			return err
		}
		if err := check(FdsFile(p.Pid), s.Fds[p.Pid].GetSetId()); err != nil {
			return err
		}
	}
	return nil
}

// Save validates s and writes its protobuf files into dir (created if
// missing). Each file is written to a temporary name and renamed, so a reader
// never sees half a file. Page files are written separately with
// [CreatePages].
func Save(dir string, s *Set) error {
	if err := s.Validate(); err != nil {
		return err
	}
	files, err := s.Files()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create image directory: %w", err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := writeFileAtomic(filepath.Join(dir, n), files[n]); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	// O_EXCL|O_NOFOLLOW: never through a link or into a file someone else
	// put there (a symbolic link planted in the directory would otherwise
	// make lazycr, as root, overwrite what it points to).
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// LoadDir is Load(os.DirFS(dir)) with dir in the error messages.
func LoadDir(dir string) (*Set, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("open image directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("open image directory %s: not a directory", dir)
	}
	s, err := Load(os.DirFS(dir))
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", dir, err)
	}
	return s, nil
}

// LoadFiles is Load over files held in memory, by name (an image set
// received over the page server connection).
func LoadFiles(files map[string][]byte) (*Set, error) {
	fsys := fstest.MapFS{}
	for name, b := range files {
		fsys[name] = &fstest.MapFile{Data: b, Mode: 0o600}
	}
	return Load(fsys)
}

// Load reads and validates every protobuf file of an image set, and checks
// that each process's pages file exists with the size its memory map says.
func Load(fsys fs.FS) (*Set, error) {
	s := &Set{Inventory: &pb.Inventory{}, Tree: &pb.ProcessTree{}, Memory: map[uint32]*pb.MemoryMap{}, Fds: map[uint32]*pb.FdTable{}}
	if err := readMessage(fsys, InventoryFile, KindInventory, s.Inventory); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("not an image set (no %s): %w", InventoryFile, err)
		}
		return nil, err
	}
	if err := readMessage(fsys, TreeFile, KindTree, s.Tree); err != nil {
		return nil, err
	}
	for _, p := range s.Tree.Processes {
		mm := &pb.MemoryMap{}
		if err := readMessage(fsys, MemoryFile(p.Pid), KindMemory, mm); err != nil {
			return nil, err
		}
		s.Memory[p.Pid] = mm
		fds := &pb.FdTable{}
		if err := readMessage(fsys, FdsFile(p.Pid), KindFds, fds); err != nil {
			return nil, err
		}
		s.Fds[p.Pid] = fds
	}
	if err := s.checkSetID(); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	for _, p := range s.Tree.Processes {
		if err := checkPagesFile(fsys, p.Pid, s.Memory[p.Pid]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// checkRegular refuses an image file that is not a regular file (a FIFO,
// whose open would block restore for good, a device, a link to either).
func checkRegular(fsys fs.FS, name string) error {
	st, err := fs.Stat(fsys, name)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file but %s", ErrCorrupt, fileKind(st.Mode()))
	}
	return nil
}

// fileKind names the type of a file that is not regular.
func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "type " + m.Type().String()
}

func readMessage(fsys fs.FS, name string, kind Kind, m proto.Message) error {
	if err := checkRegular(fsys, name); err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	data, err := readAllLimited(f, HeaderSize+MaxMessageSize)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	return Decode(name, data, kind, m)
}

func checkPagesFile(fsys fs.FS, pid uint32, mm *pb.MemoryMap) error {
	want := mm.PagesBytes
	name := PagesFile(pid)
	if err := checkRegular(fsys, name); err != nil {
		if errors.Is(err, fs.ErrNotExist) && want == 0 {
			return nil
		}
		return fmt.Errorf("read %s: %w", name, err)
	}
	f, err := fsys.Open(name)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	defer f.Close()
	hb := make([]byte, HeaderSize)
	n, err := io.ReadFull(f, hb)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read %s: %w", name, err)
	}
	h, err := ParseHeader(hb[:n], KindPages, MaxPagesSize)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	size := uint64(st.Size()) - HeaderSize
	if size < h.Length {
		return fmt.Errorf("read %s: %w: %d of %d page bytes", name, ErrTruncated, size, h.Length)
	}
	if size > h.Length {
		return fmt.Errorf("read %s: %w: %d bytes after the page data", name, ErrCorrupt, size-h.Length)
	}
	if h.Length != want {
		return fmt.Errorf("read %s: %w: holds %d page bytes, %s says %d", name, ErrInvalid, h.Length, MemoryFile(pid), want)
	}
	if mm.PagesCrc32C != nil && h.CRC != mm.GetPagesCrc32C() {
		return fmt.Errorf("read %s: %w: it is from another dump than %s (page data CRC %#08x, %s says %#08x): do not mix the files of two dumps", name, ErrInvalid, MemoryFile(pid), h.CRC, MemoryFile(pid), mm.GetPagesCrc32C())
	}
	return nil
}
