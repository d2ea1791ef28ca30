package hosts

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// execSentinel is argv[0] of a re-executed binary that must enter a host's
// namespace and execve the real command. Layout of argv:
//
//	[execSentinel, netns path, mode ("net" | "pidns"), target path, target argv...]
const execSentinel = "lazycr-hosts-exec"

const (
	modeNet   = "net"
	modePIDNS = "pidns"
)

func init() {
	if len(os.Args) < 5 || os.Args[0] != execSentinel {
		return
	}
	err := execInHost(os.Args[1], os.Args[2], os.Args[3], os.Args[4:])
	fmt.Fprintf(os.Stderr, "hosts: run %s in netns %s: %v\n", os.Args[3], os.Args[1], err)
	os.Exit(127)
}

// execInHost is the re-executed child's whole job; it returns only on error.
func execInHost(nsPath, mode, target string, argv []string) error {
	runtime.LockOSThread() // setns and execve must happen on one thread
	if mode == modePIDNS {
		// We were cloned into new PID and mount namespaces. Keep our mounts
		// from propagating back, then mount a /proc that shows the new PID
		// namespace (see pid_namespaces(7), "/proc and PID namespaces").
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return os.NewSyscallError("mount / rprivate", err)
		}
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return os.NewSyscallError("mount /proc", err)
		}
	}
	if err := setnsPath(nsPath); err != nil {
		return err
	}
	// execve(2) from this thread: the process keeps this thread's network
	// namespace and its PID.
	return os.NewSyscallError("execve "+target, unix.Exec(target, argv, os.Environ()))
}

// Command returns a command that runs name inside the host's network
// namespace (and, with [Options.PIDNS], as PID 1 of a new PID namespace with
// its own /proc). It is an ordinary [exec.Cmd] built by
// [exec.CommandContext]: set Stdin/Stdout/Env/Dir/ExtraFiles as usual and
// Start, Run or Output it from any goroutine; Wait works from any goroutine.
//
// How: Path is /proc/self/exe and Args start with a sentinel that the init
// function of this package recognises in the child, which switches namespace
// and execve(2)s name (looked up in PATH now, like exec.Command). The
// process started is therefore the command itself (same PID). Do not change
// Path or Args; to change the command, call Command again.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	mode := modeNet
	if h.net.pidns {
		mode = modePIDNS
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS}
	}
	target := cmd.Path
	cmd.Path = "/proc/self/exe"
	cmd.Args = append([]string{execSentinel, h.NsPath(), mode, target, name}, args...)
	return cmd
}
