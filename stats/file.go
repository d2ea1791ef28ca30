package stats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MaxSize bounds what Decode reads: a stats file is a few KiB.
const MaxSize = 1 << 20

// Writer writes one stats file atomically: Create makes a temporary file
// (mode 0600) next to the destination at once, so a path that cannot be
// written fails before the command did anything; Commit fills it and
// renames it over the destination, so a reader sees either no file or a
// whole one (rename(2)).
type Writer struct {
	path string
	tmp  *os.File // owned; nil once committed or aborted
}

// Create starts writing the stats file path.
func Create(path string) (*Writer, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("create stats file %s: is a directory", path)
	}
	// os.CreateTemp opens O_RDWR|O_CREATE|O_EXCL|O_CLOEXEC, mode 0600.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("create stats file %s: %w", path, err)
	}
	// 0600 whatever the umask or an older file said: fault counts and
	// timings of a process are as private as its image.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create stats file %s: %w", path, err)
	}
	return &Writer{path: path, tmp: f}, nil
}

// Path is the destination.
func (w *Writer) Path() string { return w.path }

// Commit writes f as one JSON object (and a newline) and renames the file
// into place. The temporary file is removed if that fails.
func (w *Writer) Commit(f *File) error {
	if w.tmp == nil {
		return fmt.Errorf("write stats file %s: %w", w.path, os.ErrClosed)
	}
	tmp := w.tmp
	w.tmp = nil
	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		b = append(b, '\n')
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), w.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write stats file %s: %w", w.path, err)
	}
	return nil
}

// Abort removes the temporary file; nothing is written. It does nothing
// after Commit.
func (w *Writer) Abort() {
	if w.tmp == nil {
		return
	}
	w.tmp.Close()
	os.Remove(w.tmp.Name())
	w.tmp = nil
}

// ErrSchema: the object is not a stats file of a version this package
// reads (unknown field, wrong version, trailing data).
var ErrSchema = errors.New("not a lazycr stats file")

// Decode reads one stats file of at most MaxSize bytes. Unknown fields
// and a Version other than this package's are refused.
func Decode(r io.Reader) (*File, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read stats file: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("read stats file: %w: larger than %d bytes", ErrSchema, MaxSize)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var f File
	if err := d.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode stats file: %w: %w", ErrSchema, err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decode stats file: %w: data after the object", ErrSchema)
	}
	if f.Version != Version {
		return nil, fmt.Errorf("decode stats file: %w: version %d, want %d", ErrSchema, f.Version, Version)
	}
	return &f, nil
}

// ReadFile decodes the stats file at path.
func ReadFile(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read stats file: %w", err)
	}
	defer fd.Close()
	f, err := Decode(fd)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}
