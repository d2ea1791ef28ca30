package files

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// fifo is one end of a named FIFO (fifo(7)), reopened by its path. Its
// buffered data is recorded on the first read end. When no other process
// has the FIFO open, the data dies with the process and restore writes it
// back. When others hold it (a writer feeding the process, a reader it
// feeds), they are recorded like a pipe's holders (livepipe.go) and the
// data stays in the kernel, kept by them: restore reopens the path, which
// on the same boot with a holder still alive is that live FIFO, data and
// all. Where no holder can be found (another boot or host, the holders
// gone) the path is still reopened — a FIFO is reached by its name, so
// whoever opens it next is the process's peer, as if the old one had
// closed it — unless the dump saw bytes buffered: the process's peer may
// have read them since or not, so they could be neither written back nor
// dropped, and restore refuses ([ErrHeldOutside]) naming the holders and
// --inherit-fd.
type fifo struct{}

// fileKey identifies a file: device and inode.
type fileKey struct{ dev, ino uint64 }

// fifoState is what the dump found out about one FIFO.
type fifoState struct {
	own       bool // the buffered data is the process's alone
	holders   []*pb.PipeHolder
	dataTaken bool
}

func (fifo) name() string { return "fifo" }

func (fifo) claims(l *liveFd) bool {
	return l.st.Mode&unix.S_IFMT == unix.S_IFIFO && isPath(l)
}

func (fifo) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	acc := l.info.Flags & unix.O_ACCMODE
	p := &pb.Pipe{Inode: l.st.Ino, WriteEnd: acc == unix.O_WRONLY, FifoPath: l.target}
	if sz, err := unix.FcntlInt(uintptr(l.local), unix.F_GETPIPE_SZ, 0); err == nil {
		p.Capacity = uint32(sz)
	}
	s := d.fifo(l)
	p.Holders = s.holders
	p.SharedHolder, p.SharedFd = sharedWithHolder(d.pid, l.num, l.target, p.Holders)
	if !p.WriteEnd && (s.own || len(s.holders) > 0) && !s.dataTaken {
		data, _, err := peekPipe(l.local, int(p.Capacity))
		if err != nil {
			return fmt.Errorf("copy FIFO %s data: %w", l.target, err)
		}
		p.Data = data
		s.dataTaken = true
	}
	out.Kind = &pb.Fd_Pipe{Pipe: p}
	return nil
}

// fifo finds out who else holds the FIFO l has open, and so whether its
// buffered data is the process's alone (it has a reader to peek through,
// and no one else holds it).
func (d *dumper) fifo(l *liveFd) *fifoState {
	key := fileKey{l.st.Dev, l.st.Ino}
	if s := d.fifos[key]; s != nil {
		return s
	}
	s := &fifoState{}
	d.fifos[key] = s
	var reader bool
	for i, f := range d.fds {
		if f.Target != l.target || !sameFile(fmt.Sprintf("/proc/%d/fd/%d", d.pid, f.Num), key) {
			continue
		}
		if d.infos[i].Flags&unix.O_ACCMODE != unix.O_WRONLY {
			reader = true
		}
	}
	holders, known := fifoHolders(l.target, key, d.pid, os.Getpid())
	s.holders = holders
	s.own = reader && known && len(holders) == 0
	return s
}

// sameFile reports whether path (a /proc fd link, followed) is the file key.
func sameFile(path string, key fileKey) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Dev == key.dev && st.Ino == key.ino
}

// fifoHolders returns the processes other than pid and self that have
// the file key (opened as path) open, as the dump records them (at most
// maxHolders), and whether it could tell (it reads every process's fd
// table; without /proc it cannot, and the data is not taken).
func fifoHolders(path string, key fileKey, pid, self int) ([]*pb.PipeHolder, bool) {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	ns, err := pidNS()
	if err != nil {
		return nil, false
	}
	var out []*pb.PipeHolder
	for _, e := range procs {
		other, err := strconv.Atoi(e.Name())
		if err != nil || other == pid || other == self {
			continue
		}
		if len(out) >= maxHolders {
			break
		}
		fds, err := proc.ReadFds(other)
		if err != nil {
			continue
		}
		for _, f := range fds {
			if f.Target != path || !sameFile(fmt.Sprintf("/proc/%d/fd/%d", other, f.Num), key) {
				continue
			}
			start, err := proc.ProcessIdentity(other)
			if err != nil {
				break
			}
			st, err := proc.ReadStatus(other)
			if err != nil {
				break
			}
			out = append(out, &pb.PipeHolder{Pid: uint32(other), StartTime: start, Uid: st.Uid[0], PidNs: ns})
			break
		}
	}
	return out, true
}

// liveFifoHolder returns the pid of the first of holders that is still
// the process the dump saw and still has the FIFO key (opened as path)
// open, on the image's boot (livepipe.go).
func (r *restorer) liveFifoHolder(holders []*pb.PipeHolder, path string, key fileKey) (int, error) {
	here, err := BootID()
	if err != nil {
		return 0, err
	}
	if r.bootID == "" || here != r.bootID {
		return 0, fmt.Errorf("%w (boot id %q, here %q)", errForeignBoot, r.bootID, here)
	}
	var errs []error
	for _, h := range holders {
		_, err := liveHolderFd(h, path, func(pid int, f proc.Fd) bool {
			return f.Target == path && sameFile(fmt.Sprintf("/proc/%d/fd/%d", pid, f.Num), key)
		})
		if err == nil {
			return int(h.Pid), nil
		}
		errs = append(errs, err)
	}
	return 0, errors.Join(errs...)
}

func (fifo) owns(f *pb.Fd) bool { p := f.GetPipe(); return p != nil && p.FifoPath != "" }

func (fifo) show(f *pb.Fd) string { return showPipe(f.GetPipe()) }

// create opens the FIFO. It is opened O_NONBLOCK so that it does not wait
// for the other side (see fifo(7)); a write-only open with no reader fails
// ENXIO, so then a reader is held open for the time of the open. The
// recorded flags are then set with F_SETFL, and the recorded data written
// back if the FIFO was the process's alone and is empty now (see the top
// of this file for a FIFO others held).
func (fifo) create(r *restorer, f *pb.Fd) (uintptr, error) {
	p := f.GetPipe()
	var st unix.Stat_t
	if err := unix.Stat(p.FifoPath, &st); err != nil {
		return 0, fmt.Errorf("fd %d: %w: %s: %w", f.Fd, ErrFileChanged, p.FifoPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO || st.Ino != p.Inode {
		return 0, fmt.Errorf("fd %d: %w: %s is now mode %#o inode %d, the dump had a FIFO with inode %d",
			f.Fd, ErrFileChanged, p.FifoPath, st.Mode&unix.S_IFMT, st.Ino, p.Inode)
	}
	live := false
	if holders := p.Holders[:min(len(p.Holders), maxHolders)]; len(holders) > 0 {
		log := r.log.With().Int32("fd", f.Fd).Str("fifo", p.FifoPath).Logger()
		holder, err := r.liveFifoHolder(holders, p.FifoPath, fileKey{st.Dev, st.Ino})
		switch {
		case err == nil:
			live = true
			log.Info().Int("holder", holder).
				Msgf("fd %d: FIFO %s is still held by pid %d, as at the dump: reopened, the live FIFO with its data", f.Fd, p.FifoPath, holder)
		case len(p.Data) > 0:
			return 0, fmt.Errorf("fd %d: FIFO %s %w: %d bytes were buffered in it at the dump, kept by %s, but %w; reopened, they would be lost or read twice: pass the FIFO with --inherit-fd %d",
				f.Fd, p.FifoPath, ErrHeldOutside, len(p.Data), holderList(holders), err, f.Fd)
		default:
			log.Warn().Err(err).
				Msgf("fd %d: FIFO %s was also held by %s, which cannot be found here: reopened by its name, whoever opens it now is its peer", f.Fd, p.FifoPath, holderList(holders))
		}
	}
	if live {
		// The very description it shared with a holder, if it did.
		if fd, ok := r.sharedDescription(f, p.FifoPath); ok {
			return fd, nil
		}
	}
	flags := openFlags(f.Flags) | unix.O_NONBLOCK
	fd, err := r.openAt(p.FifoPath, flags)
	if errors.Is(err, unix.ENXIO) {
		holder, herr := r.openAt(p.FifoPath, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC)
		if herr != nil {
			return 0, fmt.Errorf("open fd %d FIFO %s: %w", f.Fd, p.FifoPath, herr)
		}
		fd, err = r.openAt(p.FifoPath, flags)
		r.closeRemote(holder)
	}
	if err != nil {
		return 0, fmt.Errorf("open fd %d FIFO %s: %w", f.Fd, p.FifoPath, err)
	}
	if p.Capacity > 0 && !live { // a live FIFO keeps its own
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_SETPIPE_SZ, uintptr(p.Capacity)); err != nil {
			r.log.Warn().Err(err).Int32("fd", f.Fd).Uint32("capacity", p.Capacity).
				Msg("cannot give the FIFO its recorded capacity (fs.pipe-max-size?): keeping the default")
		}
	}
	if len(p.Data) > 0 && len(p.Holders) == 0 {
		if err := r.fillFifo(fd, p.Data); err != nil {
			return 0, fmt.Errorf("write %d buffered bytes into fd %d FIFO %s: %w", len(p.Data), f.Fd, p.FifoPath, err)
		}
	}
	if err := r.setfl(fd, f.Flags); err != nil {
		return 0, fmt.Errorf("set flags %#o of fd %d FIFO %s: %w", f.Flags, f.Fd, p.FifoPath, err)
	}
	return fd, nil
}

// fillFifo writes data into the FIFO whose read end is the process's fd
// rfd, through a write end lazycr opens on /proc/PID/fd/rfd (the same
// FIFO; a reader exists, so the non-blocking open succeeds). Nothing is
// written when the FIFO already holds data.
func (r *restorer) fillFifo(rfd uintptr, data []byte) error {
	local, err := r.getfd(rfd)
	if err != nil {
		return err
	}
	n, err := unix.IoctlGetInt(local, unix.TIOCINQ) // FIONREAD
	unix.Close(local)
	if err != nil {
		return os.NewSyscallError("ioctl FIONREAD", err)
	}
	if n > 0 {
		r.log.Warn().Int("buffered", n).Int("recorded", len(data)).Msg("the FIFO still holds data (someone kept it open): the recorded data is not written again")
		return nil
	}
	path := fmt.Sprintf("/proc/%d/fd/%d", r.pid, rfd)
	w, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s for writing: %w", path, os.NewSyscallError("open", err))
	}
	defer unix.Close(w)
	if len(data) > 65536 {
		if _, err := unix.FcntlInt(uintptr(w), unix.F_SETPIPE_SZ, len(data)); err != nil {
			return fmt.Errorf("grow FIFO to %d bytes: %w", len(data), os.NewSyscallError("fcntl F_SETPIPE_SZ", err))
		}
	}
	return writeFull(w, data)
}
