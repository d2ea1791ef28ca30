package probe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// childEnv is set in the environment of the probe child.
const childEnv = "LAZYCR_PROBE_CHILD"

// RunChildIfRequested turns the process into the ptrace probes' child when
// it was started as one (LAZYCR_PROBE_CHILD=1): it then blocks reading
// stdin and exits when the prober closes it (or kills it); it never
// returns. Otherwise it returns at once. main, and TestMain of any package
// that calls All, must call it first.
func RunChildIfRequested() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// child is a running probe child. Its stdin is the read end of a pipe whose
// write end we hold.
type child struct {
	pid   int
	stdin int // write end of the child's stdin pipe
}

// startChild re-executes /proc/self/exe as a probe child. The caller must
// hold its OS thread locked if it is going to ptrace the child, and must call
// kill on every path.
func startChild() (*child, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("create child stdin pipe: %w", os.NewSyscallError("pipe2", err))
	}
	env := append(os.Environ(), childEnv+"=1")
	pid, err := syscall.ForkExec("/proc/self/exe", []string{os.Args[0]}, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{uintptr(p[0]), uintptr(unix.Stderr), uintptr(unix.Stderr)},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	unix.Close(p[0])
	if err != nil {
		unix.Close(p[1])
		return nil, fmt.Errorf("start probe child /proc/self/exe: %w", err)
	}
	return &child{pid: pid, stdin: p[1]}, nil
}

// kill sends SIGKILL and reaps the child with wait4(__WALL), retrying EINTR
// and skipping ptrace stops, so no zombie is left. cmd.Wait is not usable
// on a traced child.
func (c *child) kill() error {
	defer unix.Close(c.stdin)
	if err := unix.Kill(c.pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill probe child pid %d: %w", c.pid, os.NewSyscallError("kill", err))
	}
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(c.pid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("reap probe child pid %d: %w", c.pid, os.NewSyscallError("wait4", err))
		}
		if ws.Exited() || ws.Signaled() {
			return nil
		}
	}
}

// waitStop waits for the child's next stop, retrying EINTR.
func (c *child) waitStop() (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(c.pid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait for pid %d to stop: %w", c.pid, os.NewSyscallError("wait4", err))
		}
		if !ws.Stopped() {
			return ws, fmt.Errorf("wait for pid %d to stop: status %#x instead", c.pid, uint32(ws))
		}
		return ws, nil
	}
}
