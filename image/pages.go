package image

import (
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// PagesWriter appends page data to a pages file and hands out the offset of
// each append. Close writes the header; until then the file is unusable, so a
// dump that fails midway never leaves a pages file that looks complete.
type PagesWriter struct {
	f    *os.File
	path string
	off  uint64
	crc  hash.Hash32
}

// CreatePages creates pid's pages file in dir.
func CreatePages(dir string, pid uint32) (*PagesWriter, error) {
	path := filepath.Join(dir, PagesFile(pid))
	// O_EXCL|O_NOFOLLOW: never through a link planted in the directory
	// (see writeFileAtomic).
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	// Placeholder header: zero magic until Close.
	if _, err := f.Write(make([]byte, HeaderSize)); err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &PagesWriter{f: f, path: path, crc: crc32.New(castagnoli)}, nil
}

// Append writes b (a whole number of pages) and returns its offset in the
// page data.
func (w *PagesWriter) Append(b []byte) (uint64, error) {
	if len(b)%PageSize != 0 {
		return 0, fmt.Errorf("write %s: %d bytes is not a whole number of pages", w.path, len(b))
	}
	off := w.off
	if _, err := w.f.Write(b); err != nil {
		return 0, fmt.Errorf("write %s at offset %d: %w", w.path, off, err)
	}
	w.crc.Write(b)
	w.off += uint64(len(b))
	return off, nil
}

// Sum is the CRC-32C of the page bytes written so far, the one Close puts
// in the header (MemoryMap.pages_crc32c records it).
func (w *PagesWriter) Sum() uint32 { return w.crc.Sum32() }

// PagesChecksum is the CRC-32C EncodePages puts in the header of data.
func PagesChecksum(data []byte) uint32 { return crc32.Checksum(data, castagnoli) }

// Size is the number of page bytes written so far.
func (w *PagesWriter) Size() uint64 { return w.off }

// Close writes the header, syncs and closes the file.
func (w *PagesWriter) Close() error {
	h := Header{Kind: KindPages, Version: FormatVersion, Length: w.off, CRC: w.crc.Sum32()}
	_, err := w.f.WriteAt(h.MarshalBinary(), 0)
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("finish %s: %w", w.path, err)
	}
	return nil
}

// Abort closes and removes the file.
func (w *PagesWriter) Abort() {
	w.f.Close()
	os.Remove(w.path)
}

// PagesReader reads page data by offset, bounds-checked.
type PagesReader struct {
	r    io.ReaderAt
	c    io.Closer
	name string
	h    Header
}

// OpenPages opens pid's pages file in dir and checks its header and size.
func OpenPages(dir string, pid uint32) (*PagesReader, error) {
	path := filepath.Join(dir, PagesFile(pid))
	// O_NONBLOCK: a FIFO put in its place must not block the open (a
	// regular file ignores the flag); it is then refused as not regular.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%w: not a regular file but %s", ErrCorrupt, fileKind(st.Mode()))
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	r, err := NewPagesReader(path, f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	r.c = f
	return r, nil
}

// NewPagesReader reads a pages file of the given total size from r. name is
// used in errors.
func NewPagesReader(name string, r io.ReaderAt, size int64) (*PagesReader, error) {
	hb := make([]byte, HeaderSize)
	n, err := r.ReadAt(hb, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	h, err := ParseHeader(hb[:n], KindPages, MaxPagesSize)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	data := uint64(size) - HeaderSize
	if data < h.Length {
		return nil, fmt.Errorf("read %s: %w: %d of %d page bytes", name, ErrTruncated, data, h.Length)
	}
	if data > h.Length {
		return nil, fmt.Errorf("read %s: %w: %d bytes after the page data", name, ErrCorrupt, data-h.Length)
	}
	return &PagesReader{r: r, name: name, h: h}, nil
}

// Size is the number of page bytes in the file.
func (r *PagesReader) Size() uint64 { return r.h.Length }

// ReadAt fills b from page-data offset off; the whole range must lie inside
// the page data.
func (r *PagesReader) ReadAt(b []byte, off uint64) error {
	end := off + uint64(len(b))
	if end < off || end > r.h.Length {
		return fmt.Errorf("read %s: %w: %d bytes at offset %d beyond the %d page bytes", r.name, ErrCorrupt, len(b), off, r.h.Length)
	}
	// io.ReaderAt may return io.EOF with a full read that reaches the end.
	if n, err := r.r.ReadAt(b, int64(off)+HeaderSize); err != nil && !(n == len(b) && errors.Is(err, io.EOF)) {
		return fmt.Errorf("read %s at offset %d: %w", r.name, off, err)
	}
	return nil
}

// Verify reads the whole page data and checks its checksum.
func (r *PagesReader) Verify() error {
	c := crc32.New(castagnoli)
	buf := make([]byte, 1<<20)
	for off := uint64(0); off < r.h.Length; {
		n := min(uint64(len(buf)), r.h.Length-off)
		if err := r.ReadAt(buf[:n], off); err != nil {
			return err
		}
		c.Write(buf[:n])
		off += n
	}
	if got := c.Sum32(); got != r.h.CRC {
		return fmt.Errorf("read %s: %w: checksum %08x, header says %08x", r.name, ErrCorrupt, got, r.h.CRC)
	}
	return nil
}

// Close closes the underlying file, if OpenPages opened it.
func (r *PagesReader) Close() error {
	if r.c != nil {
		return r.c.Close()
	}
	return nil
}

// EncodePages frames page data as a whole pages file in memory (what
// CreatePages, Append and Close would write to disk).
func EncodePages(data []byte) []byte {
	h := Header{Kind: KindPages, Version: FormatVersion, Length: uint64(len(data)), CRC: crc32.Checksum(data, castagnoli)}
	return append(h.MarshalBinary(), data...)
}

// NewPagesHash returns the checksum a pages file's header carries, to be
// fed the page data in order (for a pages file streamed, never held whole:
// see PagesHeader).
func NewPagesHash() hash.Hash32 { return crc32.New(castagnoli) }

// PagesHeader is the header of a pages file holding length bytes of page
// data whose NewPagesHash sum is crc: what EncodePages puts before the data.
func PagesHeader(length uint64, crc uint32) []byte {
	return Header{Kind: KindPages, Version: FormatVersion, Length: length, CRC: crc}.MarshalBinary()
}
