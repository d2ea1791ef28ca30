package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// TestRestoreLivePipeForeignBoot: as TestRestoreReconnectsLivePipe, but the
// image says it was dumped on another boot: the pipe inode number and the
// holder's pid mean nothing there, so restore must not join whatever
// process holds a pipe with that number. The restored program gets a fresh
// pipe, and restore says why it did not reconnect.
func TestRestoreLivePipeForeignBoot(t *testing.T) {
	t.Parallel()
	bin := buildC(t, "memcheck")
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(r.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	ours := fmt.Sprintf("pipe:[%d]", st.Ino)
	cmd := exec.Command(bin)
	cmd.Stdout = w
	p := startCmd(t, cmd)
	w.Close()
	lines := readLines(r)
	if first := <-lines; !strings.HasPrefix(first, "{") {
		t.Fatalf("first line %q is not the report", first)
	}
	var last uint64
	for last < 2 {
		last = nextTick(t, lines, "check", last)
	}
	dir := dumpKill(t, p)
	for l := range lines { // EOF: the only writer is gone
		last = checkTickLine(t, l, "check", last)
	}

	// The image now says it comes from another boot.
	path := filepath.Join(dir, image.FdsFile(uint32(p.pid)))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fds := &pb.FdTable{}
	if err := image.Decode(path, b, image.KindFds, fds); err != nil {
		t.Fatal(err)
	}
	if fds.BootId == "" {
		t.Fatal("the dump recorded no boot id")
	}
	var holders int
	for _, f := range fds.Fds {
		if f.Fd == 1 {
			holders = len(f.GetPipe().GetHolders())
		}
	}
	if holders == 0 {
		t.Fatalf("fd 1 of the image records no holder of its pipe: %v", fds.Fds)
	}
	fds.BootId = "00000000-0000-4000-8000-000000000000"
	if b, err = image.Encode(image.KindFds, fds); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	restore := exec.Command(lazycrPath, "restore", "-D", dir)
	var out, errOut strings.Builder
	restore.Stdout, restore.Stderr = &out, &errOut
	if err := restore.Run(); err != nil {
		t.Fatalf("lazycr restore: %v\n%s", err, errOut.String())
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("restore printed %q, not a pid", out.String())
	}
	adopt(t, pid)
	if strings.Contains(errOut.String(), "reconnected to it") || !strings.Contains(errOut.String(), "another boot") {
		t.Errorf("restore does not say it left the pipe alone because of the boot id:\n%s", errOut.String())
	}
	// Not joined: the test's pipe has no writer left, so it reads EOF at
	// once (joined, it would block until the restored program's next tick).
	for l := range readLines(r) {
		t.Errorf("the test's pipe got %q from the restored program: joined to a process of a foreign boot (%s)", l, ours)
	}
}
