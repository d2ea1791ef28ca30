package files

import (
	"os"
	"os/exec"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
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

// TestSockoptsPriorityAfterTOS: IP_TOS sets SO_PRIORITY from the TOS, so a
// socket whose program set the TOS and then its own priority (QA3: IP_TOS
// 0x10 then SO_PRIORITY 5) must get the priority after the TOS, or it
// comes back with the TOS's (6).
func TestSockoptsPriorityAfterTOS(t *testing.T) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	s := &pb.InetSocket{Family: unix.AF_INET, Type: unix.SOCK_DGRAM, Protocol: unix.IPPROTO_UDP,
		Options: &pb.SocketOptions{Tos: 0x10, Priority: 5}}
	if err := setSockopts(fd, 3, s); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		level, opt, want int
		what             string
	}{{unix.IPPROTO_IP, unix.IP_TOS, 0x10, "IP_TOS"}, {unix.SOL_SOCKET, unix.SO_PRIORITY, 5, "SO_PRIORITY"}} {
		if got, err := unix.GetsockoptInt(fd, c.level, c.opt); err != nil || got != c.want {
			t.Errorf("%s = %d (%v), want %d", c.what, got, err, c.want)
		}
	}
}
