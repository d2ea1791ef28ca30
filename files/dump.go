package files

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// DumpOptions configure [Dump].
type DumpOptions struct {
	Log zerolog.Logger
	// TCP receives the established TCP connections (tcp.go); without it
	// they are refused.
	TCP *TCPDump
	// TreeSockets are the socket inodes that the members of the tree
	// being dumped hold (frozen, as this process is): a unix socket
	// whose peer only another member holds is recorded, and the tree's
	// pass checks that it is restored from a member holding both ends
	// (dump/tree.go). Nil for a single process.
	TreeSockets map[uint64]bool
	// TreePids are the pids of the tree's members: a description whose
	// signal-driven I/O owner is another member is recorded (nginx's
	// worker channels are owned by the master), and the tree's pass checks
	// that the owner member is the one that makes it on restore.
	TreePids map[int]bool
	// DropQueuedConnections: a TCP or MPTCP listener's connections waiting
	// to be accepted are dropped with a warning (the clients get a reset)
	// instead of refusing the dump (inet.go listenQueue).
	DropQueuedConnections bool
	// LazyListeners: the dump is the last try of the source of a lazy
	// migration, whose target on this host takes the listeners over
	// with their accept queues (inet.go takeListener): a queue is no
	// refusal then. Earlier tries refuse it as a passing state, as a
	// plain dump does: between hosts a queued connection is lost.
	LazyListeners bool
	// ListenerHold, if not nil, receives the lock of a listener whose
	// accept queue refuses the dump (inet.go listenQueue), instead of
	// the failed dump removing it: the caller keeps it over the pause
	// before its next try and releases it when its tries end.
	ListenerHold *ListenerHold
}

// dumper holds the state of one Dump run that kinds share.
type dumper struct {
	pid   int
	pidfd int // the process's pidfd, for pidfd_getfd(2)
	opts  DumpOptions
	// ends records, per pipe inode, whether a read ([0]) and a write ([1])
	// end are among the process's fds.
	ends map[uint64][2]bool
	// dataTaken: the pipe's buffered data is already in the image.
	dataTaken map[uint64]bool
	// holders are the other processes that hold a pipe of the process
	// (livepipe.go).
	holders map[uint64][]*pb.PipeHolder
	// fds and infos are the process's fds and their fdinfo.
	fds   []proc.Fd
	infos []*proc.FdInfo
	// fifos caches, per FIFO (fifo.go), whether its buffered data is
	// the process's alone.
	fifos map[fileKey]*fifoState
	// diag caches sock_diag answers: family, protocol → inode → state.
	diag map[[2]uint8]map[uint64]diagSock
	// memfdTaken: the memfd's content is already in the image (memfd.go).
	memfdTaken map[uint64]bool
	// deletedTaken: the deleted file's content is already in the image.
	deletedTaken map[fileKey]bool
	// mounts of the process's mount namespace (inotify.go), read once.
	mounts []mount
	// unixDiag is sock_diag's view of the unix sockets (unixsock.go),
	// read once.
	unixDiag map[uint64]unixDiag
	// mcast are the multicast groups in use in the process's network
	// namespace (mcast.go), read once (mcastRead).
	mcast     []mcastGroup
	mcastRead bool
}

// liveFd is one fd of the process being dumped.
type liveFd struct {
	num    int
	target string // the /proc/PID/fd link
	link   proc.FdKind
	anon   string // anon_inode name without brackets ("eventfd")
	ino    uint64 // pipe:[INO], socket:[INO]
	info   *proc.FdInfo
	local  int // lazycr's pidfd_getfd(2) copy, sharing the open file description
	st     unix.Stat_t
}

// Dump records every fd of the (frozen) process pid. Each fd is duplicated
// into lazycr with pidfd_getfd(2) so that sockets and pipes can be
// inspected with ordinary syscalls (getsockopt, tee) without disturbing the
// process. An fd no kind can record exactly fails the dump with
// [ErrUnsupported], naming it.
func Dump(pid int, opts DumpOptions) (_ *pb.FdTable, err error) {
	defer func() {
		if err != nil {
			if rerr := opts.TCP.Resume(); rerr != nil {
				opts.Log.Error().Err(rerr).Int("pid", pid).Msg("resume TCP connections after a failed dump")
			}
		}
	}()
	fds, err := proc.ReadFds(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
		// pid is a thread, not a leader: the process's leader has exited
		// and its files are read through a live thread (PIDFD_THREAD,
		// Linux 6.9; pidfd_getfd(2) then takes that thread's fds).
		pidfd, err = unix.PidfdOpen(pid, unix.PIDFD_THREAD)
	}
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: pidfd_open: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)

	d := &dumper{pid: pid, pidfd: pidfd, opts: opts, ends: map[uint64][2]bool{}, dataTaken: map[uint64]bool{}, fds: fds, fifos: map[fileKey]*fifoState{}}
	infos := make([]*proc.FdInfo, len(fds))
	d.infos = infos
	for i, f := range fds {
		info, err := proc.ReadFdInfo(pid, f.Num)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d: %w", pid, f.Num, err)
		}
		infos[i] = info
		if k, _, ino := proc.Kind(f.Target); k == proc.KindPipe {
			e := d.ends[ino]
			switch info.Flags & unix.O_ACCMODE {
			case unix.O_WRONLY:
				e[1] = true
			case unix.O_RDWR: // both ends at once (pipe.go)
				e[0], e[1] = true, true
			default:
				e[0] = true
			}
			d.ends[ino] = e
		}
	}

	// The processes outside that hold each pipe (a /proc scan, in the
	// freeze). A tree member's pipe whose both ends it holds is the tree
	// pass's to check (dump/tree.go records its outside holders): only
	// its lone ends are looked up here.
	pipes := map[uint64]bool{}
	for ino, e := range d.ends {
		if opts.TreePids == nil || !e[0] || !e[1] {
			pipes[ino] = true
		}
	}
	d.holders = pipeHolders(pipes, pid, os.Getpid())
	boot, err := BootID()
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: %w", pid, err)
	}
	table := &pb.FdTable{Pid: uint32(pid), BootId: boot}
	for i, f := range fds {
		info := infos[i]
		out := &pb.Fd{Fd: int32(f.Num), Cloexec: info.Flags&unix.O_CLOEXEC != 0, Flags: info.Flags &^ unix.O_CLOEXEC}
		orig, err := d.sharedWith(i, table.Fds)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d (%s): %w", pid, f.Num, f.Target, err)
		}
		if orig != nil {
			// The description's kind, without a second copy of its data.
			dup := proto.CloneOf(orig)
			dup.Fd, dup.Cloexec, dup.DupOf = out.Fd, out.Cloexec, proto.Int32(orig.Fd)
			dup.Locks = nil // taken once, through the first fd
			if p := dup.GetPipe(); p != nil {
				p.Data = nil
			}
			if m := dup.GetMemfd(); m != nil {
				m.Data = nil
			}
			if df := dup.GetDeletedFile(); df != nil {
				df.Data = nil
			}
			table.Fds = append(table.Fds, dup)
			continue
		}
		local, err := unix.PidfdGetfd(pidfd, f.Num, 0)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d: pidfd_getfd: %w", pid, f.Num, os.NewSyscallError("pidfd_getfd", err))
		}
		l := &liveFd{num: f.Num, target: f.Target, info: info, local: local}
		var name string
		l.link, name, l.ino = proc.Kind(f.Target)
		l.anon = strings.Trim(name, "[]")
		err = d.dumpOne(l, out)
		if err == nil {
			err = d.dumpLocks(l, out) // lock.go
		}
		if err == nil {
			out.Owner, err = d.owner(local)
		}
		unix.Close(local)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d fd %d (%s): %w", pid, f.Num, f.Target, err)
		}
		table.Fds = append(table.Fds, out)
	}
	if err := opts.TCP.freeze(pid, table); err != nil {
		return nil, fmt.Errorf("dump pid %d: TCP connections: %w", pid, err)
	}
	return table, nil
}

// sharedWith returns the earlier fd of recorded that shares fd i's open
// file description (kcmp(2) KCMP_FILE), or nil. Only fds that show the
// same description state in /proc (link target, status flags, offset,
// inode, eventfd id) can share one, so only those are compared.
func (d *dumper) sharedWith(i int, recorded []*pb.Fd) (*pb.Fd, error) {
	same := func(a, b *proc.FdInfo) bool {
		return a.Flags&^unix.O_CLOEXEC == b.Flags&^unix.O_CLOEXEC && a.Pos == b.Pos && a.Ino == b.Ino && a.EventfdID == b.EventfdID
	}
	for j := 0; j < i; j++ {
		if d.fds[j].Target != d.fds[i].Target || recorded[j].DupOf != nil || !same(d.infos[i], d.infos[j]) {
			continue
		}
		same, err := kabi.KcmpFile(d.pid, d.pid, d.fds[j].Num, d.fds[i].Num)
		if err != nil {
			return nil, fmt.Errorf("compare with fd %d: %w", d.fds[j].Num, err)
		}
		if same {
			return recorded[j], nil
		}
	}
	return nil, nil
}

// owner reads who gets the description's SIGIO (fcntl(2) F_GETOWN_EX,
// F_GETSIG): nil when nobody and the default signal. Only the process
// itself, or in a tree another member (see DumpOptions.TreePids), can be
// restored as the owner.
func (d *dumper) owner(local int) (*pb.FdOwner, error) {
	o, err := kabi.FcntlGetOwnerEx(local)
	if err != nil {
		return nil, err
	}
	sig, err := unix.FcntlInt(uintptr(local), unix.F_GETSIG, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl F_GETSIG", err)
	}
	if o.Pid == 0 && sig == 0 {
		return nil, nil
	}
	if o.Pid != 0 && ((o.Pid != int32(d.pid) && !d.opts.TreePids[int(o.Pid)]) || o.Type == kabi.F_OWNER_PGRP) {
		kind := map[int32]string{kabi.F_OWNER_TID: "thread", kabi.F_OWNER_PID: "process", kabi.F_OWNER_PGRP: "process group"}[o.Type]
		if kind == "" {
			kind = fmt.Sprintf("owner of type %d", o.Type)
		}
		return nil, fmt.Errorf("%w: its signal-driven I/O (F_SETOWN_EX) goes to %s %d, not to the process itself: only the process (or a member of the dumped tree) is restored as the owner", ErrUnsupported, kind, o.Pid)
	}
	return &pb.FdOwner{Type: o.Type, Pid: o.Pid, Signal: int32(sig)}, nil
}

// dumpOne records l with the first kind that claims it.
func (d *dumper) dumpOne(l *liveFd, out *pb.Fd) error {
	if err := unix.Fstat(l.local, &l.st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if l.link == proc.KindFile {
		// A POSIX message queue (mq_open(3)) is a file of the kernel's
		// own mqueue mount: its link reads "/NAME", which names nothing
		// to reopen, and its messages would be lost.
		var fs unix.Statfs_t
		if err := unix.Fstatfs(l.local, &fs); err == nil && fs.Type == mqueueMagic {
			return fmt.Errorf("%w: POSIX message queue %s (mq_open): its queue and messages are not recorded", ErrUnsupported, l.target)
		}
	}
	for _, k := range kinds {
		if k.claims(l) {
			return k.dump(d, l, out)
		}
	}
	return refusal(l)
}

// mqueueMagic is MQUEUE_MAGIC (include/uapi/linux/magic.h), the f_type
// statfs(2) gives for a message queue.
const mqueueMagic = 0x19800202

// refusal says why no kind claimed l.
func refusal(l *liveFd) error {
	switch l.link {
	case proc.KindFile:
		switch {
		case strings.HasPrefix(l.target, "/memfd:"):
			return fmt.Errorf("%w: fd kind memfd", ErrUnsupported)
		case isDeleted(l):
			return fmt.Errorf("%w: the file was deleted", ErrUnsupported)
		case l.st.Mode&unix.S_IFMT == unix.S_IFBLK:
			return fmt.Errorf("%w: fd kind block device", ErrUnsupported)
		}
		return fmt.Errorf("%w: file type %#o", ErrUnsupported, l.st.Mode&unix.S_IFMT)
	case proc.KindAnonInode:
		return fmt.Errorf("%w: fd kind %s", ErrUnsupported, l.anon)
	}
	return fmt.Errorf("%w: fd kind %q", ErrUnsupported, l.target)
}

// isDeleted: the path the fd was opened by no longer names it.
func isDeleted(l *liveFd) bool {
	return strings.HasSuffix(l.target, " (deleted)") || l.st.Nlink == 0 && l.st.Mode&unix.S_IFMT == unix.S_IFREG
}

// isPath: l was opened by a path that still names it (not a memfd, not
// deleted).
func isPath(l *liveFd) bool {
	return l.link == proc.KindFile && !strings.HasPrefix(l.target, "/memfd:") && !isDeleted(l)
}

// fileID identifies the file l has open.
func fileID(l *liveFd) *pb.FileID {
	return &pb.FileID{Path: l.target, Dev: l.st.Dev, Inode: l.st.Ino, Size: uint64(l.st.Size), MtimeUnixNano: l.st.Mtim.Nano()}
}
