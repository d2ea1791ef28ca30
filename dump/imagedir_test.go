package dump

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrepareDirOwner (qa6 G8): an image directory that another user owns
// or that group or others may write is refused: they could replace the
// image, or plant a symbolic link where dump is about to write a file
// (as root it then overwrote whatever the link named). A new name is made
// 0700; an empty directory of this user's that only it may write is used.
func TestPrepareDirOwner(t *testing.T) {
	base := t.TempDir()
	fresh := filepath.Join(base, "new", "img")
	made, err := prepareDir(fresh)
	if err != nil || !made {
		t.Fatalf("prepareDir(new name) = %v, %v; want made", made, err)
	}
	if st, err := os.Stat(fresh); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("new image directory: %v, %v; want mode 0700", st.Mode(), err)
	}
	own := filepath.Join(base, "own")
	if err := os.Mkdir(own, 0o700); err != nil {
		t.Fatal(err)
	}
	if made, err := prepareDir(own); err != nil || made {
		t.Errorf("prepareDir(own empty 0700) = %v, %v; want used as it is", made, err)
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o1777); err != nil {
		t.Fatal(err)
	}
	if _, err := prepareDir(open); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("prepareDir(mode 1777) = %v; want refused as writable by others", err)
	}
	if err := checkImageDirOwner(own, os.Geteuid()+1); err == nil || !strings.Contains(err.Error(), "belongs to uid") {
		t.Errorf("checkImageDirOwner(someone else's) = %v; want refused naming the owner", err)
	}
}
