package migrate

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteTraceMode: the fault trace reveals the ASLR layout, so it is
// written 0600, also over an existing world-readable file.
func TestWriteTraceMode(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh.json")
	old := filepath.Join(dir, "old.json")
	if err := os.WriteFile(old, []byte("old content that is longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	for _, p := range []string{fresh, old} {
		if err := writeTrace(p, func(w io.Writer) error { _, err := io.WriteString(w, "[]"); return err }); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, fi.Mode().Perm())
		}
		if b, _ := os.ReadFile(p); string(b) != "[]" {
			t.Errorf("%s: content %q, want []", p, b)
		}
	}
	if err := writeTrace(filepath.Join(dir, "no", "such", "dir"), func(io.Writer) error { return nil }); err == nil {
		t.Error("writeTrace into a missing directory: no error")
	}
}
