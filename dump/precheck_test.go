package dump

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkCheckLocks measures the lock check (one fdinfo read per fd),
// which also runs while the process is frozen, on this process with 1000
// extra fds open.
func BenchmarkCheckLocks(b *testing.B) {
	var fds []int
	for range 1000 {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		fds = append(fds, fd)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	b.ReportAllocs()
	for b.Loop() {
		if err := checkLocks(os.Getpid()); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckLocks: this process holds no lock, then an flock on a file,
// which is restorable and passes, then a read lease on another file, which
// checkLocks refuses, naming it with its fd and path.
func TestCheckLocks(t *testing.T) {
	if err := checkLocks(os.Getpid()); err != nil {
		t.Fatalf("checkLocks without locks: %v", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "locked")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := checkLocks(os.Getpid()); err != nil {
		t.Fatalf("checkLocks with an flock held: %v, want nil (restored)", err)
	}
	leased := filepath.Join(t.TempDir(), "leased")
	if err := os.WriteFile(leased, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(leased) // a read lease needs no writer on the file (fcntl(2))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := unix.FcntlInt(g.Fd(), unix.F_SETLEASE, unix.F_RDLCK); err != nil {
		t.Fatalf("take a read lease on %s: %v", leased, err)
	}
	defer unix.FcntlInt(g.Fd(), unix.F_SETLEASE, unix.F_UNLCK)
	err = checkLocks(os.Getpid())
	if err == nil {
		t.Fatal("checkLocks with a lease held: no error")
	}
	want := fmt.Sprintf("fd %d (%s): READ lease", g.Fd(), leased)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), want) {
		t.Fatalf("checkLocks: %v, want ErrUnsupported naming %q", err, want)
	}
}

// TestPrecheckAncestor: lazycr's parent (here the test's: go test) is
// refused before anything touches it, saying it is an ancestor (QA3 R13:
// the refusal was a bare PTRACE_SEIZE EPERM on lazycr's own shell).
func TestPrecheckAncestor(t *testing.T) {
	err := precheck(os.Getppid())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "ancestor of this lazycr") {
		t.Errorf("precheck of the parent: %v, want a refusal naming it lazycr's ancestor", err)
	}
}

// TestPrecheckLazycr (qa6 G15): another lazycr dump or restore (a lazy
// source serving, a target, its keeper) is refused: its image held that
// run's session and its restored copy served the same process again.
// The test binary stands in for lazycr: the child runs it with a "dump"
// argument; run with another one it is an ordinary process.
func TestPrecheckLazycr(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		arg     string
		refused bool
	}{{"dump", true}, {"udpp", false}} {
		cmd := exec.Command(exe, "-test.run=^TestPrecheckLazycrChild$", tc.arg)
		cmd.Env = append(os.Environ(), "LAZYCR_PRECHECK_CHILD=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(out, buf); err != nil { // "ready": the child runs the test binary
			t.Fatal(err)
		}
		got := lazycrCommand(cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
		if tc.refused && got != tc.arg || !tc.refused && got != "" {
			t.Errorf("lazycrCommand of the test binary run with %q = %q", tc.arg, got)
		}
	}
}

// TestPrecheckLazycrChild is the child of TestPrecheckLazycr.
func TestPrecheckLazycrChild(t *testing.T) {
	if os.Getenv("LAZYCR_PRECHECK_CHILD") == "" {
		t.Skip("run by TestPrecheckLazycr")
	}
	os.Stdout.WriteString("ready")
	time.Sleep(time.Hour) // until killed; never a synchronisation
}
