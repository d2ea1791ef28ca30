package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Remote runs syscalls inside the process being built and moves small data
// through a scratch page of it. restore's builder satisfies it; the page is
// the fd step's for the whole of [Restore].
type Remote interface {
	// Pid is the process being built.
	Pid() int
	// Syscall runs syscall nr in it and returns its result.
	Syscall(nr uintptr, args ...uintptr) (uintptr, error)
	// Put writes data at offset off of the scratch page and returns its
	// address in the process.
	Put(off int, data []byte) (uintptr, error)
	// Get reads n bytes at offset off of the scratch page.
	Get(off, n int) ([]byte, error)
	// Scratch is the scratch page's address in the process.
	Scratch() uintptr
}

// RestoreOptions configure [Restore].
type RestoreOptions struct {
	// Inherit lists fds of lazycr that are passed to the process at the
	// same number instead of being rebuilt (--inherit-fd).
	Inherit []int
	// Given maps image fds to lazycr's own fds whose open file
	// description they are (a description a process tree shares, made
	// in another member): passed in like inherited fds.
	Given map[int32]int
	Log   zerolog.Logger
	// TCP receives the re-created TCP connections (tcp.go); without it
	// an image with one fails.
	TCP *TCPRestore
	// SharedMemory gives the objects memfds and deleted files are also
	// mapped as (shmhook.go).
	SharedMemory SharedMemoryFunc
	// HandOver lets a listening socket whose port is taken be handed over
	// from the dumped process itself (inet.go takeListener): for a
	// post-copy restore, whose source keeps the original frozen.
	HandOver bool
	// Terminal, if set, is the terminal every fd that was on the
	// process's controlling terminal is opened on (tty.go; restore
	// --shell-job).
	Terminal *Terminal
	// UnixReconnect restores unix sockets whose peer was not dumped
	// (unixext.go): a client end connects again to the same name, a
	// server end comes back closed by its peer. Without it they are
	// refused, naming the peer.
	UnixReconnect bool
	// UnixBinds records the socket files bound to paths (unixlisten.go),
	// for the caller to remove if the restore fails later; nil: not
	// recorded.
	UnixBinds *UnixBinds
	// Ptys are the ptys this restore makes afresh, by their slave's
	// device number ([PtyMasters]: their master is in the image set). A
	// master fd is given its pty's; a slave of one is not checked against
	// the dump's pty, and is never replaced by Terminal.
	Ptys map[uint64]*Pty
}

// allFds is ~0U, the last fd of close_range(2).
const allFds = uintptr(math.MaxUint32)

// atFdcwd is AT_FDCWD (-100) as a syscall argument.
const atFdcwd = ^uintptr(99)

// Scratch page layout while fds are restored.
const (
	scratchPath = 0    // a path for openat, up to 2048 bytes
	scratchArgs = 2048 // small structs: pipe2/socketpair results, itimerspec, epoll_event...
	scratchMsg  = 3072 // recvmsg: msghdr (56), iovec (16), data byte, cmsg buffer (24)
)

// restorer holds the state of one Restore run.
type restorer struct {
	rem      Remote
	pid      int
	log      zerolog.Logger
	base     uintptr           // first temporary fd number: highest image fd + 1
	temp     map[int32]uintptr // image fd → its object at a temporary number
	fds      []*pb.Fd          // the image's fds
	inImage  map[int32]bool
	cloexec  map[int32]bool // the image's FD_CLOEXEC per fd
	inherit  map[int32]bool
	given    map[int32]int          // image fd → lazycr's fd of its description (RestoreOptions.Given)
	pipes    map[uint64]*pipeGroup  // pipe.go
	pairs    map[uint64]*unixPair   // unixsock.go, by the lower inode
	usocks   *unixRestore           // unixsock.go
	memfds   map[uint64]*fileGroup  // memfd.go
	deleted  map[fileKey]*fileGroup // deleted.go
	pidfd    int                    // pidfd of the process, -1 until opened
	bootID   string                 // the image's boot id
	imagePid uint32                 // the dumped process's pid
	// The socketpair that carries inherited fds (inherit.go): the
	// process's receiving end (a temporary number) and lazycr's copy of
	// the sending end.
	recvFd uintptr
	sendFd int
	tcp    *TCPRestore
	shared SharedMemoryFunc // shmhook.go
	// handOver: RestoreOptions.HandOver.
	handOver bool
	terminal *Terminal       // RestoreOptions.Terminal
	ptys     map[uint64]*Pty // RestoreOptions.Ptys
	// unixReconnect: RestoreOptions.UnixReconnect.
	unixReconnect bool
	ubinds        *UnixBinds // RestoreOptions.UnixBinds
}

// Restore re-creates the image's fd table at its exact numbers in the
// process rem is building, in three phases: every object is created at a
// temporary number above the image's highest fd, then dup3(2)'d to its
// number with its FD_CLOEXEC, then the kinds that name other fds (epoll)
// finish. The stub's own fds are closed first. See close_range(2), fcntl(2)
// F_DUPFD_CLOEXEC.
func Restore(rem Remote, table *pb.FdTable, opts RestoreOptions) error {
	if _, err := rem.Syscall(unix.SYS_CLOSE_RANGE, 0, allFds, 0); err != nil {
		return fmt.Errorf("close the stub's fds: %w", err)
	}
	var fds []*pb.Fd
	var bootID string
	var imagePid uint32
	if table != nil {
		fds, bootID, imagePid = table.Fds, table.BootId, table.Pid
	}
	r := &restorer{rem: rem, pid: rem.Pid(), log: opts.Log, fds: fds, temp: map[int32]uintptr{}, pipes: map[uint64]*pipeGroup{}, pairs: map[uint64]*unixPair{},
		inImage: map[int32]bool{}, inherit: map[int32]bool{}, given: opts.Given, pidfd: -1, sendFd: -1, bootID: bootID, imagePid: imagePid, shared: opts.SharedMemory, handOver: opts.HandOver, terminal: opts.Terminal, ptys: opts.Ptys, unixReconnect: opts.UnixReconnect, ubinds: opts.UnixBinds}
	defer r.close()
	if opts.TCP != nil {
		r.tcp = opts.TCP
		if err := r.tcp.begin(r.pid, table.GetTcpLock()); err != nil {
			return err
		}
	}
	r.cloexec = map[int32]bool{}
	for _, f := range fds {
		r.inImage[f.Fd] = true
		r.cloexec[f.Fd] = f.Cloexec
	}
	for _, n := range opts.Inherit {
		if !r.inImage[int32(n)] {
			r.log.Warn().Int("fd", n).Msg("inherited fd is not in the image: ignored")
			continue
		}
		r.inherit[int32(n)] = true
	}
	var maxFd int32 = -1
	for _, f := range fds {
		if f.Fd < 0 {
			return fmt.Errorf("fd %d: negative fd number in the image", f.Fd)
		}
		maxFd = max(maxFd, f.Fd)
		if d := f.DupOf; d != nil && (*d >= f.Fd || !r.inImage[*d]) {
			return fmt.Errorf("fd %d: a dup of fd %d, which is not an earlier fd of the image", f.Fd, *d)
		}
		if _, given := r.given[f.Fd]; given || r.inherit[f.Fd] || f.DupOf != nil {
			continue
		}
		if p, ok := kindOfImage(f).(preparer); ok {
			p.prepare(r, f)
		}
	}
	r.base = uintptr(maxFd + 1)
	if len(fds) == 0 {
		return r.checkTable(nil)
	}
	restoreLimit, early, err := r.raiseNofile(len(fds))
	if err != nil {
		return err
	}
	defer restoreLimit()

	// Phase 1: every object at a temporary number; kinds that observe
	// the others (inotify) last, so that what the restore does is not
	// what they report, and terminals (tty.go). A /dev/tty fd opens the controlling terminal, which a session
	// leader gets by opening its pty slave (tty.go): after every other.
	pass := func(f *pb.Fd) int {
		if _, late := kindOfImage(f).(lateKind); !late {
			return 0
		}
		if t := f.GetTty(); t != nil && isCtty(t.RdevMajor, t.RdevMinor) {
			return 2
		}
		return 1
	}
	for p := range 3 {
		for _, f := range fds {
			if pass(f) == p {
				if err := r.create(f); err != nil {
					return err
				}
				if early {
					if err := r.placeEarly(f); err != nil {
						return err
					}
				}
			}
		}
	}
	r.closeInheritChannel()
	// Every open file description has the status flags it had (a given
	// one has them already: it is another member's).
	for _, f := range fds {
		if _, given := r.given[f.Fd]; given || r.inherit[f.Fd] || f.DupOf != nil {
			continue
		}
		if err := r.checkFlags(f); err != nil {
			return err
		}
	}
	// Phase 2: the final numbers.
	for _, f := range fds {
		var flags uintptr
		if f.Cloexec {
			flags = unix.O_CLOEXEC
		}
		if r.temp[f.Fd] == uintptr(f.Fd) {
			continue // placed early
		}
		if _, err := rem.Syscall(unix.SYS_DUP3, r.temp[f.Fd], uintptr(f.Fd), flags); err != nil {
			return fmt.Errorf("dup3 fd %d to %d: %w", r.temp[f.Fd], f.Fd, err)
		}
	}
	if _, err := rem.Syscall(unix.SYS_CLOSE_RANGE, r.base, allFds, 0); err != nil {
		return fmt.Errorf("close temporary fds from %d: %w", r.base, err)
	}
	r.temp = nil
	// Phase 3: what names final numbers.
	for _, f := range fds {
		if _, given := r.given[f.Fd]; f.Flags&unix.O_ASYNC != 0 && !given && !r.inherit[f.Fd] && f.DupOf == nil {
			if err := r.setAsync(f); err != nil {
				return err
			}
		}
	}
	for _, f := range fds {
		if _, given := r.given[f.Fd]; given || r.inherit[f.Fd] || f.DupOf != nil {
			continue
		}
		if fin, ok := kindOfImage(f).(finisher); ok {
			if err := fin.finish(r, f); err != nil {
				return err
			}
		}
	}
	if err := r.takeLocks(fds); err != nil { // lock.go
		return err
	}
	return r.checkTable(fds)
}

// Status flags: those F_SETFL can change (fcntl(2)), and those that do
// not matter (O_CLOEXEC is per fd and set by dup3; open(2) forces
// O_LARGEFILE on 64-bit).
const (
	setflFlags  = unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME | unix.O_NONBLOCK
	ignoreFlags = unix.O_CLOEXEC | oLargefile
	// oLargefile is the kernel's O_LARGEFILE (include/uapi/asm-generic/fcntl.h);
	// x/sys/unix defines it as 0 on amd64.
	oLargefile = 0o100000
)

// checkFlags gives f's description the recorded status flags where
// creating it did not (F_SETFL), and refuses what still differs: a kind
// that lost a flag must not come back silently changed.
func (r *restorer) checkFlags(f *pb.Fd) error {
	fd := r.temp[f.Fd]
	if err := r.setOwner(f, fd); err != nil {
		return err
	}
	got, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_GETFL)
	if err != nil {
		return fmt.Errorf("read flags of fd %d: %w", f.Fd, err)
	}
	// O_ASYNC is set last, at the final number: the kernel reports the fd
	// number O_ASYNC was set through in SIGIO's si_fd (fasync_helper).
	want := uintptr(f.Flags) &^ unix.O_ASYNC
	if f.GetDeletedFile() != nil && want&oTmpfileOnly != 0 && got&oTmpfileOnly == 0 {
		want &^= unix.O_TMPFILE // made again by name, not by makeTmpfile: see makeDeleted
	}
	if (got^want)&setflFlags != 0 {
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_SETFL, got&^setflFlags|want&setflFlags); err != nil {
			return fmt.Errorf("set flags %#o of fd %d: %w", want&setflFlags, f.Fd, err)
		}
		if got, err = r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_GETFL); err != nil {
			return fmt.Errorf("read flags of fd %d: %w", f.Fd, err)
		}
	}
	if (got^want)&^ignoreFlags != 0 {
		return fmt.Errorf("fd %d: status flags %#o after restore, the dump had %#o", f.Fd, got&^ignoreFlags, want&^ignoreFlags)
	}
	return nil
}

// setAsync sets O_ASYNC on image fd f at its final number.
func (r *restorer) setAsync(f *pb.Fd) error {
	got, err := r.rem.Syscall(unix.SYS_FCNTL, uintptr(f.Fd), unix.F_GETFL)
	if err != nil {
		return fmt.Errorf("read flags of fd %d: %w", f.Fd, err)
	}
	if _, err := r.rem.Syscall(unix.SYS_FCNTL, uintptr(f.Fd), unix.F_SETFL, got|unix.O_ASYNC); err != nil {
		return fmt.Errorf("set O_ASYNC on fd %d: %w", f.Fd, err)
	}
	return nil
}

// setOwner gives the description its signal-driven I/O owner (the
// process itself, under its pid in its own PID namespace) and signal, before O_ASYNC is set.
// struct f_owner_ex is two ints. See fcntl(2) F_SETOWN_EX, F_SETSIG.
func (r *restorer) setOwner(f *pb.Fd, fd uintptr) error {
	o := f.Owner
	if o == nil {
		return nil
	}
	if o.Pid != 0 {
		if o.Pid != int32(r.imagePid) || (o.Type != kabi.F_OWNER_PID && o.Type != kabi.F_OWNER_TID) {
			return fmt.Errorf("fd %d: signal-driven I/O owner (type %d) %d is not the process", f.Fd, o.Type, o.Pid)
		}
		// fcntl(2) reads the owner's pid in the caller's PID namespace:
		// the process's own pid there (restore --pidns makes it differ
		// from r.pid, lazycr's view), from an injected getpid(2).
		self, err := r.rem.Syscall(unix.SYS_GETPID)
		if err != nil {
			return fmt.Errorf("set the owner of fd %d: %w", f.Fd, err)
		}
		addr, err := r.rem.Put(scratchArgs, le(o.Type, int32(self)))
		if err != nil {
			return err
		}
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_SETOWN_EX, addr); err != nil {
			return fmt.Errorf("set the owner of fd %d: %w", f.Fd, err)
		}
	}
	if o.Signal != 0 {
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_SETSIG, uintptr(o.Signal)); err != nil {
			return fmt.Errorf("set the signal of fd %d to %d: %w", f.Fd, o.Signal, err)
		}
	}
	return nil
}

// create makes the object of image fd f at a temporary number.
func (r *restorer) create(f *pb.Fd) error {
	var (
		fd  uintptr
		err error
	)
	if local, ok := r.given[f.Fd]; ok {
		fd, err = r.receive(local, f.Fd)
	} else if r.inherit[f.Fd] {
		fd, err = r.receiveInherited(f.Fd)
	} else if f.DupOf != nil {
		// One open file description, as in the dumped process.
		if fd, err = r.rem.Syscall(unix.SYS_FCNTL, r.temp[*f.DupOf], unix.F_DUPFD_CLOEXEC, r.base); err != nil {
			err = fmt.Errorf("dup fd %d as fd %d: %w", *f.DupOf, f.Fd, err)
		}
	} else if k := kindOfImage(f); k != nil {
		fd, err = k.create(r, f)
	} else {
		return fmt.Errorf("fd %d: unknown kind %T in the image", f.Fd, f.Kind)
	}
	if err != nil {
		return err
	}
	r.temp[f.Fd] = fd
	return nil
}

// checkTable makes sure /proc/PID/fd lists exactly the image's fds.
func (r *restorer) checkTable(want []*pb.Fd) error {
	have, err := proc.ReadFds(r.pid)
	if err != nil {
		return fmt.Errorf("list fds of pid %d: %w", r.pid, err)
	}
	var h, w []int
	for _, f := range have {
		h = append(h, f.Num)
	}
	for _, f := range want {
		w = append(w, int(f.Fd))
	}
	slices.Sort(w)
	if !slices.Equal(h, w) {
		return fmt.Errorf("pid %d has fds %v after restore, the image has %v", r.pid, h, w)
	}
	return nil
}

// raiseNofile makes room for the temporary fds: the stub inherits the soft
// RLIMIT_NOFILE lazycr started with, which may be below base+n. It returns
// the function that puts the old limit back (restore then sets the
// image's). See prlimit(2).
//
// Raising the hard limit needs CAP_SYS_RESOURCE, which root lacks in many
// containers: when base+n is above lazycr's hard limit (a process with
// about half as many fds as that limit) and it cannot be raised, the soft
// limit goes up to the hard one and early is true: each fd is then placed
// at its number as soon as it is made (placeEarly), so the temporary
// numbers are freed as they go instead of adding up to n.
func (r *restorer) raiseNofile(n int) (restoreLimit func(), early bool, err error) {
	pid := r.pid
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return nil, false, fmt.Errorf("read RLIMIT_NOFILE of pid %d: %w", pid, os.NewSyscallError("prlimit64", err))
	}
	need := uint64(r.base) + uint64(n) + 16
	if old.Cur >= need {
		return func() {}, false, nil
	}
	restoreLimit = func() {
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
			r.log.Warn().Err(err).Int("pid", pid).Msg("put back RLIMIT_NOFILE")
		}
	}
	lim := unix.Rlimit{Cur: need, Max: max(old.Max, need)}
	err = unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil)
	if err == nil {
		return restoreLimit, false, nil
	}
	if errors.Is(err, unix.EPERM) && need > old.Max && old.Max >= uint64(r.base)+16 {
		lim = unix.Rlimit{Cur: old.Max, Max: old.Max}
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			return nil, false, fmt.Errorf("raise RLIMIT_NOFILE of pid %d to %d for fds up to %d: %w", pid, old.Max, r.base-1, os.NewSyscallError("prlimit64", err))
		}
		r.log.Debug().Int("pid", pid).Uint64("hard_limit", old.Max).Uint64("wanted", need).
			Msg("RLIMIT_NOFILE cannot be raised above the hard limit (CAP_SYS_RESOURCE): fds placed at their numbers as they are made")
		return restoreLimit, true, nil
	}
	return nil, false, fmt.Errorf("raise RLIMIT_NOFILE of pid %d to %d for fds up to %d (raising the hard limit %d needs CAP_SYS_RESOURCE): %w",
		pid, need, r.base-1, old.Max, os.NewSyscallError("prlimit64", err))
}

// placeEarly moves f's object from its temporary number to f's own number
// (dup3 with f's FD_CLOEXEC) and frees the temporary one, when that number
// is still free: no object is made there, since every fd made is moved to
// base or above (moveHigh) and the stub's own fds are closed. r.temp then
// names the final number, which phase 2 skips.
func (r *restorer) placeEarly(f *pb.Fd) error {
	fd := r.temp[f.Fd]
	if fd == uintptr(f.Fd) {
		return nil
	}
	if _, err := r.rem.Syscall(unix.SYS_FCNTL, uintptr(f.Fd), unix.F_GETFD); !errors.Is(err, unix.EBADF) {
		if err != nil {
			return fmt.Errorf("check fd %d is free: %w", f.Fd, err)
		}
		return nil // taken for now: dup3'd in phase 2
	}
	var flags uintptr
	if f.Cloexec {
		flags = unix.O_CLOEXEC
	}
	if _, err := r.rem.Syscall(unix.SYS_DUP3, fd, uintptr(f.Fd), flags); err != nil {
		return fmt.Errorf("dup3 fd %d to %d: %w", fd, f.Fd, err)
	}
	r.temp[f.Fd] = uintptr(f.Fd)
	if _, err := r.rem.Syscall(unix.SYS_CLOSE, fd); err != nil {
		return fmt.Errorf("close temporary fd %d of fd %d: %w", fd, f.Fd, err)
	}
	return nil
}

// close releases lazycr's own fds.
func (r *restorer) close() {
	r.closeInheritChannel()
	if r.pidfd >= 0 {
		unix.Close(r.pidfd)
		r.pidfd = -1
	}
}

// getfd duplicates the process's fd into lazycr: pidfd_getfd(2). The copy
// is O_CLOEXEC and shares the open file description.
func (r *restorer) getfd(fd uintptr) (int, error) {
	if r.pidfd < 0 {
		pfd, err := unix.PidfdOpen(r.pid, 0)
		if err != nil {
			return -1, fmt.Errorf("pidfd_open pid %d: %w", r.pid, os.NewSyscallError("pidfd_open", err))
		}
		r.pidfd = pfd
	}
	local, err := unix.PidfdGetfd(r.pidfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("take fd %d of pid %d: %w", fd, r.pid, os.NewSyscallError("pidfd_getfd", err))
	}
	return local, nil
}

// moveHigh moves a fresh fd of the process to the lowest free number >=
// base (F_DUPFD_CLOEXEC) and closes the original.
func (r *restorer) moveHigh(fd uintptr) (uintptr, error) {
	hi, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, r.base)
	if err != nil {
		_, _ = r.rem.Syscall(unix.SYS_CLOSE, fd)
		return 0, fmt.Errorf("move fd %d above %d: %w", fd, r.base-1, err)
	}
	if _, err := r.rem.Syscall(unix.SYS_CLOSE, fd); err != nil {
		return 0, fmt.Errorf("close fd %d: %w", fd, err)
	}
	return hi, nil
}

// closeRemote closes fd in the process, for cleanup paths.
func (r *restorer) closeRemote(fd uintptr) {
	_, _ = r.rem.Syscall(unix.SYS_CLOSE, fd)
}

// putString writes a NUL-terminated string at offset off of the scratch page.
func (r *restorer) putString(off int, s string) (uintptr, error) {
	return r.rem.Put(off, append([]byte(s), 0))
}

// openAt opens path in the process and moves it to a temporary number.
func (r *restorer) openAt(path string, flags uintptr) (uintptr, error) {
	addr, err := r.putString(scratchPath, path)
	if err != nil {
		return 0, err
	}
	fd, err := r.rem.Syscall(unix.SYS_OPENAT, atFdcwd, addr, flags, 0)
	if err != nil {
		return 0, err
	}
	return r.moveHigh(fd)
}

// setfl sets an fd's file status flags; F_SETFL changes only O_APPEND,
// O_ASYNC, O_DIRECT, O_NOATIME and O_NONBLOCK and ignores the rest
// (fcntl(2)).
func (r *restorer) setfl(fd uintptr, flags uint32) error {
	_, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_SETFL, uintptr(flags&^unix.O_CLOEXEC))
	return err
}

// pair reads the two ints pipe2(2) or socketpair(2) wrote at scratchArgs.
func (r *restorer) pair() (uintptr, uintptr, error) {
	out, err := r.rem.Get(scratchArgs, 8)
	if err != nil {
		return 0, 0, err
	}
	return uintptr(binary.LittleEndian.Uint32(out)), uintptr(binary.LittleEndian.Uint32(out[4:])), nil
}

// le encodes fixed-size values little-endian (kernel structs on x86-64).
func le(vals ...any) []byte {
	var buf []byte
	for _, v := range vals {
		var err error
		if buf, err = binary.Append(buf, binary.LittleEndian, v); err != nil {
			panic(fmt.Sprintf("files: encode %T: %v", v, err)) // a programming error: only fixed-size values are passed
		}
	}
	return buf
}
