package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"unsafe"
)

// TestDumpUnprivilegedRefused (QA F8): a user may ptrace their own process,
// so an unprivileged `lazycr dump` could checkpoint — and kill — a process
// that user could never restore (restore needs CAP_CHECKPOINT_RESTORE). The
// dump refuses up front, naming the capability and --leave-running; the
// process runs on and no image is left. --leave-running still works.
func TestDumpUnprivilegedRefused(t *testing.T) {
	t.Parallel()
	needRoot(t)
	bin := buildC(t, "memcheck")
	// Everything the unprivileged user runs must be reachable by it.
	pub := t.TempDir()
	for d := pub; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	buildLazycr()
	if lazycrErr != nil {
		t.Fatal(lazycrErr)
	}
	for _, src := range []string{bin, lazycrPath} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pub, filepath.Base(src)), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// A root-only semaphore set someone operated on: the unprivileged
	// dump cannot read it (semctl GETPID: EACCES) and must not fail on it,
	// since nobody could not have operated on it (CI failed so once, with
	// a set another test left).
	rootSem(t)
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	p := startWith(t, func(c *exec.Cmd) { c.SysProcAttr = nobody }, filepath.Join(pub, filepath.Base(bin)))
	var r struct {
		Pid   int    `json:"pid"`
		Heap  hexU64 `json:"heap"`
		Map   hexU64 `json:"map"`
		Stack hexU64 `json:"stack"`
	}
	waitReport(t, p, &r)
	requireProgress(t, p, "check")

	run := func(args ...string) (string, int) {
		var e bytes.Buffer
		cmd := exec.Command(filepath.Join(pub, "lazycr"), args...)
		cmd.SysProcAttr = nobody
		cmd.Stderr = &e
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return e.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return e.String(), 0
	}
	img := filepath.Join(pub, "img")
	errOut, code := run("dump", "--pid", strconv.Itoa(p.pid), "-D", img)
	requireExit1(t, "unprivileged dump", errOut, code, `CAP_CHECKPOINT_RESTORE`, `--leave-running`)
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("the refused dump left %s (%v)", img, err)
	}
	requireProgress(t, p, "check")

	errOut, code = run("dump", "--pid", strconv.Itoa(p.pid), "-D", img, "--leave-running")
	if code != 0 {
		t.Fatalf("unprivileged dump --leave-running: exit %d\n%s", code, errOut)
	}
	requireProgress(t, p, "check")
}

// rootSem makes a System V semaphore set only root may use, with one
// semop(2) done on it (so its otime is set), removed when t ends.
func rootSem(t *testing.T) {
	t.Helper()
	id, _, errno := syscall.Syscall(syscall.SYS_SEMGET, 0 /* IPC_PRIVATE */, 1, 0o600)
	if errno != 0 {
		t.Fatalf("semget: %v", errno)
	}
	t.Cleanup(func() { syscall.Syscall(syscall.SYS_SEMCTL, id, 0, 0 /* IPC_RMID */) })
	op := [3]int16{0, 1, 0} // struct sembuf: sem_num 0, sem_op +1, no flags
	if _, _, errno := syscall.Syscall(syscall.SYS_SEMOP, id, uintptr(unsafe.Pointer(&op)), 1); errno != 0 {
		t.Fatalf("semop: %v", errno)
	}
}
