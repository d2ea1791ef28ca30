package dump

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"time"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// A dump takes the process and all its descendants: the tree. Each member
// is frozen before its children are listed (/proc/PID/task/TID/children),
// so a frozen parent cannot fork a member we would miss, and a child that
// exits meanwhile stays a zombie its frozen parent cannot reap: the listing
// is exact. Members are kept in breadth-first order, parents before their
// children, which is the order restore clones them in.

// maxMembers bounds the size of a tree (each member is a frozen process and
// one more ptrace tracee of the tracer thread).
const maxMembers = 512

// recordSession adds what /proc/PID/status says of pid's process group and
// session in each PID namespace (NSpgid, NSsid; proc(5)): a restore into a
// fresh PID namespace needs the process's own view.
func recordSession(pid int, p *pb.Process) error {
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return fmt.Errorf("dump pid %d: read status: %w", pid, err)
	}
	p.NsPgid, p.NsSid = u32s(st.NSpgid), u32s(st.NSsid)
	return nil
}

// freezeTree freezes every descendant of the (frozen) root.
func (cp *Checkpoint) freezeTree() error {
	queue := []*Checkpoint{cp}
	for i := 0; i < len(queue); i++ {
		parent := queue[i]
		if parent.zombie {
			continue
		}
		kids, err := proc.Children(parent.pid)
		if err != nil {
			return fmt.Errorf("dump pid %d: list children of pid %d: %w", cp.pid, parent.pid, err)
		}
		for _, k := range kids {
			if len(cp.members)+1 >= maxMembers {
				return fmt.Errorf("dump pid %d: %w: the process tree has more than %d processes", cp.pid, ErrUnsupported, maxMembers)
			}
			m, err := cp.freezeMember(k)
			if m == nil && (errors.Is(err, inject.ErrNoProcess) || errors.Is(err, fs.ErrNotExist)) {
				// The child is exiting: its parent is frozen, so it becomes
				// a zombie (recorded as one) unless it is reaped already
				// (SIGCHLD ignored: then it is no longer part of the tree).
				var gone bool
				m, gone, err = cp.freezeExiting(k, err)
				if gone {
					cp.opts.Log.Debug().Int("pid", k).Int("parent", parent.pid).Msg("child exited and was reaped before it could be frozen")
					continue
				}
			}
			if m != nil {
				// Released with the others whatever happens next.
				cp.members = append(cp.members, m)
				queue = append(queue, m)
			}
			if err != nil {
				return err
			}
		}
	}
	if len(cp.members) > 0 {
		cp.opts.Log.Debug().Int("pid", cp.pid).Ints("members", cp.memberPids()).Msg("process tree frozen")
	}
	return nil
}

// exitingTimeout bounds how long freezeExiting waits for an exiting child
// to become a zombie.
const exitingTimeout = time.Second

// freezeExiting freezes child pid, whose seize failed with err because it
// is exiting, once it is a zombie; gone reports that it no longer exists
// (auto-reaped). The parent is frozen: the child cannot be reaped by it.
func (cp *Checkpoint) freezeExiting(pid int, err error) (m *Checkpoint, gone bool, _ error) {
	deadline := time.Now().Add(exitingTimeout)
	for {
		if _, serr := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(serr, fs.ErrNotExist) {
			return nil, true, nil
		}
		if time.Now().After(deadline) {
			return nil, false, fmt.Errorf("dump pid %d: child pid %d exiting for %v without becoming a zombie: %w", cp.pid, pid, exitingTimeout, err)
		}
		time.Sleep(time.Millisecond) // poll interval: the exit completes on its own
		m, err = cp.freezeMember(pid)
		if m != nil || !(errors.Is(err, inject.ErrNoProcess) || errors.Is(err, fs.ErrNotExist)) {
			return m, false, err
		}
	}
}

func (cp *Checkpoint) memberPids() []int {
	out := make([]int, len(cp.members))
	for i, m := range cp.members {
		out[i] = m.pid
	}
	return out
}

// freezeMember freezes descendant pid, or records it as a zombie.
func (cp *Checkpoint) freezeMember(pid int) (*Checkpoint, error) {
	m := &Checkpoint{pid: pid, opts: cp.opts, tracer: cp.tracer, frozenAt: cp.frozenAt, eager: map[uint32][]eagerRun{}, pre: cp.pre}
	m.opts.PID = pid
	// In a lazy dump every member's memory is served lazily too (see
	// lazy.go); each stays frozen with the root until DONE.
	st, err := proc.ReadStatus(pid)
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: child pid %d: %w", cp.pid, pid, err)
	}
	if st.State == 'Z' && st.Threads <= 1 {
		m.zombie = true
		return m, nil
	}
	if st.TracerPid != 0 {
		return nil, fmt.Errorf("dump pid %d: child pid %d: %w by pid %d", cp.pid, pid, inject.ErrTraced, st.TracerPid)
	}
	p, err := cp.tracer.Seize(pid)
	if errors.Is(err, inject.ErrZombie) {
		m.zombie = true
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("dump pid %d: freeze child pid %d: %w", cp.pid, pid, err)
	}
	m.proc = p
	if s, err := proc.ReadStat(pid); err == nil {
		m.startTime = s.StartTime
	}
	return m, nil
}

// collectAll reads the root, then every member, into one image set, then
// what members share.
func (cp *Checkpoint) collectAll(ctx context.Context) error {
	live := map[int]bool{cp.pid: true}
	for _, m := range cp.members {
		if !m.zombie {
			live[m.pid] = true
		}
	}
	if err := cp.refuseSyscallUserDispatch(); err != nil {
		return err
	}
	if err := cp.refuseSharedContexts(); err != nil {
		return err
	}
	if err := cp.refuseThreadContexts(); err != nil {
		return err
	}
	if err := cp.refuseSemUndo(live); err != nil {
		return err
	}
	if len(cp.members) > 0 {
		socks, err := cp.memberSockets()
		if err != nil {
			return err
		}
		cp.treeSockets, cp.treePids = socks, live
		for _, m := range cp.members {
			m.treeSockets, m.treePids = socks, live
		}
	}
	if err := cp.collect(ctx); err != nil {
		return err
	}
	for _, m := range cp.members {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dump pid %d: %w", cp.pid, err)
		}
		if m.zombie {
			z, err := zombieProcess(m.pid)
			if err != nil {
				return fmt.Errorf("dump pid %d: %w", cp.pid, err)
			}
			cp.Set.Tree.Processes = append(cp.Set.Tree.Processes, z)
			cp.Set.Memory[uint32(m.pid)] = &pb.MemoryMap{Pid: uint32(m.pid)}
			cp.Set.Fds[uint32(m.pid)] = &pb.FdTable{Pid: uint32(m.pid)}
			continue
		}
		if err := m.collect(ctx); err != nil {
			return err
		}
		p := uint32(m.pid)
		cp.Set.Tree.Processes = append(cp.Set.Tree.Processes, m.Set.Tree.Processes...)
		cp.Set.Memory[p] = m.Set.Memory[p]
		cp.Set.Fds[p] = m.Set.Fds[p]
		cp.eager[p] = m.eager[p]
		st := &cp.Stats
		st.Threads += m.Stats.Threads
		st.VMAs += m.Stats.VMAs
		st.PagesEager += m.Stats.PagesEager
		st.PagesLazy += m.Stats.PagesLazy
		st.PagesZero += m.Stats.PagesZero
		st.PagesFile += m.Stats.PagesFile
		st.PagesPopulated += m.Stats.PagesPopulated
		st.VMAReadTime += m.Stats.VMAReadTime
		if m.Stats.VMARead == VMAReadSmaps {
			st.VMARead = VMAReadSmaps
		}
	}
	if err := cp.collectShm(); err != nil {
		return err
	}
	if err := files.CheckPtys(cp.Set.Tree.Processes, cp.Set.Fds); err != nil {
		return fmt.Errorf("dump pid %d: %w", cp.pid, err)
	}
	if len(cp.members) == 0 {
		return nil
	}
	return cp.collectTree()
}

// zombieProcess records a member that has exited and waits for its
// parent (a member) to reap it: what wait(2) would tell the parent.
func zombieProcess(pid int) (*pb.Process, error) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return nil, fmt.Errorf("read stat of zombie pid %d: %w", pid, err)
	}
	if st.State != 'Z' {
		return nil, fmt.Errorf("pid %d: state %c, expected a zombie", pid, st.State)
	}
	z := &pb.Process{
		Pid: uint32(pid), Ppid: uint32(st.Ppid), Pgid: uint32(st.Pgrp), Sid: uint32(st.Session), Comm: st.Comm,
		StartTime: st.StartTime, Zombie: true, ExitCode: int32(st.ExitCode),
		Threads: []*pb.Thread{{Tid: uint32(pid), Regs: &pb.Registers{}}},
	}
	// Its pid in each PID namespace too (a zombie's status still has
	// them, proc(5)): restored into a fresh namespace it must get the pid
	// its parent knows it by, or the parent's wait for it fails ECHILD.
	ids, err := proc.ReadStatus(pid)
	if err != nil {
		return nil, fmt.Errorf("read status of zombie pid %d: %w", pid, err)
	}
	z.NsPid, z.NsPgid, z.NsSid = u32s(ids.NSpid), u32s(ids.NSpgid), u32s(ids.NSsid)
	return z, nil
}

// liveRef is one fd of a member, with its link target.
type liveRef struct {
	pid    int
	fd     *pb.Fd
	target string
}

// collectTree records what members share: pipes between them (made once
// on restore, with their buffered data), open file descriptions inherited
// across fork (one description on restore). Shared memory is recorded by
// collectShm (shm.go).
func (cp *Checkpoint) collectTree() error {
	set := cp.Set
	var live []*pb.Process
	for _, p := range set.Tree.Processes {
		if !p.Zombie {
			live = append(live, p)
		}
	}
	// Established TCP connections: each member's are locked, held and
	// restored as a single process's are (its own TCPDump, held lock and
	// TCPRestore, which a lazy target takes per member: restore's
	// TCPRestore.LockFor).
	if err := refuseOtherNamespaces(cp.pid, live); err != nil {
		return err
	}
	if err := refuseForeignSessions(cp.pid, set.Tree.Processes); err != nil {
		return err
	}
	// Every fd of every member, with its /proc link target.
	var refs []liveRef
	pipeMembers := map[uint64]map[uint32]bool{}
	pipeEnds := map[uint64]map[uint32]*[2]bool{} // which ends each member holds (O_RDWR: both)
	for _, p := range live {
		fds, err := proc.ReadFds(int(p.Pid))
		if err != nil {
			return fmt.Errorf("dump pid %d: list fds of pid %d: %w", cp.pid, p.Pid, err)
		}
		target := map[int32]string{}
		for _, f := range fds {
			target[int32(f.Num)] = f.Target
		}
		for _, f := range set.Fds[p.Pid].GetFds() {
			refs = append(refs, liveRef{pid: int(p.Pid), fd: f, target: target[f.Fd]})
			if pp := f.GetPipe(); pp != nil && pp.FifoPath == "" {
				if pipeMembers[pp.Inode] == nil {
					pipeMembers[pp.Inode] = map[uint32]bool{}
				}
				pipeMembers[pp.Inode][p.Pid] = true
				if pipeEnds[pp.Inode] == nil {
					pipeEnds[pp.Inode] = map[uint32]*[2]bool{}
				}
				e := pipeEnds[pp.Inode][p.Pid]
				if e == nil {
					e = &[2]bool{}
					pipeEnds[pp.Inode][p.Pid] = e
				}
				switch {
				case pp.WriteEnd:
					e[1] = true
				case f.Flags&unix.O_ACCMODE == unix.O_RDWR:
					e[0], e[1] = true, true
				default:
					e[0] = true
				}
			}
		}
	}
	members := map[int]bool{}
	for _, p := range set.Tree.Processes {
		members[int(p.Pid)] = true
	}
	// Pipes held by more than one member. One that processes outside the
	// tree hold too is recorded with them: restore rejoins the live pipe
	// through one of them (on the same boot), so that every member's end
	// is again the one pipe the outside process reads or writes. Left to
	// each member's own fds, a member holding both ends would get a fresh
	// pipe, and members holding one end each would get two. So is a pipe
	// one member holds both ends of, when outside processes hold it too
	// (files would give that member a fresh pipe); one end only is left
	// to files, which rejoins it on its own (livepipe.go).
	cand, both := map[uint64]bool{}, map[uint64]bool{}
	for ino, ms := range pipeMembers {
		if len(ms) > 1 {
			cand[ino] = true
			continue
		}
		for _, e := range pipeEnds[ino] {
			if e[0] && e[1] {
				both[ino] = true
			}
		}
	}
	held := maps.Clone(cand)
	maps.Copy(held, both)
	outside := files.PipeHolders(held, members)
	for ino := range both {
		if len(outside[ino]) > 0 {
			cand[ino] = true
		}
	}
	treePipes := map[uint64]*pb.TreePipe{}
	for _, r := range refs {
		pp := r.fd.GetPipe()
		if pp == nil || !cand[pp.Inode] {
			continue
		}
		tp := treePipes[pp.Inode]
		if tp == nil {
			tp = &pb.TreePipe{Inode: pp.Inode, Outside: outside[pp.Inode]}
			treePipes[pp.Inode] = tp
			set.Tree.Pipes = append(set.Tree.Pipes, tp)
		}
		tp.Capacity = max(tp.Capacity, pp.Capacity)
		if len(pp.Data) > 0 {
			tp.Data = pp.Data
		}
	}
	for ino, tp := range treePipes {
		if tp.Data != nil {
			continue
		}
		for _, r := range refs {
			if pp := r.fd.GetPipe(); pp != nil && pp.Inode == ino && !pp.WriteEnd {
				data, err := peekPipeOf(r.pid, int(r.fd.Fd), int(tp.Capacity))
				if err != nil {
					return fmt.Errorf("dump pid %d: pid %d fd %d (pipe:[%d]): copy buffered data: %w", cp.pid, r.pid, r.fd.Fd, ino, err)
				}
				tp.Data = data
				break
			}
		}
	}
	for _, r := range refs {
		if pp := r.fd.GetPipe(); pp != nil && treePipes[pp.Inode] != nil {
			// The tree's record holds the data; the holders were members.
			pp.Data, pp.Holders = nil, nil
		}
	}
	for ino, hs := range outside {
		cp.opts.Log.Debug().Uint64("pipe", ino).Uint32("holder", hs[0].Pid).Int("holders", len(hs)).
			Msg("pipe between members is also held outside the tree: restore rejoins the live pipe through a holder")
	}
	slices.SortFunc(set.Tree.Pipes, func(a, b *pb.TreePipe) int { return cmp.Compare(a.Inode, b.Inode) })

	// Open file descriptions shared across members (kcmp KCMP_FILE; only
	// fds with the same link target can share one).
	var owners []liveRef
	shared := map[[2]int64]*pb.SharedFile{}
	for _, r := range refs {
		if r.fd.DupOf != nil {
			continue // a dup inside its member: it follows its original
		}
		if pp := r.fd.GetPipe(); pp != nil && treePipes[pp.Inode] != nil {
			continue
		}
		var owner *liveRef
		for i := range owners {
			o := &owners[i]
			if o.pid == r.pid || o.target != r.target {
				continue
			}
			same, err := kabi.KcmpFile(o.pid, r.pid, int(o.fd.Fd), int(r.fd.Fd))
			if err != nil {
				return fmt.Errorf("dump pid %d: compare pid %d fd %d with pid %d fd %d: %w", cp.pid, o.pid, o.fd.Fd, r.pid, r.fd.Fd, err)
			}
			if same {
				owner = o
				break
			}
		}
		if owner == nil {
			owners = append(owners, r)
			continue
		}
		k := [2]int64{int64(owner.pid), int64(owner.fd.Fd)}
		sf := shared[k]
		if sf == nil {
			sf = &pb.SharedFile{Owner: &pb.FdRef{Pid: uint32(owner.pid), Fd: owner.fd.Fd}}
			shared[k] = sf
			set.Tree.SharedFiles = append(set.Tree.SharedFiles, sf)
		}
		sf.Users = append(sf.Users, &pb.FdRef{Pid: uint32(r.pid), Fd: r.fd.Fd})
	}
	split, err := checkMade(cp.pid, refs, set.Tree.SharedFiles)
	if err != nil {
		return err
	}
	set.Tree.SplitPairs = split
	return nil
}

// memberSockets lists the socket inodes that the root and its live
// members hold (all frozen).
func (cp *Checkpoint) memberSockets() (map[uint64]bool, error) {
	socks := map[uint64]bool{}
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if m.zombie {
			continue
		}
		fds, err := proc.ReadFds(m.pid)
		if err != nil {
			return nil, fmt.Errorf("dump pid %d: list fds of pid %d: %w", cp.pid, m.pid, err)
		}
		for _, f := range fds {
			if k, _, ino := proc.Kind(f.Target); k == proc.KindSocket {
				socks[ino] = true
			}
		}
	}
	return socks, nil
}

// checkMade refuses what no member can make on restore, and returns the
// unix socket pairs split across members. A unix socket a member makes
// itself (not a description it takes from another member, not a dup)
// has its peer among the sockets that member makes too (files'
// socketpair), or among those another member makes: a split pair
// (socketpair then fork, each keeping one end), made on restore by the
// member that comes first in tree order, which gives the other its end.
// A description a member makes has that member as its signal-driven I/O
// owner, if any (files' setOwner gives it the restored process's pid);
// an end of a split pair has none (the end is handed over ready-made).
// nginx passes: its master holds both ends of every worker's channel,
// owns them, and the workers share them.
// pairEnd tells an end of an unnamed connected pair (socketpair(2)): no
// name, not a listener or accepted from one, its peer dumped and alive.
func pairEnd(s *pb.UnixSocket) bool {
	return s.Peer != 0 && len(s.Name) == 0 && !s.Listening && s.Listener == 0 && !s.Accepted &&
		s.External == nil && !s.PeerClosed && len(s.DeadPeerName) == 0
}

func checkMade(root int, refs []liveRef, shared []*pb.SharedFile) ([]*pb.SplitPair, error) {
	users := map[[2]int64]bool{}
	for _, sf := range shared {
		for _, u := range sf.Users {
			users[[2]int64{int64(u.Pid), int64(u.Fd)}] = true
		}
	}
	made := map[int]map[uint64]bool{} // pid → unix inodes it makes
	maker := map[uint64]liveRef{}     // unix inode → the fd that makes it
	var own []liveRef
	for _, r := range refs {
		if r.fd.DupOf != nil || users[[2]int64{int64(r.pid), int64(r.fd.Fd)}] {
			continue
		}
		if o := r.fd.Owner; o != nil && o.Pid != 0 && int(o.Pid) != r.pid {
			return nil, fmt.Errorf("dump pid %d: %w: pid %d fd %d: its signal-driven I/O owner is pid %d, another member, which does not share the description",
				root, ErrUnsupported, r.pid, r.fd.Fd, o.Pid)
		}
		s := r.fd.GetUnixSocket()
		if s == nil {
			continue
		}
		if made[r.pid] == nil {
			made[r.pid] = map[uint64]bool{}
		}
		made[r.pid][s.Inode] = true
		if _, ok := maker[s.Inode]; !ok {
			maker[s.Inode] = r
		}
		own = append(own, r)
	}
	var split []*pb.SplitPair
	paired := map[uint64]bool{}
	for _, r := range own {
		s := r.fd.GetUnixSocket()
		// Listeners, bound or accepted sockets, peers outside the tree
		// or gone are files' (unixlisten.go, unixext.go, unixdead.go),
		// which refuses what crosses members; only an unnamed pair end
		// can be half of a split pair.
		if !pairEnd(s) || made[r.pid][s.Peer] || paired[s.Inode] {
			continue
		}
		peer, ok := maker[s.Peer]
		if ok && !pairEnd(peer.fd.GetUnixSocket()) {
			return nil, fmt.Errorf("dump pid %d: %w: fd kind unix socket: pid %d fd %d (socket:[%d]) is connected to socket:[%d] of pid %d, a named or accepted socket of another member; not restored across members yet",
				root, ErrUnsupported, r.pid, r.fd.Fd, s.Inode, s.Peer, peer.pid)
		}
		if !ok {
			return nil, fmt.Errorf("dump pid %d: %w: fd kind unix socket: pid %d fd %d (socket:[%d]) is connected to socket:[%d], which no member holds as its own description",
				root, ErrUnsupported, r.pid, r.fd.Fd, s.Inode, s.Peer)
		}
		for _, e := range []liveRef{r, peer} {
			if o := e.fd.Owner; o != nil && o.Pid != 0 {
				return nil, fmt.Errorf("dump pid %d: %w: fd kind unix socket: pid %d fd %d (socket:[%d]) has a signal-driven I/O owner (pid %d) and its pair's other end is another member's; such an end is not restored yet",
					root, ErrUnsupported, e.pid, e.fd.Fd, e.fd.GetUnixSocket().Inode, o.Pid)
			}
		}
		paired[s.Inode], paired[s.Peer] = true, true
		split = append(split, &pb.SplitPair{
			Maker: &pb.FdRef{Pid: uint32(r.pid), Fd: r.fd.Fd},
			Peer:  &pb.FdRef{Pid: uint32(peer.pid), Fd: peer.fd.Fd},
		})
	}
	return split, nil
}

// peekPipeOf returns the bytes buffered in the pipe whose read end is fd of
// pid, without consuming them: a pidfd_getfd(2) copy of the end is tee(2)d
// into a pipe of lazycr's (the members are frozen: nobody else reads).
func peekPipeOf(pid, fd, capacity int) ([]byte, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, os.NewSyscallError("pidfd_getfd", err)
	}
	defer unix.Close(local)
	n, err := unix.IoctlGetInt(local, unix.TIOCINQ) // FIONREAD
	if err != nil {
		return nil, os.NewSyscallError("ioctl FIONREAD", err)
	}
	if n == 0 {
		return nil, nil
	}
	if n > image.MaxTreePipeData {
		return nil, fmt.Errorf("%w: %d bytes buffered, more than %d", ErrUnsupported, n, image.MaxTreePipeData)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, max(capacity, n)); err != nil {
		return nil, fmt.Errorf("grow pipe to %d bytes (fs.pipe-max-size?): %w", max(capacity, n), os.NewSyscallError("fcntl F_SETPIPE_SZ", err))
	}
	got, err := unix.Tee(local, p[1], n, unix.SPLICE_F_NONBLOCK)
	if err != nil {
		return nil, os.NewSyscallError("tee", err)
	}
	if int(got) < n {
		return nil, fmt.Errorf("tee copied %d of %d buffered bytes", got, n)
	}
	buf := make([]byte, got)
	for off := 0; off < len(buf); {
		m, err := unix.Read(p[0], buf[off:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("read", err)
		}
		if m == 0 {
			return nil, fmt.Errorf("read %d of %d teed bytes", off, len(buf))
		}
		off += m
	}
	return buf, nil
}

// member returns the checkpoint of member pid (the root's own for the
// root): the one whose frozen process holds pid's memory.
func (cp *Checkpoint) member(pid uint32) *Checkpoint {
	for _, m := range cp.members {
		if uint32(m.pid) == pid {
			return m
		}
	}
	return cp
}

// refuseForeignSessions refuses a member (zombies included) in a session
// other than its parent's that it does not lead (its parent made a session
// of its own after forking it, setsid(2)): restore clones every member from
// its parent, so a member can only be in its parent's session or one it
// makes itself (restore/tree.go refuses the same).
func refuseForeignSessions(root int, procs []*pb.Process) error {
	sid := map[uint32]uint32{}
	for _, p := range procs {
		sid[p.Pid] = p.Sid
	}
	for _, p := range procs {
		if int(p.Pid) == root {
			continue
		}
		if ps, ok := sid[p.Ppid]; ok && p.Sid != ps && p.Sid != p.Pid {
			return fmt.Errorf("dump pid %d: %w: pid %d is in session %d, its parent pid %d in session %d, and it does not lead its session: not supported yet",
				root, ErrUnsupported, p.Pid, p.Sid, p.Ppid, ps)
		}
	}
	return nil
}

// refuseOtherNamespaces refuses a member in namespaces other than the
// root's (a child made with unshare or clone flags): restore builds every
// member in the root's.
func refuseOtherNamespaces(root int, live []*pb.Process) error {
	r := live[0].GetNamespaces()
	for _, p := range live[1:] {
		n := p.GetNamespaces()
		for _, ns := range []struct {
			name string
			a, b uint64
		}{
			{"net", r.GetNet(), n.GetNet()}, {"pid", r.GetPid(), n.GetPid()}, {"mnt", r.GetMnt(), n.GetMnt()},
			{"uts", r.GetUts(), n.GetUts()}, {"ipc", r.GetIpc(), n.GetIpc()}, {"user", r.GetUser(), n.GetUser()},
			{"cgroup", r.GetCgroup(), n.GetCgroup()}, {"time", r.GetTime(), n.GetTime()},
		} {
			if ns.a != ns.b {
				return fmt.Errorf("dump pid %d: %w: pid %d is in %s namespace %d, the root pid %d in %d; members in namespaces of their own are not restored yet",
					root, ErrUnsupported, p.Pid, ns.name, ns.b, root, ns.a)
			}
		}
	}
	return nil
}

// writeMemberPages writes the eager pages of member pid from its own
// frozen process, and keeps the root's record of them (its eager runs and
// page counts) in step with what writing them changed.
func (cp *Checkpoint) writeMemberPages(ctx context.Context, w pageAppender, pid uint32) error {
	m := cp.member(pid)
	if m == cp {
		return cp.writePages(ctx, w, pid)
	}
	before := m.Stats
	err := m.writePages(ctx, w, pid)
	cp.eager[pid] = m.eager[pid]
	cp.Stats.PagesEager += m.Stats.PagesEager - before.PagesEager
	cp.Stats.PagesZero += m.Stats.PagesZero - before.PagesZero
	return err
}
