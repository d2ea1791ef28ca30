package files

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// A pipe that processes outside the dump hold too (a shell pipeline, a
// harness reading stdout, a parent that passed both ends of a pipe to its
// child) can be rejoined on restore, but never by guessing: a pipe inode
// number means nothing on another host or after a reboot, and any process
// holding a pipe with that number could be joined. The dump records the
// boot id and the processes that held the pipe (pid, start time, real
// uid, pid namespace); restore rejoins it only on the same boot, through
// a holder that is still the same process with the same owner and still
// holds pipe:[INO], opening new descriptions of it through
// /proc/PID/fd/N (proc(5)). Otherwise:
//   - a lone end (its peer not dumped) gets a fresh pipe with no peer,
//     which is what it would see had the peer closed it;
//   - a pipe whose both ends are in the image is refused
//     ([ErrHeldOutside]): a fresh pipe would carry on between the
//     process's own ends and never reach the outside holder again, a
//     silent change. --inherit-fd N passes a pipe for it instead.
//
// The buffered data of a rejoined pipe is the live pipe's: what the
// image recorded is never written again (the holder may have read it).
// FIFOs (fifo.go) follow the same rules through their path.

// ErrHeldOutside: a pipe or FIFO that processes outside the dump held
// too cannot be rejoined on restore (another boot or host, the holders
// gone), and giving the process a fresh one would silently cut it off
// from them. Restore names the holders and --inherit-fd.
var ErrHeldOutside = errors.New("held outside the dump and not rejoinable")

// errForeignBoot: the image comes from another boot or host, where its
// pipes and pids mean nothing.
var errForeignBoot = errors.New("the image comes from another boot or host")

// maxHolders bounds the holders recorded per pipe.
const maxHolders = 16

// bootIDPath is where the kernel publishes this boot's random id (see
// random(4), /proc/sys/kernel/random/boot_id).
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID returns this boot's id.
func BootID() (string, error) { return bootID() }

// bootID reads the boot id once: it cannot change while lazycr runs, and
// the fd kinds ask for it one fd after another, in the freeze too.
var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
})

// pipeHolders returns, for each inode of inos, the processes other than
// skip that hold pipe:[INO] open. It reads every process's fd table, so it
// runs only when the process has a pipe (it adds to the freeze: about
// 2 ms with a few hundred processes here).
func pipeHolders(inos map[uint64]bool, skip ...int) map[uint64][]*pb.PipeHolder {
	out := map[uint64][]*pb.PipeHolder{}
	if len(inos) == 0 {
		return out
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	ns, err := pidNS()
	if err != nil {
		return out
	}
	for _, e := range procs {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(skip, pid) {
			continue
		}
		seen := map[uint64]bool{}
		for _, ino := range pipesHeldBy(pid) {
			if !inos[ino] || seen[ino] || len(out[ino]) >= maxHolders {
				continue
			}
			seen[ino] = true
			start, err := proc.ProcessIdentity(pid)
			if err != nil {
				continue
			}
			st, err := proc.ReadStatus(pid)
			if err != nil {
				continue
			}
			out[ino] = append(out[ino], &pb.PipeHolder{Pid: uint32(pid), StartTime: start, Uid: st.Uid[0], PidNs: ns})
		}
	}
	return out
}

// pidNS is the inode of the pid namespace /proc numbers pids in (lazycr's
// own; see pid_namespaces(7)).
func pidNS() (uint64, error) {
	st, err := proc.SelfNs("pid")
	if err != nil {
		return 0, fmt.Errorf("stat lazycr's PID namespace: %w", err)
	}
	return st.Ino, nil
}

// pipesHeldBy lists the pipe inodes pid has open (best effort: a process
// may vanish or forbid the read).
func pipesHeldBy(pid int) []uint64 {
	fds, err := proc.ReadFds(pid)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, f := range fds {
		if k, _, ino := proc.Kind(f.Target); k == proc.KindPipe {
			out = append(out, ino)
		}
	}
	return out
}

// holderFd returns /proc/PID/fd/N of h if h is still the process the dump
// saw (same start time, same real uid) and holds pipe:[ino].
func holderFd(h *pb.PipeHolder, ino uint64) (string, error) {
	want := fmt.Sprintf("pipe:[%d]", ino)
	return liveHolderFd(h, want, func(_ int, f proc.Fd) bool { return f.Target == want })
}

// liveHolderFd returns /proc/PID/fd/N of h if h is still the process the
// dump saw (same pid namespace, start time and real uid) and one of its
// fds, f, satisfies holds (what names the object for errors).
func liveHolderFd(h *pb.PipeHolder, what string, holds func(pid int, f proc.Fd) bool) (string, error) {
	pid := int(h.Pid)
	ns, err := pidNS()
	if err != nil {
		return "", err
	}
	if ns != h.PidNs {
		return "", fmt.Errorf("pid %d was numbered in pid namespace %d, lazycr runs in %d", pid, h.PidNs, ns)
	}
	start, err := proc.ProcessIdentity(pid)
	if err != nil {
		return "", err
	}
	if start != h.StartTime {
		return "", fmt.Errorf("pid %d is another process now (started at tick %d, the holder at %d)", pid, start, h.StartTime)
	}
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return "", err
	}
	if st.Uid[0] != h.Uid {
		return "", fmt.Errorf("pid %d is owned by uid %d now, the dump saw uid %d", pid, st.Uid[0], h.Uid)
	}
	fds, err := proc.ReadFds(pid)
	if err != nil {
		return "", err
	}
	for _, f := range fds {
		if holds(pid, f) {
			return fmt.Sprintf("/proc/%d/fd/%d", pid, f.Num), nil
		}
	}
	return "", fmt.Errorf("pid %d no longer holds %s", pid, what)
}

// PipeHolders returns, for each pipe inode of inos, the processes other
// than skip (and lazycr) that hold it open, as the dump records them for
// a live reconnection (see the top of this file). The tree's pass uses it
// for pipes between members that processes outside the tree hold too.
func PipeHolders(inos map[uint64]bool, skip map[int]bool) map[uint64][]*pb.PipeHolder {
	pids := []int{os.Getpid()}
	for pid := range skip {
		pids = append(pids, pid)
	}
	return pipeHolders(inos, pids...)
}

// OpenLivePipe opens, in lazycr, both ends of pipe:[ino] through the
// first of holders that is still the process the dump saw (same boot,
// same start time and uid) and still holds it: new open file descriptions
// of the live pipe, O_NONBLOCK and O_CLOEXEC, the read end opened first
// so that the write end's open cannot fail ENXIO for want of a reader
// (fifo(7)). It returns the holder's pid. bootID is the boot the image
// comes from; another boot never reconnects.
func OpenLivePipe(ino uint64, holders []*pb.PipeHolder, bootID string) (ends [2]int, holder int, err error) {
	here, err := BootID()
	if err != nil {
		return ends, 0, err
	}
	if bootID == "" || here != bootID {
		return ends, 0, fmt.Errorf("pipe:[%d]: %w (boot id %q, here %q)", ino, errForeignBoot, bootID, here)
	}
	var errs []error
	for _, h := range holders {
		path, err := holderFd(h, ino)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ends, err = openLiveEnds(path, ino)
		if err != nil {
			errs = append(errs, fmt.Errorf("open %s: %w", path, err))
			continue
		}
		// The holder is still the same process: its pid was not reused
		// while the ends were opened.
		if start, err := proc.ProcessIdentity(int(h.Pid)); err != nil || start != h.StartTime {
			unix.Close(ends[0])
			unix.Close(ends[1])
			errs = append(errs, fmt.Errorf("pid %d changed while pipe:[%d] was opened through it", h.Pid, ino))
			continue
		}
		return ends, int(h.Pid), nil
	}
	if len(holders) == 0 {
		errs = append(errs, fmt.Errorf("no holder recorded"))
	}
	return ends, 0, fmt.Errorf("reopen pipe:[%d]: %w", ino, errors.Join(errs...))
}

// PipeEndsOf returns both ends of the pipe lazycr's own fd n is an end
// of (end 0: the read end, 1: the write end): that end a duplicate of n
// (its open file description), the other a new description opened through
// /proc/self/fd/N (proc(5)), O_NONBLOCK, both close-on-exec. For a tree
// pipe that --inherit-fd names.
func PipeEndsOf(n, end int) (ends [2]int, err error) {
	ends = [2]int{-1, -1}
	defer func() {
		if err != nil {
			for _, fd := range ends {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(n, &st); err != nil {
		return ends, fmt.Errorf("lazycr has no fd %d open: %w", n, os.NewSyscallError("fstat", err))
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return ends, fmt.Errorf("lazycr's fd %d is not a pipe (mode %#o)", n, st.Mode)
	}
	if ends[end], err = unix.FcntlInt(uintptr(n), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		return ends, fmt.Errorf("duplicate fd %d: %w", n, os.NewSyscallError("fcntl F_DUPFD_CLOEXEC", err))
	}
	// The read end exists now if end is 0; opened first otherwise, it
	// lets the write end's open succeed (fifo(7)).
	acc := []int{unix.O_RDONLY, unix.O_WRONLY}[1-end]
	path := fmt.Sprintf("/proc/self/fd/%d", n)
	if ends[1-end], err = unix.Open(path, acc|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
		return ends, fmt.Errorf("open %s: %w", path, os.NewSyscallError("open", err))
	}
	return ends, nil
}

// openLiveEnds opens path (a /proc/PID/fd/N link to pipe:[ino]) for
// reading, then for writing, and checks both are pipe:[ino].
func openLiveEnds(path string, ino uint64) (ends [2]int, err error) {
	ends = [2]int{-1, -1}
	defer func() {
		if err != nil {
			for _, fd := range ends {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		}
	}()
	for i, acc := range []int{unix.O_RDONLY, unix.O_WRONLY} {
		fd, err := unix.Open(path, acc|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return ends, os.NewSyscallError("open", err)
		}
		ends[i] = fd
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return ends, os.NewSyscallError("fstat", err)
		}
		if st.Ino != ino || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			return ends, fmt.Errorf("%s is inode %d (mode %#o), not pipe:[%d]", path, st.Ino, st.Mode, ino)
		}
	}
	return ends, nil
}

// sharedWithHolder returns the first of holders, and its fd, whose open
// file description fd fd of pid is (kcmp(2) KCMP_FILE; only the holder's
// fds with the same /proc link target can be it), or nil.
func sharedWithHolder(pid, fd int, target string, holders []*pb.PipeHolder) (*pb.PipeHolder, int32) {
	for _, h := range holders {
		fds, err := proc.ReadFds(int(h.Pid))
		if err != nil {
			continue
		}
		for _, f := range fds {
			if f.Target != target {
				continue
			}
			if same, err := kabi.KcmpFile(pid, int(h.Pid), fd, f.Num); err == nil && same {
				return h, int32(f.Num)
			}
		}
	}
	return nil, 0
}

// sharedDescription passes into the process the open file description
// image fd f shared with a holder at the dump (Pipe.shared_holder), taken
// from the holder with pidfd_getfd(2), if the holder is still the process
// the dump saw, still has it at that fd on the object target (pipe:[INO]
// or the FIFO's path) and with the status flags f had: then the fd is one
// description with the holder's again, as before the dump. It reports
// false otherwise (f gets a description of its own). A description with
// O_ASYNC is not taken: restore sets O_ASYNC last, clearing it meanwhile,
// which the holder would see.
func (r *restorer) sharedDescription(f *pb.Fd, target string) (uintptr, bool) {
	p := f.GetPipe()
	h := p.GetSharedHolder()
	if h == nil || f.Flags&unix.O_ASYNC != 0 {
		return 0, false
	}
	log := r.log.With().Int32("fd", f.Fd).Uint32("holder", h.Pid).Int32("holder_fd", p.SharedFd).Logger()
	if _, err := liveHolderFd(h, target, func(_ int, x proc.Fd) bool { return x.Num == int(p.SharedFd) && x.Target == target }); err != nil {
		log.Debug().Err(err).Msg("the description shared with the holder is not there: the fd gets its own")
		return 0, false
	}
	local, err := takeHolderFd(int(h.Pid), int(p.SharedFd))
	if err != nil {
		log.Debug().Err(err).Msg("take the description shared with the holder")
		return 0, false
	}
	defer unix.Close(local)
	var st unix.Stat_t
	flags, ferr := unix.FcntlInt(uintptr(local), unix.F_GETFL, 0)
	start, serr := proc.ProcessIdentity(int(h.Pid))
	if unix.Fstat(local, &st) != nil || st.Ino != p.Inode || st.Mode&unix.S_IFMT != unix.S_IFIFO ||
		ferr != nil || serr != nil || start != h.StartTime ||
		uint32(flags)&^ignoreFlags != f.Flags&^ignoreFlags {
		log.Debug().Int("flags", flags).Uint32("image_flags", f.Flags).Msg("the holder's description changed since the dump: the fd gets its own")
		return 0, false
	}
	fd, err := r.receive(local, f.Fd)
	if err != nil {
		log.Debug().Err(err).Msg("pass the description shared with the holder")
		return 0, false
	}
	log.Debug().Msgf("fd %d is again one open file description with fd %d of pid %d", f.Fd, p.SharedFd, h.Pid)
	return fd, true
}

// takeHolderFd duplicates fd of pid into lazycr: pidfd_getfd(2), which
// needs ptrace access to pid (PTRACE_MODE_ATTACH_REALCREDS).
func takeHolderFd(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("open pidfd of pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("take fd %d of pid %d: %w", fd, pid, os.NewSyscallError("pidfd_getfd", err))
	}
	return local, nil
}
