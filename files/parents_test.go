package files

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeTree is a set of existing directories for MakeParents.
type fakeTree struct {
	dirs map[string]bool
	ops  []string
	fail string // mkdir of this directory fails with EACCES
}

func (f *fakeTree) mkdir(d string) error {
	f.ops = append(f.ops, "mkdir "+d)
	if d == f.fail {
		return unix.EACCES
	}
	if f.dirs[d] {
		return unix.EEXIST
	}
	f.dirs[d] = true
	return nil
}

func (f *fakeTree) rmdir(d string) error {
	f.ops = append(f.ops, "rmdir "+d)
	delete(f.dirs, d)
	return nil
}

func TestMakeParents(t *testing.T) {
	f := &fakeTree{dirs: map[string]bool{"/tmp": true}}
	undo, err := MakeParents("/tmp/a/b/c", f.mkdir, f.rmdir)
	if err != nil {
		t.Fatal(err)
	}
	if !f.dirs["/tmp/a"] || !f.dirs["/tmp/a/b"] || f.dirs["/tmp/a/b/c"] {
		t.Fatalf("directories after MakeParents: %v", f.dirs)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	want := []string{"mkdir /tmp", "mkdir /tmp/a", "mkdir /tmp/a/b", "rmdir /tmp/a/b", "rmdir /tmp/a"}
	if !slices.Equal(f.ops, want) {
		t.Errorf("operations %q, want %q", f.ops, want)
	}
	if len(f.dirs) != 1 || !f.dirs["/tmp"] {
		t.Errorf("directories left: %v", f.dirs)
	}
}

func TestMakeParentsFailureUndoes(t *testing.T) {
	f := &fakeTree{dirs: map[string]bool{}, fail: "/x/y"}
	if _, err := MakeParents("/x/y/z/f", f.mkdir, f.rmdir); !errors.Is(err, unix.EACCES) {
		t.Fatalf("MakeParents: %v, want EACCES", err)
	}
	if len(f.dirs) != 0 {
		t.Errorf("directories left after a failure: %v", f.dirs)
	}
	if _, err := MakeParents("rel/f", f.mkdir, f.rmdir); err == nil {
		t.Error("a relative path was accepted")
	}
}
