package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"strconv"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// allFds is ~0U, the last fd of close_range(2).
const allFds = uintptr(math.MaxUint32)

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64) from
// include/uapi/linux/timerfd.h (needs CONFIG_CHECKPOINT_RESTORE).
var tfdIocSetTicks = kabi.IOW('T', 0, 8)

// oTmpfileOnly is __O_TMPFILE without O_DIRECTORY: never passed to openat
// when reopening a file by path.
const oTmpfileOnly = unix.O_TMPFILE &^ unix.O_DIRECTORY

// Scratch page layout while fds are restored (the page is ours for the
// whole step).
const (
	scratchPath = 0    // a path for openat, up to 2048 bytes
	scratchArgs = 2048 // small structs: pipe2/socketpair results, itimerspec, epoll_event...
	scratchMsg  = 3072 // recvmsg: msghdr (56), iovec (16), data byte, cmsg buffer (24)
)

// fdRestorer holds the state of one restoreFds run.
type fdRestorer struct {
	r       *Process
	base    uintptr           // first temporary fd number: highest image fd + 1
	temp    map[int32]uintptr // image fd → its object at a temporary number
	pipes   map[uint64]*pipeGroup
	inherit map[int32]bool
	pidfd   int // pidfd of the process, -1 until opened
	// The socketpair that carries inherited fds: the process's receiving
	// end (a temporary number) and lazycr's copy of the sending end.
	recvFd uintptr
	sendFd int
}

// pipeGroup is one anonymous pipe: the image fds of its ends.
type pipeGroup struct {
	read, write []*pb.Fd
	made        bool
	r, w        uintptr // temporary numbers of the ends; 0 when the end is absent
}

// restoreFds re-creates the image's fd table at its exact numbers, in
// three phases: every object is created at a temporary number above the
// image's highest fd, then dup3(2)'d to its number with its FD_CLOEXEC, then
// epoll interest lists are filled (they name final numbers). See
// close_range(2), fcntl(2) F_DUPFD_CLOEXEC.
func (r *Process) restoreFds() error {
	b := r.b
	if _, err := b.call(unix.SYS_CLOSE_RANGE, 0, allFds, 0); err != nil {
		return fmt.Errorf("close the stub's fds: %w", err)
	}
	var fds []*pb.Fd
	if r.fds != nil {
		fds = r.fds.Fds
	}
	fr := &fdRestorer{r: r, temp: map[int32]uintptr{}, pipes: map[uint64]*pipeGroup{},
		inherit: map[int32]bool{}, pidfd: -1, sendFd: -1}
	defer fr.close()
	inImage := map[int32]bool{}
	for _, f := range fds {
		inImage[f.Fd] = true
	}
	for _, n := range r.opts.InheritFds {
		if !inImage[int32(n)] {
			r.opts.Log.Warn().Int("fd", n).Msg("inherited fd is not in the image: ignored")
			continue
		}
		fr.inherit[int32(n)] = true
	}
	var maxFd int32 = -1
	for _, f := range fds {
		if f.Fd < 0 {
			return fmt.Errorf("fd %d: negative fd number in the image", f.Fd)
		}
		maxFd = max(maxFd, f.Fd)
		if p := f.GetPipe(); p != nil && p.FifoPath == "" && !fr.inherit[f.Fd] {
			g := fr.pipes[p.Inode]
			if g == nil {
				g = &pipeGroup{}
				fr.pipes[p.Inode] = g
			}
			if p.WriteEnd {
				g.write = append(g.write, f)
			} else {
				g.read = append(g.read, f)
			}
		}
	}
	fr.base = uintptr(maxFd + 1)
	if len(fds) == 0 {
		return r.checkFdTable(nil)
	}
	restoreLimit, err := fr.raiseNofile(len(fds))
	if err != nil {
		return err
	}
	defer restoreLimit()

	// Phase 1: every object at a temporary number.
	for _, f := range fds {
		if err := fr.create(f); err != nil {
			return err
		}
	}
	fr.closeInheritChannel()
	// Phase 2: the final numbers.
	for _, f := range fds {
		var flags uintptr
		if f.Cloexec {
			flags = unix.O_CLOEXEC
		}
		if _, err := b.call(unix.SYS_DUP3, fr.temp[f.Fd], uintptr(f.Fd), flags); err != nil {
			return fmt.Errorf("dup3 fd %d to %d: %w", fr.temp[f.Fd], f.Fd, err)
		}
	}
	if _, err := b.call(unix.SYS_CLOSE_RANGE, fr.base, allFds, 0); err != nil {
		return fmt.Errorf("close temporary fds from %d: %w", fr.base, err)
	}
	fr.temp = nil
	// Phase 3: epoll interest lists.
	for _, f := range fds {
		if ep := f.GetEpoll(); ep != nil && !fr.inherit[f.Fd] {
			if err := fr.fillEpoll(f.Fd, ep, inImage); err != nil {
				return err
			}
		}
	}
	return r.checkFdTable(fds)
}

// checkFdTable makes sure /proc/PID/fd lists exactly the image's fds.
func (r *Process) checkFdTable(want []*pb.Fd) error {
	have, err := proc.ReadFds(r.b.pid)
	if err != nil {
		return fmt.Errorf("list fds of pid %d: %w", r.b.pid, err)
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
		return fmt.Errorf("pid %d has fds %v after restore, the image has %v", r.b.pid, h, w)
	}
	return nil
}

// raiseNofile makes room for the temporary fds: the stub inherits the soft
// RLIMIT_NOFILE lazycr started with, which may be below base+n. It returns
// the function that puts the old limit back (restoreState then sets the
// image's). See prlimit(2).
func (fr *fdRestorer) raiseNofile(n int) (func(), error) {
	pid := fr.r.b.pid
	var old unix.Rlimit
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, &old); err != nil {
		return nil, fmt.Errorf("read RLIMIT_NOFILE of pid %d: %w", pid, os.NewSyscallError("prlimit64", err))
	}
	need := uint64(fr.base) + uint64(n) + 16
	if old.Cur >= need {
		return func() {}, nil
	}
	lim := unix.Rlimit{Cur: need, Max: max(old.Max, need)}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_NOFILE of pid %d to %d for fds up to %d: %w", pid, need, fr.base-1, os.NewSyscallError("prlimit64", err))
	}
	return func() {
		if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &old, nil); err != nil {
			fr.r.opts.Log.Warn().Err(err).Int("pid", pid).Msg("put back RLIMIT_NOFILE")
		}
	}, nil
}

// close releases lazycr's own fds.
func (fr *fdRestorer) close() {
	fr.closeInheritChannel()
	if fr.pidfd >= 0 {
		unix.Close(fr.pidfd)
		fr.pidfd = -1
	}
}

func (fr *fdRestorer) closeInheritChannel() {
	if fr.sendFd >= 0 {
		unix.Close(fr.sendFd)
		fr.sendFd = -1
	}
	if fr.recvFd != 0 {
		_, _ = fr.r.b.call(unix.SYS_CLOSE, fr.recvFd)
		fr.recvFd = 0
	}
}

// getfd duplicates the process's fd into lazycr: pidfd_getfd(2). The copy
// is O_CLOEXEC and shares the open file description.
func (fr *fdRestorer) getfd(fd uintptr) (int, error) {
	if fr.pidfd < 0 {
		pfd, err := unix.PidfdOpen(fr.r.b.pid, 0)
		if err != nil {
			return -1, fmt.Errorf("pidfd_open pid %d: %w", fr.r.b.pid, os.NewSyscallError("pidfd_open", err))
		}
		fr.pidfd = pfd
	}
	local, err := unix.PidfdGetfd(fr.pidfd, int(fd), 0)
	if err != nil {
		return -1, fmt.Errorf("take fd %d of pid %d: %w", fd, fr.r.b.pid, os.NewSyscallError("pidfd_getfd", err))
	}
	return local, nil
}

// moveHigh moves a fresh fd of the process to the lowest free number >=
// base (F_DUPFD_CLOEXEC) and closes the original.
func (fr *fdRestorer) moveHigh(fd uintptr) (uintptr, error) {
	b := fr.r.b
	hi, err := b.call(unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, fr.base)
	if err != nil {
		_, _ = b.call(unix.SYS_CLOSE, fd)
		return 0, fmt.Errorf("move fd %d above %d: %w", fd, fr.base-1, err)
	}
	if _, err := b.call(unix.SYS_CLOSE, fd); err != nil {
		return 0, fmt.Errorf("close fd %d: %w", fd, err)
	}
	return hi, nil
}

// create makes the object of image fd f at a temporary number.
func (fr *fdRestorer) create(f *pb.Fd) error {
	if fr.inherit[f.Fd] {
		fd, err := fr.receiveInherited(f.Fd)
		if err != nil {
			return err
		}
		fr.temp[f.Fd] = fd
		return nil
	}
	var (
		fd  uintptr
		err error
	)
	switch k := f.Kind.(type) {
	case *pb.Fd_File:
		fd, err = fr.openFile(f, k.File)
	case *pb.Fd_Device:
		fd, err = fr.openDevice(f, k.Device)
	case *pb.Fd_Pipe:
		if k.Pipe.FifoPath != "" {
			fd, err = fr.openFifo(f, k.Pipe)
		} else {
			fd, err = fr.pipeEnd(f, k.Pipe)
		}
	case *pb.Fd_Eventfd:
		fd, err = fr.eventfd(f, k.Eventfd)
	case *pb.Fd_Timerfd:
		fd, err = fr.timerfd(f, k.Timerfd)
	case *pb.Fd_Signalfd:
		fd, err = fr.signalfd(f, k.Signalfd)
	case *pb.Fd_Epoll:
		fd, err = fr.epoll(f)
	case *pb.Fd_InetSocket:
		fd, err = fr.socket(f, k.InetSocket)
	default:
		return fmt.Errorf("fd %d: unknown kind %T in the image", f.Fd, f.Kind)
	}
	if err != nil {
		return err
	}
	fr.temp[f.Fd] = fd
	return nil
}

// openFlags are the flags to reopen an fd by path with: the recorded ones
// without those that create or truncate, O_CLOEXEC (the final FD_CLOEXEC is
// set by dup3) and O_NOCTTY (a tty must not become the stub's controlling
// terminal by accident).
func openFlags(flags uint32) uintptr {
	return uintptr(flags&^(unix.O_CREAT|unix.O_TRUNC|unix.O_EXCL|oTmpfileOnly)) | unix.O_CLOEXEC | unix.O_NOCTTY
}

// openAt opens path in the process and moves it to a temporary number.
func (fr *fdRestorer) openAt(path string, flags uintptr) (uintptr, error) {
	b := fr.r.b
	addr, err := b.putString(scratchPath, path)
	if err != nil {
		return 0, err
	}
	fd, err := b.call(unix.SYS_OPENAT, atFdcwd, addr, flags, 0)
	if err != nil {
		return 0, err
	}
	return fr.moveHigh(fd)
}

// checkFdFile makes sure path is still the file (inode and device) the
// dump saw; a symlink opened with O_PATH|O_NOFOLLOW is checked itself.
func checkFdFile(fd int32, id *pb.FileID, mode uint32) error {
	if id == nil {
		return fmt.Errorf("fd %d: %w: no file recorded", fd, ErrFileChanged)
	}
	var st unix.Stat_t
	stat := unix.Stat
	if mode&unix.S_IFMT == unix.S_IFLNK {
		stat = unix.Lstat
	}
	if err := stat(id.Path, &st); err != nil {
		return fmt.Errorf("fd %d: %w: %s: %w", fd, ErrFileChanged, id.Path, err)
	}
	if st.Ino != id.Inode || st.Dev != id.Dev {
		return fmt.Errorf("fd %d: %w: %s is now inode %d on device %#x, the dump had inode %d on %#x",
			fd, ErrFileChanged, id.Path, st.Ino, st.Dev, id.Inode, id.Dev)
	}
	return nil
}

func (fr *fdRestorer) openFile(f *pb.Fd, file *pb.RegularFile) (uintptr, error) {
	if err := checkFdFile(f.Fd, file.File, file.Mode); err != nil {
		return 0, err
	}
	fd, err := fr.openAt(file.File.Path, openFlags(f.Flags))
	if err != nil {
		return 0, fmt.Errorf("open fd %d %s: %w", f.Fd, file.File.Path, err)
	}
	if file.Pos != 0 && f.Flags&unix.O_PATH == 0 {
		if _, err := fr.r.b.call(unix.SYS_LSEEK, fd, uintptr(file.Pos), unix.SEEK_SET); err != nil {
			return 0, fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, file.File.Path, file.Pos, err)
		}
	}
	return fd, nil
}

func (fr *fdRestorer) openDevice(f *pb.Fd, dev *pb.Device) (uintptr, error) {
	if dev.File == nil {
		return 0, fmt.Errorf("fd %d: %w: no device file recorded", f.Fd, ErrFileChanged)
	}
	path := dev.File.Path
	fd, err := fr.openAt(path, openFlags(f.Flags))
	if err != nil {
		return 0, fmt.Errorf("open fd %d %s: %w", f.Fd, path, err)
	}
	// What was opened, through the process's own fd link.
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", fr.r.b.pid, fd), &st); err != nil {
		return 0, fmt.Errorf("stat fd %d %s: %w", f.Fd, path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != dev.RdevMajor || unix.Minor(st.Rdev) != dev.RdevMinor {
		return 0, fmt.Errorf("fd %d: %w: %s is now mode %#o device %d:%d, the dump had character device %d:%d",
			f.Fd, ErrFileChanged, path, st.Mode&unix.S_IFMT, unix.Major(st.Rdev), unix.Minor(st.Rdev), dev.RdevMajor, dev.RdevMinor)
	}
	if dev.Pos != 0 {
		_, err := fr.r.b.call(unix.SYS_LSEEK, fd, uintptr(dev.Pos), unix.SEEK_SET)
		if err != nil && !errors.Is(err, unix.ESPIPE) {
			return 0, fmt.Errorf("seek fd %d %s to %d: %w", f.Fd, path, dev.Pos, err)
		}
	}
	return fd, nil
}

// setfl sets an fd's file status flags; F_SETFL changes only O_APPEND,
// O_ASYNC, O_DIRECT, O_NOATIME and O_NONBLOCK and ignores the rest.
func (fr *fdRestorer) setfl(fd uintptr, flags uint32) error {
	_, err := fr.r.b.call(unix.SYS_FCNTL, fd, unix.F_SETFL, uintptr(flags&^unix.O_CLOEXEC))
	return err
}

// openFifo opens a named FIFO. It is opened O_NONBLOCK so that it does not
// wait for the other side (see fifo(7)); a write-only open with no reader
// fails ENXIO, so then a reader is held open for the time of the open.
func (fr *fdRestorer) openFifo(f *pb.Fd, p *pb.Pipe) (uintptr, error) {
	b := fr.r.b
	var st unix.Stat_t
	if err := unix.Stat(p.FifoPath, &st); err != nil {
		return 0, fmt.Errorf("fd %d: %w: %s: %w", f.Fd, ErrFileChanged, p.FifoPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Ino != p.Inode {
		return 0, fmt.Errorf("fd %d: %w: %s is now mode %#o inode %d, the dump had a FIFO with inode %d",
			f.Fd, ErrFileChanged, p.FifoPath, st.Mode&unix.S_IFMT, st.Ino, p.Inode)
	}
	flags := openFlags(f.Flags) | unix.O_NONBLOCK
	fd, err := fr.openAt(p.FifoPath, flags)
	if errors.Is(err, unix.ENXIO) {
		holder, herr := fr.openAt(p.FifoPath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC)
		if herr != nil {
			return 0, fmt.Errorf("open fd %d FIFO %s: %w", f.Fd, p.FifoPath, herr)
		}
		fd, err = fr.openAt(p.FifoPath, flags)
		_, _ = b.call(unix.SYS_CLOSE, holder)
	}
	if err != nil {
		return 0, fmt.Errorf("open fd %d FIFO %s: %w", f.Fd, p.FifoPath, err)
	}
	if err := fr.setfl(fd, f.Flags); err != nil {
		return 0, fmt.Errorf("set flags %#o of fd %d FIFO %s: %w", f.Flags, f.Fd, p.FifoPath, err)
	}
	return fd, nil
}

// pipeEnd returns the end of an anonymous pipe for image fd f, creating the
// pipe the first time one of its fds is seen.
func (fr *fdRestorer) pipeEnd(f *pb.Fd, p *pb.Pipe) (uintptr, error) {
	g := fr.pipes[p.Inode]
	if !g.made {
		if err := fr.makePipe(p.Inode, g); err != nil {
			return 0, err
		}
	}
	if p.WriteEnd {
		return g.w, nil
	}
	return g.r, nil
}

// makePipe creates one pipe for all the image fds of pipe:[ino], with
// their status flags, capacity and buffered data. The pipe is created
// O_NONBLOCK so that writing the data cannot block lazycr, and each end
// then gets its recorded flags.
func (fr *fdRestorer) makePipe(ino uint64, g *pipeGroup) error {
	b, log := fr.r.b, fr.r.opts.Log
	g.made = true
	first := g.read
	if len(first) == 0 {
		first = g.write
	}
	what := fmt.Sprintf("pipe:[%d] of fd %d", ino, first[0].Fd)
	if (len(g.read) == 0 || len(g.write) == 0) && fr.reopenLivePipe(ino, g, what) {
		return nil
	}
	addr, err := b.put(scratchArgs, make([]byte, 8))
	if err != nil {
		return err
	}
	if _, err := b.call(unix.SYS_PIPE2, addr, unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	out, err := b.get(scratchArgs, 8)
	if err != nil {
		return err
	}
	rfd, wfd := uintptr(binary.LittleEndian.Uint32(out)), uintptr(binary.LittleEndian.Uint32(out[4:]))
	if g.r, err = fr.moveHigh(rfd); err != nil {
		_, _ = b.call(unix.SYS_CLOSE, wfd)
		return fmt.Errorf("create %s: %w", what, err)
	}
	if g.w, err = fr.moveHigh(wfd); err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}

	var capacity uint32
	var data []byte
	for _, f := range append(slices.Clone(g.read), g.write...) {
		p := f.GetPipe()
		capacity = max(capacity, p.Capacity)
		if len(p.Data) > 0 {
			data = p.Data
		}
	}
	if capacity > 0 {
		if _, err := b.call(unix.SYS_FCNTL, g.w, unix.F_SETPIPE_SZ, uintptr(capacity)); err != nil {
			log.Warn().Err(err).Int32("fd", first[0].Fd).Uint32("capacity", capacity).
				Msg("cannot give the pipe its recorded capacity (fs.pipe-max-size?): keeping the default")
		}
	}
	if len(data) > 0 {
		if err := fr.fillPipe(g.w, data); err != nil {
			return fmt.Errorf("write %d buffered bytes into %s: %w", len(data), what, err)
		}
	}
	for _, end := range []struct {
		fds []*pb.Fd
		fd  *uintptr
	}{{g.read, &g.r}, {g.write, &g.w}} {
		if len(end.fds) == 0 {
			_, _ = b.call(unix.SYS_CLOSE, *end.fd)
			*end.fd = 0
			continue
		}
		flags := end.fds[0].Flags
		for _, f := range end.fds[1:] {
			if f.Flags != flags {
				log.Warn().Int32("fd", f.Fd).Int32("as_fd", end.fds[0].Fd).
					Msg("fds of one pipe end had different status flags: restored with one open file description")
			}
		}
		if err := fr.setfl(*end.fd, flags); err != nil {
			return fmt.Errorf("set flags %#o of fd %d (%s): %w", flags, end.fds[0].Fd, what, err)
		}
	}
	if len(g.read) == 0 || len(g.write) == 0 {
		f, missing := first[0], "write"
		if len(g.read) == 0 {
			missing = "read"
		}
		log.Warn().Int32("fd", f.Fd).Uint64("pipe", ino).
			Msgf("fd %d is one end of a pipe whose %s end was not dumped: it gets a fresh pipe with no peer (use --inherit-fd %d to pass one)", f.Fd, missing, f.Fd)
	}
	return nil
}

// fillPipe writes data into the process's pipe write end wfd from lazycr,
// through a copy taken with pidfd_getfd. The end is O_NONBLOCK: data that
// does not fit fails with EAGAIN instead of blocking.
func (fr *fdRestorer) fillPipe(wfd uintptr, data []byte) error {
	local, err := fr.getfd(wfd)
	if err != nil {
		return err
	}
	defer unix.Close(local)
	for len(data) > 0 {
		n, err := unix.Write(local, data)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		data = data[n:]
	}
	return nil
}

func (fr *fdRestorer) eventfd(f *pb.Fd, e *pb.EventFd) (uintptr, error) {
	b := fr.r.b
	flags := uintptr(unix.EFD_CLOEXEC)
	if e.Semaphore {
		flags |= unix.EFD_SEMAPHORE
	}
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.EFD_NONBLOCK
	}
	// eventfd2 takes an unsigned int; a larger count is written.
	var initval uintptr
	if e.Count <= math.MaxUint32 {
		initval = uintptr(e.Count)
	}
	fd, err := b.call(unix.SYS_EVENTFD2, initval, flags)
	if err != nil {
		return 0, fmt.Errorf("create eventfd fd %d: %w", f.Fd, err)
	}
	if fd, err = fr.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create eventfd fd %d: %w", f.Fd, err)
	}
	if e.Count > math.MaxUint32 {
		addr, err := b.put(scratchArgs, le(e.Count))
		if err != nil {
			return 0, err
		}
		if _, err := b.call(unix.SYS_WRITE, fd, addr, 8); err != nil {
			return 0, fmt.Errorf("set count %d of eventfd fd %d: %w", e.Count, f.Fd, err)
		}
	}
	return fd, nil
}

// timerfd re-arms a timerfd relative to now with the time it had left,
// and gives it back its unread expirations (TFD_IOC_SET_TICKS). See
// timerfd_create(2).
func (fr *fdRestorer) timerfd(f *pb.Fd, t *pb.TimerFd) (uintptr, error) {
	b, log := fr.r.b, fr.r.opts.Log
	flags := uintptr(unix.TFD_CLOEXEC)
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.TFD_NONBLOCK
	}
	fd, err := b.call(unix.SYS_TIMERFD_CREATE, uintptr(t.Clockid), flags)
	if err != nil {
		return 0, fmt.Errorf("create timerfd fd %d (clock %d): %w", f.Fd, t.Clockid, err)
	}
	if fd, err = fr.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create timerfd fd %d: %w", f.Fd, err)
	}
	if t.SettimeFlags&unix.TFD_TIMER_CANCEL_ON_SET != 0 {
		log.Warn().Int32("fd", f.Fd).Msg("timerfd had TFD_TIMER_CANCEL_ON_SET: it is re-armed relative, without it")
	}
	// An armed periodic timer that expired while the process was frozen,
	// its ticks not yet read, shows "it_value 0" in fdinfo: it is still
	// armed. Re-arm it one interval ahead; the missed ticks are set below.
	if t.ValueNs == 0 && t.IntervalNs > 0 {
		t.ValueNs = t.IntervalNs
	}
	if t.ValueNs > 0 {
		spec := le(t.IntervalNs/1e9, t.IntervalNs%1e9, t.ValueNs/1e9, t.ValueNs%1e9) // struct itimerspec
		addr, err := b.put(scratchArgs, spec)
		if err != nil {
			return 0, err
		}
		if _, err := b.call(unix.SYS_TIMERFD_SETTIME, fd, 0, addr, 0); err != nil {
			return 0, fmt.Errorf("arm timerfd fd %d (%d ns left, interval %d ns): %w", f.Fd, t.ValueNs, t.IntervalNs, err)
		}
	}
	if t.Ticks > 0 {
		addr, err := b.put(scratchArgs, le(t.Ticks))
		if err != nil {
			return 0, err
		}
		if _, err := b.call(unix.SYS_IOCTL, fd, tfdIocSetTicks, addr); err != nil {
			log.Warn().Err(err).Int32("fd", f.Fd).Uint64("ticks", t.Ticks).
				Msg("cannot give the timerfd its unread expirations (TFD_IOC_SET_TICKS needs CONFIG_CHECKPOINT_RESTORE)")
		}
	}
	return fd, nil
}

func (fr *fdRestorer) signalfd(f *pb.Fd, s *pb.SignalFd) (uintptr, error) {
	b := fr.r.b
	flags := uintptr(unix.SFD_CLOEXEC)
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.SFD_NONBLOCK
	}
	addr, err := b.put(scratchArgs, le(s.Sigmask))
	if err != nil {
		return 0, err
	}
	fd, err := b.call(unix.SYS_SIGNALFD4, ^uintptr(0), addr, 8, flags)
	if err != nil {
		return 0, fmt.Errorf("create signalfd fd %d (mask %#x): %w", f.Fd, s.Sigmask, err)
	}
	if fd, err = fr.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create signalfd fd %d: %w", f.Fd, err)
	}
	return fd, nil
}

// epoll creates an empty epoll instance; fillEpoll adds its targets once
// every fd has its final number.
func (fr *fdRestorer) epoll(f *pb.Fd) (uintptr, error) {
	fd, err := fr.r.b.call(unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("create epoll fd %d: %w", f.Fd, err)
	}
	if fd, err = fr.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create epoll fd %d: %w", f.Fd, err)
	}
	return fd, nil
}

// fillEpoll adds the recorded targets to epoll fd epfd (final numbers).
// struct epoll_event is packed on x86-64: 12 bytes. See epoll_ctl(2).
func (fr *fdRestorer) fillEpoll(epfd int32, ep *pb.Epoll, inImage map[int32]bool) error {
	b := fr.r.b
	for _, t := range ep.Targets {
		if !inImage[t.Fd] {
			fr.r.opts.Log.Warn().Int32("fd", epfd).Int32("target", t.Fd).
				Msg("epoll target is not in the fd table: skipped")
			continue
		}
		addr, err := b.put(scratchArgs, le(t.Events, t.Data))
		if err != nil {
			return err
		}
		if _, err := b.call(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr); err != nil {
			return fmt.Errorf("add fd %d (events %#x) to epoll fd %d: %w", t.Fd, t.Events, epfd, err)
		}
	}
	return nil
}

// localAddrFor is the address an inet socket is bound to here. netfix may
// later map the image's addresses to this host's.
func localAddrFor(s *pb.InetSocket) string {
	return s.LocalAddr
}

// sockaddrOf builds the sockaddr of addr:port for family.
func sockaddrOf(family int32, addr string, port uint32) (unix.Sockaddr, netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, netip.AddrPort{}, fmt.Errorf("parse address %q: %w", addr, err)
	}
	ap := netip.AddrPortFrom(a, uint16(port))
	switch family {
	case unix.AF_INET:
		if !a.Unmap().Is4() {
			return nil, ap, fmt.Errorf("address %s is not IPv4", a)
		}
		return &unix.SockaddrInet4{Port: int(port), Addr: a.Unmap().As4()}, ap, nil
	case unix.AF_INET6:
		sa := &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
		if z := a.Zone(); z != "" {
			id, err := strconv.ParseUint(z, 10, 32)
			if err != nil {
				return nil, ap, fmt.Errorf("address %s: zone is not an interface index", a)
			}
			sa.ZoneId = uint32(id)
		}
		return sa, ap, nil
	}
	return nil, ap, fmt.Errorf("socket family %d is not inet", family)
}

// socket creates an inet socket in the process and configures it from
// lazycr through a pidfd_getfd copy: options, bind, connect or listen act
// on the socket (and its network namespace), not on the fd.
func (fr *fdRestorer) socket(f *pb.Fd, s *pb.InetSocket) (uintptr, error) {
	typ := uintptr(s.Type) | unix.SOCK_CLOEXEC
	if f.Flags&unix.O_NONBLOCK != 0 {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := fr.r.b.call(unix.SYS_SOCKET, uintptr(s.Family), typ, uintptr(s.Protocol))
	if err != nil {
		return 0, fmt.Errorf("create socket fd %d (family %d type %d protocol %d): %w", f.Fd, s.Family, s.Type, s.Protocol, err)
	}
	if fd, err = fr.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create socket fd %d: %w", f.Fd, err)
	}
	local, err := fr.getfd(fd)
	if err != nil {
		return 0, fmt.Errorf("socket fd %d: %w", f.Fd, err)
	}
	defer unix.Close(local)
	if err := setSockopts(local, f.Fd, s); err != nil {
		return 0, err
	}
	la, lap, err := sockaddrOf(s.Family, localAddrFor(s), s.LocalPort)
	if err != nil {
		return 0, fmt.Errorf("socket fd %d: local %w", f.Fd, err)
	}
	if s.LocalPort != 0 || !lap.Addr().IsUnspecified() {
		if err := unix.Bind(local, la); err != nil {
			return 0, fmt.Errorf("bind fd %d to %s: %w", f.Fd, lap, err)
		}
	}
	switch {
	case s.Listening:
		if err := unix.Listen(local, int(s.Backlog)); err != nil {
			return 0, fmt.Errorf("listen on fd %d %s: %w", f.Fd, lap, err)
		}
	case s.PeerAddr != "" && s.Type == unix.SOCK_DGRAM:
		pa, pap, err := sockaddrOf(s.Family, s.PeerAddr, s.PeerPort)
		if err != nil {
			return 0, fmt.Errorf("socket fd %d: peer %w", f.Fd, err)
		}
		if err := unix.Connect(local, pa); err != nil {
			return 0, fmt.Errorf("connect fd %d to %s: %w", f.Fd, pap, err)
		}
	case s.PeerAddr != "":
		return 0, fmt.Errorf("socket fd %d: connected socket of type %d cannot be restored", f.Fd, s.Type)
	}
	return fd, nil
}

// setSockopts applies the recorded options before bind. Values that the
// kernel derives (buffer sizes, TOS, TTL, V6ONLY) are set only when they
// differ from what the fresh socket has, so that defaults stay defaults
// (a set SO_RCVBUF turns TCP autotuning off). See socket(7), ip(7), ipv6(7).
func setSockopts(fd int, num int32, s *pb.InetSocket) error {
	o := s.Options
	if o == nil {
		return nil
	}
	set := func(level, opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return fmt.Errorf("set %s=%d on socket fd %d: %w", name, v, num, os.NewSyscallError("setsockopt", err))
		}
		return nil
	}
	setIf := func(cond bool, level, opt int, name string, v int) error {
		if !cond {
			return nil
		}
		return set(level, opt, name, v)
	}
	setDiff := func(level, opt int, name string, want int) error {
		have, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return fmt.Errorf("read %s of socket fd %d: %w", name, num, os.NewSyscallError("getsockopt", err))
		}
		if have == want {
			return nil
		}
		return set(level, opt, name, want)
	}
	setBuf := func(opt int, name string, want int32) error {
		// The kernel doubles what is set; the record is the doubled value.
		if want <= 0 {
			return nil
		}
		have, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return fmt.Errorf("read %s of socket fd %d: %w", name, num, os.NewSyscallError("getsockopt", err))
		}
		if have == int(want) {
			return nil
		}
		return set(unix.SOL_SOCKET, opt, name, int(want/2))
	}
	v6 := s.Family == unix.AF_INET6
	errs := []error{
		setIf(o.Reuseaddr, unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", 1),
		setIf(o.Reuseport, unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT", 1),
		setIf(o.Broadcast, unix.SOL_SOCKET, unix.SO_BROADCAST, "SO_BROADCAST", 1),
		setIf(o.Keepalive, unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", 1),
		setIf(o.Priority != 0, unix.SOL_SOCKET, unix.SO_PRIORITY, "SO_PRIORITY", int(o.Priority)),
		setIf(o.Mark != 0, unix.SOL_SOCKET, unix.SO_MARK, "SO_MARK", int(o.Mark)),
		setBuf(unix.SO_SNDBUF, "SO_SNDBUF", o.Sndbuf),
		setBuf(unix.SO_RCVBUF, "SO_RCVBUF", o.Rcvbuf),
	}
	if o.BindToDevice != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, o.BindToDevice); err != nil {
			errs = append(errs, fmt.Errorf("bind socket fd %d to device %s: %w", num, o.BindToDevice, os.NewSyscallError("setsockopt SO_BINDTODEVICE", err)))
		}
	}
	if v6 {
		v6only := 0
		if o.Ipv6Only {
			v6only = 1
		}
		errs = append(errs,
			setDiff(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY", v6only),
			setIf(o.Tos != 0, unix.IPPROTO_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS", int(o.Tos)),
			setIf(o.RecvErr, unix.IPPROTO_IPV6, unix.IPV6_RECVERR, "IPV6_RECVERR", 1),
			setIf(o.Pktinfo, unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO", 1),
		)
		if o.Ttl > 0 {
			errs = append(errs, setDiff(unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", int(o.Ttl)))
		}
	} else {
		errs = append(errs,
			setDiff(unix.IPPROTO_IP, unix.IP_TOS, "IP_TOS", int(o.Tos)),
			setIf(o.RecvErr, unix.IPPROTO_IP, unix.IP_RECVERR, "IP_RECVERR", 1),
			setIf(o.Pktinfo, unix.IPPROTO_IP, unix.IP_PKTINFO, "IP_PKTINFO", 1),
		)
		if o.Ttl > 0 {
			errs = append(errs, setDiff(unix.IPPROTO_IP, unix.IP_TTL, "IP_TTL", int(o.Ttl)))
		}
	}
	return errors.Join(errs...)
}

// receiveInherited passes lazycr's own fd n into the process with
// SCM_RIGHTS over an injected AF_UNIX socketpair (see unix(7)) and returns
// it at a temporary number.
func (fr *fdRestorer) receiveInherited(n int32) (uintptr, error) {
	b := fr.r.b
	if _, err := unix.FcntlInt(uintptr(n), unix.F_GETFD, 0); err != nil {
		return 0, fmt.Errorf("inherit fd %d: lazycr has no fd %d open: %w", n, n, os.NewSyscallError("fcntl F_GETFD", err))
	}
	if fr.sendFd < 0 {
		addr, err := b.put(scratchArgs, make([]byte, 8))
		if err != nil {
			return 0, err
		}
		if _, err := b.call(unix.SYS_SOCKETPAIR, unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0, addr); err != nil {
			return 0, fmt.Errorf("inherit fd %d: create socketpair: %w", n, err)
		}
		out, err := b.get(scratchArgs, 8)
		if err != nil {
			return 0, err
		}
		recv, send := uintptr(binary.LittleEndian.Uint32(out)), uintptr(binary.LittleEndian.Uint32(out[4:]))
		if fr.recvFd, err = fr.moveHigh(recv); err != nil {
			_, _ = b.call(unix.SYS_CLOSE, send)
			return 0, fmt.Errorf("inherit fd %d: %w", n, err)
		}
		local, err := fr.getfd(send)
		_, _ = b.call(unix.SYS_CLOSE, send)
		if err != nil {
			return 0, fmt.Errorf("inherit fd %d: %w", n, err)
		}
		fr.sendFd = local
	}
	if err := unix.Sendmsg(fr.sendFd, []byte{0}, unix.UnixRights(int(n)), nil, 0); err != nil {
		return 0, fmt.Errorf("inherit fd %d: send it: %w", n, os.NewSyscallError("sendmsg", err))
	}
	// struct msghdr (56 bytes), then one iovec of one byte, then the
	// control buffer: CMSG_SPACE(sizeof(int)) = 24 bytes.
	const (
		hdrOff  = scratchMsg
		iovOff  = hdrOff + 56
		dataOff = iovOff + 16
		cmsgOff = dataOff + 8
		cmsgLen = 24
	)
	at := func(off int) uint64 { return uint64(b.scratch) + uint64(off) }
	msg := le(uint64(0), uint32(0), uint32(0), at(iovOff), uint64(1), at(cmsgOff), uint64(cmsgLen), int32(0), int32(0))
	msg = append(msg, le(at(dataOff), uint64(1))...)
	msg = append(msg, make([]byte, 8+cmsgLen)...)
	addr, err := b.put(hdrOff, msg)
	if err != nil {
		return 0, err
	}
	if _, err := b.call(unix.SYS_RECVMSG, fr.recvFd, addr, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT); err != nil {
		return 0, fmt.Errorf("inherit fd %d: receive it: %w", n, err)
	}
	hdr, err := b.get(hdrOff, 56)
	if err != nil {
		return 0, err
	}
	cmsg, err := b.get(cmsgOff, cmsgLen)
	if err != nil {
		return 0, err
	}
	flags := binary.LittleEndian.Uint32(hdr[48:])
	clen := binary.LittleEndian.Uint64(hdr[40:])
	if flags&unix.MSG_CTRUNC != 0 || clen < 20 ||
		binary.LittleEndian.Uint64(cmsg) != 20 ||
		int32(binary.LittleEndian.Uint32(cmsg[8:])) != unix.SOL_SOCKET ||
		int32(binary.LittleEndian.Uint32(cmsg[12:])) != unix.SCM_RIGHTS {
		return 0, fmt.Errorf("inherit fd %d: the process received no SCM_RIGHTS message (flags %#x, control %d bytes)", n, flags, clen)
	}
	got := uintptr(binary.LittleEndian.Uint32(cmsg[16:]))
	fd, err := fr.moveHigh(got)
	if err != nil {
		return 0, fmt.Errorf("inherit fd %d: %w", n, err)
	}
	fr.r.opts.Log.Debug().Int32("fd", n).Msg("inherited fd from lazycr")
	return fd, nil
}

// reopenLivePipe handles a pipe of which the image has one end only (its
// peer was not dumped: a shell pipeline, a harness reading stdout) when
// restoring on the host it was dumped on: if some process here still holds
// pipe:[ino], the restored end is opened through /proc/PID/fd/N of that
// holder — a pipe reopened through /proc is the same pipe, with the access
// mode asked for (see proc(5), /proc/pid/fd) — so the peer keeps talking
// to the restored process. It reports whether it did.
func (fr *fdRestorer) reopenLivePipe(ino uint64, g *pipeGroup, what string) bool {
	b, log := fr.r.b, fr.r.opts.Log
	holder := findPipeHolder(ino, b.pid)
	if holder == "" {
		return false
	}
	end, fds, acc := &g.r, g.read, unix.O_RDONLY
	if len(g.read) == 0 {
		end, fds, acc = &g.w, g.write, unix.O_WRONLY
	}
	path, err := b.putString(scratchArgs, holder)
	if err != nil {
		return false
	}
	// O_NONBLOCK: opening a pipe for writing with no reader would block
	// (it fails ENXIO instead, and a fresh pipe is made).
	fd, err := b.call(unix.SYS_OPENAT, atFdcwd, path, uintptr(acc|unix.O_CLOEXEC|unix.O_NONBLOCK), 0)
	if err != nil {
		log.Debug().Err(err).Str("holder", holder).Msg("reopen " + what)
		return false
	}
	if fd, err = fr.moveHigh(fd); err != nil {
		return false
	}
	if err := fr.setfl(fd, fds[0].Flags); err != nil {
		b.call(unix.SYS_CLOSE, fd)
		return false
	}
	*end = fd
	log.Info().Int32("fd", fds[0].Fd).Uint64("pipe", ino).Str("via", holder).
		Msgf("fd %d: its pipe's peer was not dumped but the pipe is still alive here: reconnected to it", fds[0].Fd)
	return true
}

// findPipeHolder returns /proc/PID/fd/N of a process other than skip that
// has pipe:[ino] open, or "".
func findPipeHolder(ino uint64, skip int) string {
	want := fmt.Sprintf("pipe:[%d]", ino)
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return ""
	}
	self := os.Getpid()
	// lazycr's own fds first: it may hold the same inherited pipe.
	order := []string{strconv.Itoa(self)}
	for _, e := range procs {
		if n, err := strconv.Atoi(e.Name()); err == nil && n != skip && n != self {
			order = append(order, e.Name())
		}
	}
	for _, pid := range order {
		dir := "/proc/" + pid + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range fds {
			if t, err := os.Readlink(dir + "/" + f.Name()); err == nil && t == want {
				return dir + "/" + f.Name()
			}
		}
	}
	return ""
}
