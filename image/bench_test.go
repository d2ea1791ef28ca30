package image

import (
	"os"
	"path/filepath"
	"testing"
)

const benchPagesSize = 64 << 20

// BenchmarkPagesWrite writes a 64 MiB pages file in 1 MiB appends,
// including the final header write and fsync.
func BenchmarkPagesWrite(b *testing.B) {
	dir := b.TempDir()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	b.ReportAllocs()
	b.SetBytes(benchPagesSize)
	for b.Loop() {
		w, err := CreatePages(dir, 1)
		if err != nil {
			b.Fatal(err)
		}
		for w.Size() < benchPagesSize {
			if _, err := w.Append(chunk); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
		os.Remove(filepath.Join(dir, PagesFile(1))) // CreatePages makes a new file
	}
}

// BenchmarkPagesRead reads a 64 MiB pages file back in 64 KiB ReadAt calls
// (the size of a fault-around window), then checks it with Verify.
func BenchmarkPagesRead(b *testing.B) {
	dir := b.TempDir()
	w, err := CreatePages(dir, 1)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 31)
	}
	for w.Size() < benchPagesSize {
		if _, err := w.Append(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	b.Run("ReadAt", func(b *testing.B) {
		r, err := OpenPages(dir, 1)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.ReportAllocs()
		b.SetBytes(benchPagesSize)
		for b.Loop() {
			for off := uint64(0); off < r.Size(); off += uint64(len(buf)) {
				if err := r.ReadAt(buf, off); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("Verify", func(b *testing.B) {
		r, err := OpenPages(dir, 1)
		if err != nil {
			b.Fatal(err)
		}
		defer r.Close()
		b.ReportAllocs()
		b.SetBytes(benchPagesSize)
		for b.Loop() {
			if err := r.Verify(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
