package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/lazycr/lazycr/cgroup"
	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/internal/failpoint"
	"golang.org/x/sys/unix"
)

// Process trees. The root is made as a single process is (a stub, then a
// clone3 set_tid copy of it in its session and group, see takePID). Before
// anything of it is rebuilt, every other member is cloned, in the image's
// order (parents before children), from inside its own parent, a copy of
// the stub too: clone3 set_tid gives it its pid and the fork its parent,
// so getppid is exact. A member that led its session calls setsid(2) at
// once, before its own children are cloned (they inherit the session);
// once every member exists, each joins its process group (leaders first).
// Zombies then exit with their recorded status (their parent reaps them
// when it wants, as it would have). Each live member is then rebuilt by
// the same steps as a single process; fds that members share come from
// the member that made them (pidfd_getfd(2) into lazycr, SCM_RIGHTS into
// the next), pipes between members are made by lazycr with their data
// (or rejoined, when processes outside the tree hold them too), socket
// pairs split across members are made in the first member holding one
// end and handed to both.

// tree is the state of a tree restore, held by the root.
type tree struct {
	procs   map[uint32]*inject.Process // image pid → the process (root included)
	members []*Process                 // live members but the root, in image order
	zombies []*pb.Process
	pipes   map[uint64][2]int // lazycr's read and write ends of pipes between members
	pipeRW  map[uint64]int    // lazycr's read-write description of such a pipe, if an fd has one
	split   map[[2]int64]int  // (pid, fd) of an end of a split socket pair → lazycr's copy
	closers []func()
}

// checkTreeOptions refuses what a tree restore does not do yet.
func checkTreeOptions(set *image.Set, opts Options) error {
	n := len(set.Tree.Processes)
	if n == 1 {
		return nil
	}
	switch {
	case opts.NewPID:
		return fmt.Errorf("restore: %d processes in the image: --new-pid with a process tree is not supported yet", n)
	}
	return nil
}

// lockMembersTCP takes, for a lazy migration, each live member's own lock
// of its TCP connections in lazycr's network namespace, as Build does the
// root's (files.TCPRestore.LockFor): before Prepare (netfix's address
// takeover) makes their local addresses live here, so that a peer's
// segment arriving before its connection is re-created is dropped, not
// answered with a reset. Each member's connections then go live, and its
// lock goes, in resumeMembers; a failed restore aborts them (the undo
// pushed here, and killMembers).
func (r *Process) lockMembersTCP(undo *undoStack) error {
	procs := r.set.Tree.GetProcesses()
	if len(procs) < 2 {
		return nil
	}
	r.memberTCP = map[uint32]*files.TCPRestore{}
	for _, img := range procs[1:] {
		if img.Zombie {
			continue
		}
		t := files.NewTCPRestore(r.opts.Log)
		if err := t.LockFor(r.set.Fds[img.Pid]); err != nil {
			return fmt.Errorf("restore: lock TCP connections of pid %d: %w", img.Pid, err)
		}
		undo.push(t.Abort)
		r.memberTCP[img.Pid] = t
	}
	return nil
}

// cloneMembers creates every member but the root from inside its parent
// and puts it into its session and process group; zombies exit.
func (r *Process) cloneMembers(undo *undoStack) error {
	procs := r.set.Tree.Processes
	if len(procs) == 1 {
		return nil
	}
	t := &tree{procs: map[uint32]*inject.Process{r.img.Pid: r.b.p}, pipes: map[uint64][2]int{}, pipeRW: map[uint64]int{}, split: map[[2]int64]int{}}
	r.tree = t
	undo.push(func() {
		for _, m := range t.members {
			killTraced(m.b.p, r.opts.Log)
		}
	})
	byPid := map[uint32]*pb.Process{}
	for _, p := range procs {
		byPid[p.Pid] = p
	}
	pidns := r.opts.PIDNS
	var made []*pb.Process
	for _, img := range procs[1:] {
		parent := t.procs[img.Ppid]
		pimg := byPid[img.Ppid]
		if parent == nil || pimg == nil {
			return fmt.Errorf("restore pid %d: its parent pid %d is not restored before it", img.Pid, img.Ppid)
		}
		own := nsPid(img, pidns)
		if !pidns {
			if err := pidFree(own); err != nil {
				return err
			}
		}
		c, err := parent.CloneProcess(own, 0)
		if err != nil {
			if errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("restore: %w: pid %d is in use here: %v", ErrPIDTaken, own, err)
			}
			return fmt.Errorf("restore pid %d: clone it from its parent pid %d: %w", img.Pid, img.Ppid, err)
		}
		t.procs[img.Pid] = c
		if err := cgroup.RestoreChild(c.Pid, img.GetCgroups(), pimg.GetCgroups(), r.opts.Log); err != nil {
			killTraced(c, r.opts.Log)
			return fmt.Errorf("restore pid %d: %w", img.Pid, err)
		}
		if img.Zombie {
			t.zombies = append(t.zombies, img)
			undo.push(func() { killTraced(c, r.opts.Log) })
		} else {
			scratch, err := c.Scratch()
			if err != nil {
				killTraced(c, r.opts.Log)
				return err
			}
			m := &Process{opts: r.opts, set: r.set, img: img, mm: r.set.Memory[img.Pid], fds: r.set.Fds[img.Pid],
				tracer: r.tracer, tids: map[uint32]int{}, stubExe: r.stubExe, started: r.started, shm: r.shm, ubinds: r.ubinds,
				b: &builder{p: c, pid: c.Pid, scratch: scratch}}
			m.opts.Pages = nil
			m.tcp = r.memberTCP[img.Pid] // nil: restoreFds makes one
			t.members = append(t.members, m)
		}
		made = append(made, img)
		ids, pids := r.wantSession(img), r.wantSession(pimg)
		switch {
		case ids.sid == own:
			if _, err := c.Syscall(c.Pid, unix.SYS_SETSID); err != nil {
				return fmt.Errorf("restore pid %d: setsid: %w", img.Pid, err)
			}
			if !img.Zombie {
				if err := t.members[len(t.members)-1].takeCtty(); err != nil {
					return err
				}
			}
		case ids.sid != pids.sid:
			return fmt.Errorf("restore pid %d: it is in session %d, its parent pid %d in session %d, and it does not lead its session: not supported yet", img.Pid, ids.sid, img.Ppid, pids.sid)
		}
	}
	// Groups: the leaders first, so that the others find their group.
	for _, leaders := range []bool{true, false} {
		for _, img := range made {
			ids, own := r.wantSession(img), nsPid(img, pidns)
			if (ids.pgid == own) != leaders || ids.sid == own || ids.pgid == 0 {
				continue
			}
			c := t.procs[img.Pid]
			cur, err := c.Syscall(c.Pid, unix.SYS_GETPGID, 0)
			if err != nil {
				return fmt.Errorf("restore pid %d: getpgid: %w", img.Pid, err)
			}
			if int(cur) == ids.pgid {
				continue
			}
			arg := uintptr(ids.pgid)
			if leaders {
				arg = 0
			}
			_, err = c.Syscall(c.Pid, unix.SYS_SETPGID, 0, arg)
			if errors.Is(err, unix.EPERM) && !leaders {
				// No such group in the session: its leader was not
				// dumped and no member has made it yet.
				err = r.groupByHelper(t.procs[img.Ppid], c, ids.pgid)
			}
			if err != nil {
				return fmt.Errorf("restore pid %d: setpgid(0, %d): %w", img.Pid, ids.pgid, err)
			}
		}
	}
	for _, img := range made {
		if err := checkSession(t.procs[img.Pid].Pid, r.wantSession(img), pidns); err != nil {
			return err
		}
	}
	for _, z := range t.zombies {
		if err := r.makeZombie(z); err != nil {
			return err
		}
	}
	return r.makeSplitPairs()
}

// makeSplitPairs makes each unix socket pair whose ends two members hold
// inside the member that makes it (still a copy of the stub: the pair's
// SO_PEERCRED names it, as it named the process that called
// socketpair(2), unix(7)), takes both ends into lazycr (pidfd_getfd(2))
// and closes them there, gives them their options, queued bytes and
// shutdown state (files.ConfigurePair) and each end its status flags
// (fcntl(2) F_SETFL); each member then gets its end as a given fd.
func (r *Process) makeSplitPairs() error {
	t := r.tree
	fdOf := func(ref *pb.FdRef) *pb.Fd {
		for _, f := range r.set.Fds[ref.Pid].GetFds() {
			if f.Fd == ref.Fd {
				return f
			}
		}
		return nil
	}
	for _, sp := range r.set.Tree.SplitPairs {
		ends := [2]*pb.Fd{fdOf(sp.Maker), fdOf(sp.Peer)}
		c := t.procs[sp.Maker.Pid]
		if c == nil || ends[0] == nil || ends[1] == nil {
			return fmt.Errorf("restore pid %d fd %d: its socket pair with pid %d fd %d is not in the image", sp.Maker.GetPid(), sp.Maker.GetFd(), sp.Peer.GetPid(), sp.Peer.GetFd())
		}
		what := fmt.Sprintf("unix socket pair of pid %d fd %d and pid %d fd %d", sp.Maker.Pid, sp.Maker.Fd, sp.Peer.Pid, sp.Peer.Fd)
		local, err := r.makePairIn(c, ends[0].GetUnixSocket().Type)
		if err != nil {
			return fmt.Errorf("restore: create %s: %w", what, err)
		}
		t.closers = append(t.closers, func() { unix.Close(local[0]); unix.Close(local[1]) })
		if err := files.ConfigurePair(local, ends, what); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		for i, f := range ends {
			if _, err := unix.FcntlInt(uintptr(local[i]), unix.F_SETFL, int(f.Flags&^unix.O_CLOEXEC)); err != nil {
				return fmt.Errorf("restore: set flags %#o of fd %d (%s): %w", f.Flags, f.Fd, what, os.NewSyscallError("fcntl F_SETFL", err))
			}
		}
		t.split[[2]int64{int64(sp.Maker.Pid), int64(sp.Maker.Fd)}] = local[0]
		t.split[[2]int64{int64(sp.Peer.Pid), int64(sp.Peer.Fd)}] = local[1]
		r.opts.Log.Debug().Str("pair", what).Msg("socket pair split across members made")
	}
	return nil
}

// makePairIn runs socketpair(2) (non-blocking, close-on-exec) in c and
// returns lazycr's copies of both ends; c's own are closed again.
func (r *Process) makePairIn(c *inject.Process, typ int32) (local [2]int, err error) {
	scratch, err := c.Scratch()
	if err != nil {
		return local, err
	}
	if _, err := c.Syscall(c.Pid, unix.SYS_SOCKETPAIR, unix.AF_UNIX, uintptr(typ)|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0, scratch); err != nil {
		return local, err
	}
	b := make([]byte, 8)
	if err := c.ReadMem(scratch, b); err != nil {
		return local, err
	}
	remote := [2]uintptr{uintptr(binary.LittleEndian.Uint32(b)), uintptr(binary.LittleEndian.Uint32(b[4:]))}
	local = [2]int{-1, -1}
	for i, fd := range remote {
		if err == nil {
			local[i], err = takeFd(c.Pid, int(fd))
		}
		if _, cerr := c.Syscall(c.Pid, unix.SYS_CLOSE, fd); cerr != nil && err == nil {
			err = fmt.Errorf("close fd %d in pid %d: %w", fd, c.Pid, cerr)
		}
	}
	if err != nil {
		for _, fd := range local {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		return [2]int{-1, -1}, err
	}
	return local, nil
}

// makeZombie ends the copy that stands for zombie z with z's wait status
// and takes the SIGCHLD this sends its parent back out of the parent (the
// parent's own pending signals, SIGCHLD included, are queued again from
// the image later).
func (r *Process) makeZombie(z *pb.Process) error {
	t := r.tree
	c := t.procs[z.Pid]
	parent := t.procs[z.Ppid]
	if err := c.Exit(int(z.ExitCode)); err != nil {
		return fmt.Errorf("restore zombie pid %d: %w", z.Pid, err)
	}
	if err := takeSigchld(parent); err != nil {
		return fmt.Errorf("restore zombie pid %d: take its SIGCHLD from pid %d: %w", z.Pid, z.Ppid, err)
	}
	r.opts.Log.Debug().Uint32("pid", z.Pid).Uint32("parent", z.Ppid).Int32("status", z.ExitCode).Msg("zombie recreated")
	return nil
}

// takeSigchld takes back the SIGCHLD a child's exit sent parent (a copy of
// the stub not rebuilt yet): an unblocked one stops the parent at its next
// resume and the engine keeps it aside (dropped here); a blocked one stays
// pending (taken with a zero-timeout rt_sigtimedwait(2)).
func takeSigchld(parent *inject.Process) error {
	if _, err := parent.Syscall(parent.Pid, unix.SYS_GETPID); err != nil {
		return err
	}
	parent.DropQueued(unix.SIGCHLD)
	scratch, err := parent.Scratch()
	if err != nil {
		return err
	}
	set := make([]byte, 8)
	binary.LittleEndian.PutUint64(set, 1<<(uint(unix.SIGCHLD)-1))
	ts := make([]byte, 16) // struct timespec {0, 0}
	if err := parent.WriteMem(scratch, append(set, ts...)); err != nil {
		return err
	}
	if _, err := parent.Syscall(parent.Pid, unix.SYS_RT_SIGTIMEDWAIT, scratch, 0, scratch+8, 8); err != nil && !errors.Is(err, unix.EAGAIN) {
		return err
	}
	return nil
}

// groupByHelper makes process group g, whose leader was not dumped, for
// member c (a copy of the stub, like its parent): a helper cloned from
// c's parent with pid g (so in c's session) makes the group, c joins it,
// the helper exits and the parent reaps it at once (an injected wait4(2))
// and gets its SIGCHLD taken back: no restored process ever sees it. The
// group outlives its leader as long as c is in it (setpgid(2), and the
// pid stays allocated by c's group link, kernel/pid.c).
func (r *Process) groupByHelper(parent, c *inject.Process, g int) error {
	if !r.opts.PIDNS {
		if err := pidFree(g); err != nil {
			return fmt.Errorf("process group %d: %w", g, err)
		}
	}
	h, err := parent.CloneProcess(g, 0)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: process group %d: id %d is in use here: %v", ErrPIDTaken, g, g, err)
		}
		return fmt.Errorf("create the leader of process group %d: %w", g, err)
	}
	ok := false
	defer func() {
		if !ok {
			killTraced(h, r.opts.Log)
		}
	}()
	if _, err := h.Syscall(h.Pid, unix.SYS_SETPGID, 0, 0); err != nil {
		return fmt.Errorf("setpgid in the leader of process group %d: %w", g, err)
	}
	if _, err := c.Syscall(c.Pid, unix.SYS_SETPGID, 0, uintptr(g)); err != nil {
		return fmt.Errorf("join process group %d: %w", g, err)
	}
	ok = true
	if err := h.Exit(0); err != nil {
		return fmt.Errorf("end the leader of process group %d: %w", g, err)
	}
	if _, err := parent.Syscall(parent.Pid, unix.SYS_WAIT4, uintptr(g), 0, unix.WALL, 0); err != nil {
		return fmt.Errorf("reap the leader of process group %d in pid %d: %w", g, parent.Pid, err)
	}
	if err := takeSigchld(parent); err != nil {
		return fmt.Errorf("take the SIGCHLD of the leader of process group %d from pid %d: %w", g, parent.Pid, err)
	}
	r.opts.Log.Debug().Int("pgid", g).Int("member", c.Pid).Msg("process group recreated by a helper (its leader was not dumped)")
	return nil
}

// prepareMember gets member m ready for its steps: its pages reader and
// the fds it shares with members already built.
func (r *Process) prepareMember(m *Process) error {
	t := r.tree
	if m.mm.GetPagesBytes() > 0 {
		switch {
		case r.opts.MemberPages != nil:
			pr, err := r.opts.MemberPages(m.img.Pid)
			if err != nil {
				return fmt.Errorf("restore pid %d: %w", m.img.Pid, err)
			}
			m.opts.Pages = pr
		case r.opts.Dir != "":
			pr, err := image.OpenPages(r.opts.Dir, m.img.Pid)
			if err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			t.closers = append(t.closers, func() { pr.Close() })
			if err := pr.Verify(); err != nil { // see Build
				return fmt.Errorf("restore: %w", err)
			}
			m.opts.Pages = pr
		default:
			return fmt.Errorf("restore pid %d: no page data for a tree member (Options.MemberPages)", m.img.Pid)
		}
	}
	return r.giveShared(m)
}

// giveShared fills m.given: the fds of m that are ends of pipes between
// members (lazycr's ends), ends of socket pairs split across members, or
// copies of descriptions an earlier member made (taken from it with
// pidfd_getfd).
func (r *Process) giveShared(m *Process) error {
	t := r.tree
	m.given = map[int32]int{}
	tps := map[uint64]bool{}
	for _, tp := range r.set.Tree.Pipes {
		tps[tp.Inode] = true
	}
	for _, f := range m.fds.GetFds() {
		p := f.GetPipe()
		if f.DupOf != nil || p == nil || !tps[p.Inode] || p.FifoPath != "" {
			continue
		}
		ends, ok := t.pipes[p.Inode]
		if !ok {
			return fmt.Errorf("restore pid %d fd %d: pipe:[%d] between members was not made", m.img.Pid, f.Fd, p.Inode)
		}
		switch {
		case p.WriteEnd:
			m.given[f.Fd] = ends[1]
		case isRdwrPipe(f):
			m.given[f.Fd] = t.pipeRW[p.Inode]
		default:
			m.given[f.Fd] = ends[0]
		}
	}
	for _, f := range m.fds.GetFds() {
		if local, ok := t.split[[2]int64{int64(m.img.Pid), int64(f.Fd)}]; ok {
			m.given[f.Fd] = local
		}
	}
	for _, sf := range r.set.Tree.SharedFiles {
		for _, u := range sf.Users {
			if u.Pid != m.img.Pid {
				continue
			}
			owner := t.procs[sf.Owner.Pid]
			if owner == nil {
				return fmt.Errorf("restore pid %d fd %d: the description's owner pid %d is not restored", u.Pid, u.Fd, sf.Owner.Pid)
			}
			local, err := takeFd(owner.Pid, int(sf.Owner.Fd))
			if err != nil {
				return fmt.Errorf("restore pid %d fd %d: the description it shares with pid %d fd %d: %w", u.Pid, u.Fd, sf.Owner.Pid, sf.Owner.Fd, err)
			}
			t.closers = append(t.closers, func() { unix.Close(local) })
			m.given[u.Fd] = local
		}
	}
	return nil
}

// takeFd duplicates fd of pid into lazycr (pidfd_getfd(2), O_CLOEXEC).
func takeFd(pid, fd int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, os.NewSyscallError("pidfd_getfd", err)
	}
	return local, nil
}

// makeTreePipes creates the pipes between members in lazycr, with their
// capacity, buffered data and each end's status flags (pipe(7),
// fcntl(2) F_SETPIPE_SZ, F_SETFL); members get the ends as given fds.
func (r *Process) makeTreePipes() error {
	t := r.tree
	if t == nil {
		return nil
	}
	// The status flags of each end, and of a read-write description
	// (index 2: an fd opened O_RDWR on the pipe, both ends at once).
	flags := map[uint64]*[3]uint32{}
	rw := map[uint64]bool{}
	for _, p := range r.set.Tree.Processes {
		for _, f := range r.set.Fds[p.Pid].GetFds() {
			pp := f.GetPipe()
			if pp == nil || f.DupOf != nil {
				continue
			}
			fl := flags[pp.Inode]
			if fl == nil {
				fl = &[3]uint32{unix.O_RDONLY, unix.O_WRONLY, unix.O_RDWR}
				flags[pp.Inode] = fl
			}
			switch {
			case pp.WriteEnd:
				fl[1] = f.Flags
			case isRdwrPipe(f):
				fl[2] = f.Flags
				rw[pp.Inode] = true
			default:
				fl[0] = f.Flags
			}
		}
	}
	boot := r.set.Fds[r.img.Pid].GetBootId()
	for _, tp := range r.set.Tree.Pipes {
		p, live, inherited, err := r.treePipe(tp, boot)
		if err != nil {
			return err
		}
		t.closers = append(t.closers, func() { unix.Close(p[0]); unix.Close(p[1]) })
		t.pipes[tp.Inode] = p
		// A live pipe keeps its capacity and the data still in it.
		if !live && tp.Capacity > 0 {
			if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, int(tp.Capacity)); err != nil {
				r.opts.Log.Warn().Err(err).Uint64("pipe", tp.Inode).Uint32("capacity", tp.Capacity).
					Msg("cannot give the pipe its recorded capacity (fs.pipe-max-size?): keeping the default")
			}
		}
		for data := tp.Data; len(data) > 0 && !live; {
			n, err := unix.Write(p[1], data)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return fmt.Errorf("restore: write %d buffered bytes into pipe:[%d]: %w", len(tp.Data), tp.Inode, os.NewSyscallError("write", err))
			}
			data = data[n:]
		}
		if rw[tp.Inode] {
			// A new description of the same pipe, opened read-write
			// through lazycr's read end (pipe_open in fs/pipe.c allows
			// it; fifo(7): such an open never blocks).
			path := fmt.Sprintf("/proc/self/fd/%d", p[0])
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("restore: reopen pipe:[%d] read-write: %w", tp.Inode, os.NewSyscallError("open", err))
			}
			t.closers = append(t.closers, func() { unix.Close(fd) })
			t.pipeRW[tp.Inode] = fd
		}
		if fl := flags[tp.Inode]; fl != nil {
			for end := range 3 {
				fd := t.pipeRW[tp.Inode]
				switch {
				case end == inherited:
					continue // the caller's description, as passed (files: inherited fds keep their flags)
				case end < 2:
					fd = p[end]
				case !rw[tp.Inode]:
					continue
				}
				if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, int(fl[end]&^unix.O_CLOEXEC)); err != nil {
					return fmt.Errorf("restore: set flags %#o of pipe:[%d]: %w", fl[end], tp.Inode, os.NewSyscallError("fcntl F_SETFL", err))
				}
			}
		}
	}
	return nil
}

// treePipe returns lazycr's read and write ends of pipe tp: the live pipe,
// rejoined through a process outside the tree that held it at the dump
// (files.OpenLivePipe), or a fresh pipe. Rejoining is what makes the
// outside process see the members again (a reader their lines, a writer
// its data reaching them); when it cannot be done (another boot, the
// holders gone), the members still share one fresh pipe, and restore
// says which outside process lost them.
//
// An fd of the pipe that --inherit-fd names (Options.InheritFds) takes
// precedence, as it does for a single process: the members get the
// caller's pipe, that end its very description (inherited is its index,
// else -1), the other end a new description of the same pipe.
func (r *Process) treePipe(tp *pb.TreePipe, boot string) (p [2]int, live bool, inherited int, err error) {
	log := r.opts.Log.With().Uint64("pipe", tp.Inode).Logger()
	if f, pid := r.inheritedPipeFd(tp.Inode); f != nil {
		end := 0
		if f.GetPipe().WriteEnd {
			end = 1
		}
		ends, err := files.PipeEndsOf(int(f.Fd), end)
		if err != nil {
			return p, false, -1, fmt.Errorf("restore pid %d fd %d (pipe:[%d] between members): --inherit-fd %d: %w", pid, f.Fd, tp.Inode, f.Fd, err)
		}
		log.Info().Int32("fd", f.Fd).Msgf("pipe:[%d] between members: fd %d of pid %d is passed with --inherit-fd: every member gets that pipe", tp.Inode, f.Fd, pid)
		return ends, true, end, nil
	}
	if len(tp.Outside) > 0 {
		ends, holder, err := files.OpenLivePipe(tp.Inode, tp.Outside, boot)
		if err == nil {
			log.Info().Int("holder", holder).Msgf("pipe:[%d] between members is still alive here (held by pid %d since the dump): members rejoined to it", tp.Inode, holder)
			return ends, true, -1, nil
		}
		hint := ""
		if f, pid := r.firstPipeFd(tp.Inode); f != nil {
			hint = fmt.Sprintf(" (use --inherit-fd %d to pass one for fd %d of pid %d)", f.Fd, f.Fd, pid)
		}
		log.Warn().Err(err).Uint32("holder", tp.Outside[0].Pid).
			Msgf("pipe:[%d] between members was also held by pid %d outside the tree, which cannot be rejoined: the members share a fresh pipe that pid %d does not see%s", tp.Inode, tp.Outside[0].Pid, tp.Outside[0].Pid, hint)
	}
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return p, false, -1, fmt.Errorf("restore: create pipe:[%d]: %w", tp.Inode, os.NewSyscallError("pipe2", err))
	}
	return p, false, -1, nil
}

// isRdwrPipe reports whether image fd f is a pipe opened O_RDWR (both
// ends in one description; files' pipe.go records it as a read end).
func isRdwrPipe(f *pb.Fd) bool {
	p := f.GetPipe()
	return p != nil && !p.WriteEnd && f.Flags&unix.O_ACCMODE == unix.O_RDWR
}

// inheritedPipeFd returns the first image fd of pipe:[ino], in tree order,
// whose number --inherit-fd names, and its member's pid.
func (r *Process) inheritedPipeFd(ino uint64) (*pb.Fd, uint32) {
	if len(r.opts.InheritFds) == 0 {
		return nil, 0
	}
	return r.pipeFd(ino, func(f *pb.Fd) bool { return slices.Contains(r.opts.InheritFds, int(f.Fd)) })
}

// firstPipeFd returns the first image fd of pipe:[ino] in tree order.
func (r *Process) firstPipeFd(ino uint64) (*pb.Fd, uint32) {
	return r.pipeFd(ino, func(*pb.Fd) bool { return true })
}

// pipeFd returns the first image fd of pipe:[ino], in tree order, that
// is no dup and that ok accepts, and its member's pid.
func (r *Process) pipeFd(ino uint64, ok func(*pb.Fd) bool) (*pb.Fd, uint32) {
	for _, p := range r.set.Tree.Processes {
		for _, f := range r.set.Fds[p.Pid].GetFds() {
			if pp := f.GetPipe(); pp != nil && pp.Inode == ino && f.DupOf == nil && ok(f) {
				return f, p.Pid
			}
		}
	}
	return nil, 0
}

// closeTree releases lazycr's copies of shared fds and the pages readers.
func (t *tree) close() {
	if t == nil {
		return
	}
	for _, c := range t.closers {
		c()
	}
	t.closers = nil
}

// resumeMembers sets every member's final registers and lets them run,
// the last-listed (deepest) first; the root goes after them.
func (r *Process) resumeMembers() error {
	t := r.tree
	if t == nil {
		return nil
	}
	for _, m := range t.members {
		if err := m.setFinalRegisters(); err != nil {
			return fmt.Errorf("pid %d: %w", m.img.Pid, err)
		}
	}
	// Every member's TCP connections go live (repair off, its held lock
	// removed) before any member runs: a read it restarts on a socket
	// still in repair mode fails EPERM (tcp_recvmsg_locked). The root's
	// first; Resume's own call is then a no-op.
	if err := r.tcp.Live(); err != nil {
		return fmt.Errorf("TCP connections of pid %d: %w", r.img.Pid, err)
	}
	for _, m := range t.members {
		if err := m.tcp.Live(); err != nil {
			return fmt.Errorf("TCP connections of pid %d: %w", m.img.Pid, err)
		}
	}
	for i := len(t.members) - 1; i >= 0; i-- {
		m := t.members[i]
		if m.img.StopSignal != 0 {
			m.b.p.StopOnDetach() // it was in a job-control stop (state T)
		}
		err := m.b.p.Detach()
		m.done = true
		if err == nil && i == len(t.members)-1 {
			// A member already runs: the failure path must kill it.
			err = failpoint.Check("restore.tree.resume")
		}
		if err != nil {
			return fmt.Errorf("resume pid %d: %w", m.img.Pid, err)
		}
	}
	return nil
}

// killMembers kills the members of a tree that is not resumed.
func (r *Process) killMembers() {
	if r.tree == nil {
		return
	}
	for i := len(r.tree.members) - 1; i >= 0; i-- {
		m := r.tree.members[i]
		if m.done {
			// Already running (a failure during Resume): it must not
			// run on without the rest of its tree.
			unixKill(m.b.pid)
			m.tcp.Abort()
			continue
		}
		m.done = true
		killTraced(m.b.p, r.opts.Log)
		m.tcp.Abort() // after the kill: the sockets die in repair mode
	}
}

// finishMembers closes what the members' TCP Live left for after the
// resume (files.TCPRestore.Finish).
func (r *Process) finishMembers() {
	if r.tree == nil {
		return
	}
	for _, m := range r.tree.members {
		if err := m.tcp.Finish(); err != nil {
			r.opts.Log.Warn().Err(err).Uint32("pid", m.img.Pid).Msg("close the TCP lock's socket")
		}
	}
}

// nsPid is img's pid where it is restored: in its own namespace with
// --pidns, else the dumper's number.
func nsPid(img *pb.Process, pidns bool) int {
	if n := len(img.NsPid); pidns && n > 0 {
		return int(img.NsPid[n-1])
	}
	return int(img.Pid)
}
