package files

import (
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSameNetns: a socket of this network namespace matches this process
// and not a child in a fresh network namespace; the error names both.
func TestSameNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: clone(CLONE_NEWNET)")
	}
	here, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(here)
	if err := sameNetns(here, os.Getpid()); err != nil {
		t.Fatalf("socket of this namespace: %v", err)
	}
	child := exec.Command("sleep", "600")
	child.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNET}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	if err := sameNetns(here, child.Process.Pid); err == nil {
		t.Fatalf("a socket of this network namespace matched pid %d in a fresh one", child.Process.Pid)
	} else {
		t.Log(err)
	}
}
