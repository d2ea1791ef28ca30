package migrate

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The keeper guards a post-copy restore against the death of the
// lazy-pages handler (lazycr restore --lazy-from killed with SIGKILL, or
// crashing). When the last reference to a userfaultfd is closed, the kernel
// unregisters its ranges (userfaultfd_release) and a later fault there gets
// a fresh zero page: the process would run on zeros where its memory was
// still on the source. The keeper is a small process of its own (lazycr
// re-executed, in a new session, so neither a Ctrl-C to the terminal nor a
// kill of the handler's process group reaches it) that holds a second
// reference to every uffd of the process, and a pidfd of it, for the whole
// lazy phase. While it holds them a fault without a handler just waits.
// When the handler ends normally it tells the keeper (release) before it
// closes its own uffds, and the keeper lets go. When the handler dies
// instead, the keeper sees its end of the socket close without a release:
// it kills the process (and the children it forked meanwhile) with SIGKILL,
// says so on stderr, and only then drops the uffds. The process is then
// dead, loudly, never running on zero pages.
//
// Why kill rather than let a restarted handler take the uffd back: a
// restarted handler would not know which pages the process dropped
// (MADV_DONTNEED, munmap) after their REMOVE/UNMAP events were read by the
// dead handler, and could fill them with stale data from the source.
//
// Protocol on a SOCK_SEQPACKET socketpair, handler → keeper, each message
// answered "ok" by the keeper:
//
//	"hold PID"   + SCM_RIGHTS [pidfd, uffd]   the restored process
//	"child"      + SCM_RIGHTS [uffd]          a forked child's uffd
//	"release"                                 the handler is done; let go

// KeeperFdEnv names the environment variable that makes a re-executed
// lazycr the keeper; its value is the fd of its socket.
const KeeperFdEnv = "LAZYCR_KEEPER_FD"

// ErrHandlerDied: RunKeeper saw the handler die before it released the
// keeper, and killed the process (and said so on stderr).
var ErrHandlerDied = errors.New("the lazy-pages handler died before the transfer ended")

// Keeper is the handler's side of a running keeper.
type Keeper struct {
	fd   int // our end of the socketpair; -1 once closed
	pid  int
	held bool
}

// StartKeeper starts argv (lazycr, re-executed so it runs RunKeeper) in a
// new session with its stderr on stderr and one end of a socketpair as fd 3.
func StartKeeper(argv []string, stderr io.Writer) (*Keeper, error) {
	if len(argv) == 0 {
		return nil, errors.New("start keeper: no command")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start keeper: %w", os.NewSyscallError("socketpair", err))
	}
	theirs := os.NewFile(uintptr(fds[1]), "keeper socket")
	defer theirs.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), KeeperFdEnv+"=3")
	cmd.Stderr = stderr
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start keeper %s: %w", argv[0], err)
	}
	k := &Keeper{fd: fds[0], pid: cmd.Process.Pid}
	// Reap it whenever it ends; it outlives us in the normal case only
	// for the instant between release and its exit.
	go cmd.Wait()
	return k, nil
}

// PID is the keeper's pid.
func (k *Keeper) PID() int { return k.pid }

// send sends msg with fds and waits for the keeper's "ok".
func (k *Keeper) send(msg string, fds ...int) error {
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(k.fd, []byte(msg), oob, nil, 0); err != nil {
		return fmt.Errorf("tell keeper %d %q: %w", k.pid, msg, os.NewSyscallError("sendmsg", err))
	}
	var buf [16]byte
	for {
		n, _, _, _, err := unix.Recvmsg(k.fd, buf[:], nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("hear keeper %d: %w", k.pid, os.NewSyscallError("recvmsg", err))
		}
		if string(buf[:n]) != "ok" {
			return fmt.Errorf("keeper %d answered %q to %q", k.pid, buf[:n], msg)
		}
		return nil
	}
}

// Hold gives the keeper a reference to the process's uffd and a pidfd of
// it; from then on, if this process dies before Release, the keeper kills
// pid. Call it before the process resumes.
func (k *Keeper) Hold(pid, pidfd, uffd int) error {
	if err := k.send("hold "+strconv.Itoa(pid), pidfd, uffd); err != nil {
		return err
	}
	k.held = true
	return nil
}

// HoldChild gives the keeper a reference to a forked child's uffd.
func (k *Keeper) HoldChild(uffd int) error { return k.send("child", uffd) }

// Release tells the keeper the handler is done (every page is in, or the
// missing ones are poisoned): it drops its references and exits. Call it
// before the handler closes its own uffds.
func (k *Keeper) Release() error {
	if k.fd < 0 {
		return nil
	}
	err := k.send("release")
	k.held = false
	return err
}

// Close closes the socket. If the keeper holds the process and was not
// released, it kills the process: Close is for paths where the process
// is already dead or must die.
func (k *Keeper) Close() error {
	if k.fd < 0 {
		return nil
	}
	err := unix.Close(k.fd)
	k.fd = -1
	if err != nil {
		return fmt.Errorf("close keeper socket: %w", os.NewSyscallError("close", err))
	}
	return nil
}

// RunKeeper is the keeper process: it serves the socket fd until release
// (exit 0) or until the handler's end closes (the handler died: kill the
// held process, exit 1). Messages for people go to stderr.
func RunKeeper(fd int, stderr io.Writer) error {
	var (
		pid     int
		pidfd   = -1
		uffds   []int
		release = func() {
			for _, u := range uffds {
				unix.Close(u)
			}
			uffds = nil
			if pidfd >= 0 {
				unix.Close(pidfd)
				pidfd = -1
			}
		}
	)
	defer release()
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(2*4))
	for {
		pfds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if pidfd >= 0 {
			pfds = append(pfds, unix.PollFd{Fd: int32(pidfd), Events: unix.POLLIN})
		}
		if _, err := unix.Poll(pfds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("keeper: %w", os.NewSyscallError("poll", err))
		}
		if len(pfds) > 1 && pfds[1].Revents != 0 {
			// The process exited: nothing left to guard.
			release()
			pid = 0
		}
		if pfds[0].Revents == 0 {
			continue
		}
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil || n == 0 {
			// The handler is gone without releasing us.
			if pid == 0 || pidfd < 0 {
				return nil
			}
			killHeld(pid, pidfd, stderr)
			return fmt.Errorf("%w: pid %d was killed", ErrHandlerDied, pid)
		}
		var got []int
		if oobn > 0 {
			cmsgs, perr := unix.ParseSocketControlMessage(oob[:oobn])
			if perr == nil {
				for _, c := range cmsgs {
					if fds, err := unix.ParseUnixRights(&c); err == nil {
						got = append(got, fds...)
					}
				}
			}
		}
		kind, p, perr := parseKeeperMsg(buf[:n], len(got))
		if perr == nil && kind == keeperHold && pidfd >= 0 {
			perr = errors.New("a second hold")
		}
		if perr != nil {
			closeAll(got)
			if pid > 0 && pidfd >= 0 {
				// Not our handler talking: safer to end the process than
				// to go on guarding it blind.
				killHeld(pid, pidfd, stderr)
			}
			return fmt.Errorf("keeper: %w", perr)
		}
		switch kind {
		case keeperHold:
			pid, pidfd = p, got[0]
			uffds = append(uffds, got[1])
		case keeperChild:
			uffds = append(uffds, got[0])
		case keeperRelease:
			release()
			unix.Sendmsg(fd, []byte("ok"), nil, nil, 0)
			return nil
		}
		if err := unix.Sendmsg(fd, []byte("ok"), nil, nil, 0); err != nil {
			// The handler went away between its message and our answer:
			// the next Recvmsg sees it.
			continue
		}
	}
}

type keeperMsg int

const (
	keeperHold keeperMsg = 1 + iota
	keeperChild
	keeperRelease
)

// parseKeeperMsg decodes a message to the keeper that came with nfds fds:
// "hold PID" (2 fds), "child" (1 fd) or "release" (none).
func parseKeeperMsg(b []byte, nfds int) (kind keeperMsg, pid int, err error) {
	msg := string(b)
	switch {
	case strings.HasPrefix(msg, "hold "):
		p, perr := strconv.Atoi(strings.TrimPrefix(msg, "hold "))
		if perr != nil || p <= 0 || nfds != 2 {
			return 0, 0, fmt.Errorf("bad message %q with %d fds", msg, nfds)
		}
		return keeperHold, p, nil
	case msg == "child" && nfds == 1:
		return keeperChild, 0, nil
	case msg == "release" && nfds == 0:
		return keeperRelease, 0, nil
	}
	return 0, 0, fmt.Errorf("bad message %q with %d fds", msg, nfds)
}

func closeAll(fds []int) {
	for _, f := range fds {
		unix.Close(f)
	}
}

// killHeld kills pid (through its pidfd, so a recycled pid is never hit)
// and the descendants it has now, children first listed before the parent
// dies (they are re-parented after), and says so on stderr.
func killHeld(pid, pidfd int, stderr io.Writer) {
	kids := descendants(pid)
	fmt.Fprintf(stderr, "lazycr keeper: %s: the lazy-pages handler of pid %d died while part of its memory was still on the source; killing pid %d", time.Now().Format(time.TimeOnly+".000"), pid, pid)
	if len(kids) > 0 {
		fmt.Fprintf(stderr, " and its children %v", kids)
	}
	fmt.Fprintln(stderr, " so that it never runs on zero pages; the source keeps the original stopped")
	if err := unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		fmt.Fprintf(stderr, "lazycr keeper: kill pid %d: %v\n", pid, err)
	}
	for _, k := range kids {
		// Forked during the lazy phase, they share its lazy memory.
		if err := unix.Kill(k, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			fmt.Fprintf(stderr, "lazycr keeper: kill child pid %d: %v\n", k, err)
		}
	}
}

// descendants lists pid's descendants from /proc/PID/task/*/children
// (proc(5)).
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 && len(out) < 4096 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, t.Name()))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}
