package migrate

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lazycr/lazycr/proc"
	"github.com/lazycr/lazycr/uffd"
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
//	"child"      + SCM_RIGHTS [uffd]          a forked child's uffd (numbered 0, 1, … with the next)
//	"child PID"  + SCM_RIGHTS [uffd, pidfd]   another process of a restored tree
//	"pid K PID"  + SCM_RIGHTS [pidfd]         child number K is PID (learnt later)
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
	// children numbers the uffds sent with "child" by their fd here, in
	// the order sent (the keeper numbers them the same way), for ChildPID.
	children map[int]int
	nchild   int
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

// HoldChild gives the keeper a reference to a forked child's uffd; its pid
// follows with ChildPID once known.
func (k *Keeper) HoldChild(uffd int) error {
	if err := k.send("child", uffd); err != nil {
		return err
	}
	k.number(uffd)
	return nil
}

// HoldMember gives the keeper a reference to the uffd of another process
// of a restored tree, pid, and a pidfd of it: it is killed should the
// handler die, also once the root exited (it is no longer the root's
// descendant then).
func (k *Keeper) HoldMember(uffd, pid, pidfd int) error {
	if err := k.send("child "+strconv.Itoa(pid), uffd, pidfd); err != nil {
		return err
	}
	k.number(uffd)
	return nil
}

func (k *Keeper) number(uffd int) {
	if k.children == nil {
		k.children = map[int]int{}
	}
	k.children[uffd] = k.nchild
	k.nchild++
}

// ChildPID tells the keeper the pid of the forked child whose uffd (fd
// number here) went with HoldChild.
func (k *Keeper) ChildPID(uffd, pid int) error {
	idx, ok := k.children[uffd]
	if !ok {
		return fmt.Errorf("tell keeper %d pid %d: uffd %d was not handed over", k.pid, pid, uffd)
	}
	delete(k.children, uffd)
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("tell keeper %d pid %d: %w", k.pid, pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	return k.send(fmt.Sprintf("pid %d %d", idx, pid), pidfd)
}

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

// kept is a process the keeper guards: its uffd, and its pid and pidfd
// once known (a forked child's pid is learnt after its uffd).
type kept struct {
	pid, pidfd int
	uffd       *uffd.FD
	gone       bool
}

// drop closes k's fds: its process exited, or the keeper is released.
func (k *kept) drop() {
	if k.uffd != nil {
		k.uffd.Close()
		k.uffd = nil
	}
	if k.pidfd >= 0 {
		unix.Close(k.pidfd)
		k.pidfd = -1
	}
	k.gone = true
}

// RunKeeper is the keeper process: it serves the socket fd until release
// (exit 0) or until the handler's end closes (the handler died: kill the
// held processes, exit 1). Messages for people go to stderr.
//
// A process it holds that exits is let go (its uffd and pidfd closed).
// The restored process exiting does not end the guard while other
// processes of the tree (restored members, forked children) live: they
// are still served, and still need guarding. When the handler dies, every
// held process whose pid is known is killed; a forked child whose pid the
// handler never learnt (it forked and its parent exited before) is killed
// at its first fault on a page that never arrived (the fault names its
// thread): the keeper then reads its uffd itself, until it is gone.
func RunKeeper(fd int, stderr io.Writer) error {
	var (
		root     = &kept{pidfd: -1, gone: true}
		children []*kept
		dead     bool // the handler died
	)
	releaseAll := func() {
		root.drop()
		for _, c := range children {
			c.drop()
		}
		children = nil
	}
	defer releaseAll()
	live := func() bool {
		if !root.gone {
			return true
		}
		for _, c := range children {
			if !c.gone {
				return true
			}
		}
		return false
	}
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(2*4))
	var msgs [16]uffd.Msg
	for {
		if dead && !live() {
			return fmt.Errorf("%w: pid %d was killed", ErrHandlerDied, root.pid)
		}
		var pfds []unix.PollFd
		var who []*kept // who[i] owns pfds[i]; nil: the socket
		var isUffd []bool
		if !dead {
			pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			who, isUffd = append(who, nil), append(isUffd, false)
		}
		for _, k := range append([]*kept{root}, children...) {
			if k.gone {
				continue
			}
			if k.pidfd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(k.pidfd), Events: unix.POLLIN})
				who, isUffd = append(who, k), append(isUffd, false)
			} else if dead && k.uffd != nil {
				pfds = append(pfds, unix.PollFd{Fd: int32(k.uffd.Fd()), Events: unix.POLLIN})
				who, isUffd = append(who, k), append(isUffd, true)
			}
		}
		if _, err := unix.Poll(pfds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return fmt.Errorf("keeper: %w", os.NewSyscallError("poll", err))
		}
		sock := false
		for i, k := range who {
			switch {
			case pfds[i].Revents == 0:
			case k == nil:
				sock = true
			case !isUffd[i]:
				// The process exited: nothing left to guard there.
				k.drop()
			default:
				children = append(children, killFaulting(k, msgs[:], stderr)...)
			}
		}
		if !sock {
			continue
		}
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil || n == 0 {
			// The handler is gone without releasing us.
			if !live() {
				return nil
			}
			dead = true
			killHeld(root, children, stderr)
			continue
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
		m, perr := parseKeeperMsg(buf[:n], len(got))
		if perr == nil && m.kind == keeperHold && root.pid != 0 {
			perr = errors.New("a second hold")
		}
		if perr == nil && m.kind == keeperPID && (m.index >= len(children) || children[m.index].pid != 0) {
			perr = fmt.Errorf("pid %d for child %d of %d, or one named before", m.pid, m.index, len(children))
		}
		var u *uffd.FD
		if perr == nil && (m.kind == keeperHold || m.kind == keeperChild) {
			uf := got[len(got)-1]
			if m.kind == keeperChild && len(got) == 2 {
				uf = got[0]
			}
			if u, perr = uffd.FromFd(uf); perr != nil {
				got = slices.DeleteFunc(got, func(f int) bool { return f == uf }) // FromFd closed it
			}
		}
		if perr != nil {
			closeAll(got)
			fmt.Fprintf(stderr, "lazycr keeper: %v\n", perr)
			if live() {
				// Not our handler talking: safer to end the processes
				// than to go on guarding them blind. The talker hears
				// no more from us (it would wait for an answer).
				unix.Shutdown(fd, unix.SHUT_RDWR)
				killHeld(root, children, stderr)
				dead = true
				continue
			}
			return fmt.Errorf("keeper: %w", perr)
		}
		switch m.kind {
		case keeperHold:
			root.pid, root.pidfd, root.uffd, root.gone = m.pid, got[0], u, false
		case keeperChild:
			c := &kept{pidfd: -1, uffd: u}
			if len(got) == 2 {
				c.pid, c.pidfd = m.pid, got[1]
			}
			children = append(children, c)
		case keeperPID:
			c := children[m.index]
			c.pid = m.pid
			if c.gone {
				unix.Close(got[0])
			} else {
				c.pidfd = got[0]
			}
		case keeperRelease:
			releaseAll()
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
	keeperPID
)

// parsedKeeperMsg is a decoded message to the keeper.
type parsedKeeperMsg struct {
	kind  keeperMsg
	pid   int // hold, child with a pid, pid
	index int // pid: the child it names, in the order of the child messages
}

// parseKeeperMsg decodes a message to the keeper that came with nfds fds:
// "hold PID" (2 fds: pidfd, uffd), "child" (1 fd: uffd), "child PID" (2
// fds: uffd, pidfd), "pid INDEX PID" (1 fd: pidfd) or "release" (none).
func parseKeeperMsg(b []byte, nfds int) (parsedKeeperMsg, error) {
	msg := string(b)
	bad := fmt.Errorf("bad message %q with %d fds", msg, nfds)
	f := strings.Fields(msg)
	num := func(s string, min int) (int, bool) {
		v, err := strconv.Atoi(s)
		return v, err == nil && v >= min && strconv.Itoa(v) == s
	}
	switch {
	case len(f) == 2 && f[0] == "hold" && nfds == 2 && msg == f[0]+" "+f[1]:
		if p, ok := num(f[1], 1); ok {
			return parsedKeeperMsg{kind: keeperHold, pid: p}, nil
		}
	case msg == "child" && nfds == 1:
		return parsedKeeperMsg{kind: keeperChild}, nil
	case len(f) == 2 && f[0] == "child" && nfds == 2 && msg == f[0]+" "+f[1]:
		if p, ok := num(f[1], 1); ok {
			return parsedKeeperMsg{kind: keeperChild, pid: p}, nil
		}
	case len(f) == 3 && f[0] == "pid" && nfds == 1 && msg == f[0]+" "+f[1]+" "+f[2]:
		k, ok1 := num(f[1], 0)
		p, ok2 := num(f[2], 1)
		if ok1 && ok2 {
			return parsedKeeperMsg{kind: keeperPID, pid: p, index: k}, nil
		}
	case msg == "release" && nfds == 0:
		return parsedKeeperMsg{kind: keeperRelease}, nil
	}
	return parsedKeeperMsg{}, bad
}

func closeAll(fds []int) {
	for _, f := range fds {
		unix.Close(f)
	}
}

// killHeld kills every held process whose pid is known (through its
// pidfd, so a recycled pid is never hit) and the descendants each has now,
// listed before it dies (they are re-parented after), and says so on
// stderr. A forked child whose pid is not known is killed later, at its
// first fault (killFaulting).
func killHeld(root *kept, children []*kept, stderr io.Writer) {
	var pids, unknown []int
	var targets []*kept
	for _, k := range append([]*kept{root}, children...) {
		switch {
		case k.gone:
		case k.pidfd >= 0:
			targets = append(targets, k)
			pids = append(pids, k.pid)
		default:
			unknown = append(unknown, len(unknown))
		}
	}
	var kids []int
	for _, k := range targets {
		for _, d := range descendants(k.pid) {
			if !slices.Contains(pids, d) && !slices.Contains(kids, d) {
				kids = append(kids, d)
			}
		}
	}
	fmt.Fprintf(stderr, "lazycr keeper: %s: the lazy-pages handler of pid %d died while part of its memory was still on the source; killing", time.Now().Format(time.TimeOnly+".000"), root.pid)
	for _, p := range pids {
		fmt.Fprintf(stderr, " pid %d", p)
	}
	if len(kids) > 0 {
		fmt.Fprintf(stderr, " and its children %v", kids)
	}
	if len(unknown) > 0 {
		fmt.Fprintf(stderr, "; %d forked process(es) whose pid is unknown die at their first fault on a missing page", len(unknown))
	}
	fmt.Fprintln(stderr, " so that nothing runs on zero pages; the source keeps the original stopped")
	for _, k := range targets {
		if err := unix.PidfdSendSignal(k.pidfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			fmt.Fprintf(stderr, "lazycr keeper: kill pid %d: %v\n", k.pid, err)
		}
	}
	for _, d := range kids {
		// Forked during the lazy phase, they share its lazy memory.
		if err := unix.Kill(d, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			fmt.Fprintf(stderr, "lazycr keeper: kill child pid %d: %v\n", d, err)
		}
	}
}

// killFaulting reads k's uffd after the handler died (k is a forked child
// whose pid was never learnt): a page fault there is on a page that never
// arrived, and its thread's process is killed; a fork adds the new child's
// uffd (returned, to be guarded the same way); other events need no answer.
// See ioctl_userfaultfd(2) and userfaultfd(2) for the messages.
func killFaulting(k *kept, msgs []uffd.Msg, stderr io.Writer) []*kept {
	var added []*kept
	for k.uffd != nil {
		got, err := k.uffd.ReadMsgs(msgs)
		if err != nil || len(got) == 0 {
			return added
		}
		for _, m := range got {
			switch m.Event {
			case uffd.EventFork:
				if u, err := uffd.FromFd(m.Fork.UFD); err == nil {
					added = append(added, &kept{pidfd: -1, uffd: u})
				}
			case uffd.EventPageFault:
				if k.pidfd >= 0 {
					continue // killed already; its exit closes the uffd
				}
				pid := proc.Tgid(m.PageFault.TID)
				pfd, err := unix.PidfdOpen(pid, 0)
				if err != nil {
					continue // already gone
				}
				k.pid, k.pidfd = pid, pfd
				fmt.Fprintf(stderr, "lazycr keeper: %s: pid %d (forked during the lazy phase) touched a page that never arrived after its handler died: killing it\n", time.Now().Format(time.TimeOnly+".000"), pid)
				if err := unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
					fmt.Fprintf(stderr, "lazycr keeper: kill pid %d: %v\n", pid, err)
				}
			}
		}
	}
	return added
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
