package uffd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

const childEnv = "LAZYCR_UFFD_TEST_CHILD"

// runChildIfRequested is the other process of TestGone: it creates a uffd
// and maps a page, prints "fd addr" and waits for stdin to close.
func runChildIfRequested() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		fmt.Println("userfaultfd:", errno)
		os.Exit(1)
	}
	mem, err := unix.Mmap(-1, 0, int(pageSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		fmt.Println("mmap:", err)
		os.Exit(1)
	}
	fmt.Printf("%d %d\n", r, addrOfTest(mem))
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// TestGone takes a uffd out of another process with pidfd_getfd (as
// restore does), registers and fills a page of that process, then checks
// that after the process exits a copy fails with ErrGone.
func TestGone(t *testing.T) {
	needRoot(t)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	var childFd int
	var addr uint64
	if _, err := fmt.Fscan(bufio.NewReader(stdout), &childFd, &addr); err != nil {
		t.Fatalf("read child's fd and address: %v", err)
	}
	pidfd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdGetfd(pidfd, childFd, 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatal(err)
	}
	f, err := FromFd(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := f.API(FeatureThreadID); err != nil {
		t.Fatal(err)
	}
	ioctls, err := f.Register(addr, pageSize, ModeMissing)
	if err != nil {
		t.Fatalf("register a range of pid %d from here: %v", cmd.Process.Pid, err)
	}
	if !ioctls.Has(kabi.UFFDIO_NR_COPY) {
		t.Fatalf("ioctls %s", ioctls)
	}
	if n, err := f.Copy(addr, make([]byte, pageSize), 0); err != nil || n != int(pageSize) {
		t.Fatalf("copy into pid %d: %d, %v", cmd.Process.Pid, n, err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	reaped = true
	_, err = f.Copy(addr, make([]byte, pageSize), 0)
	if !errors.Is(err, ErrGone) || !errors.Is(err, unix.ESRCH) {
		t.Errorf("copy after the process exited: %v, want ErrGone (ESRCH)", err)
	}
}
