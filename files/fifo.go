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
// buffered data is recorded (on the first read end) when no other process
// has the FIFO open: then the data dies with the process and must come
// back with it. Otherwise it stays in the kernel, kept by the other
// holder.
type fifo struct{}

// fileKey identifies a file: device and inode.
type fileKey struct{ dev, ino uint64 }

// fifoState is what the dump found out about one FIFO.
type fifoState struct {
	own       bool // the buffered data is the process's alone
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
	if !p.WriteEnd {
		s := d.fifo(l)
		if s.own && !s.dataTaken {
			data, err := peekPipe(l.local, int(p.Capacity))
			if err != nil {
				return fmt.Errorf("copy FIFO %s data: %w", l.target, err)
			}
			p.Data = data
			s.dataTaken = true
		}
	}
	out.Kind = &pb.Fd_Pipe{Pipe: p}
	return nil
}

// fifo finds out whether the process alone holds the FIFO l has open, with
// a reader (the data is peeked through a read end).
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
	s.own = reader && !heldElsewhere(l.target, key, d.pid, os.Getpid())
	return s
}

// sameFile reports whether path (a /proc fd link, followed) is the file key.
func sameFile(path string, key fileKey) bool {
	var st unix.Stat_t
	return unix.Stat(path, &st) == nil && st.Dev == key.dev && st.Ino == key.ino
}

// heldElsewhere reports whether a process other than pid and self has the
// file key (opened as path) open.
func heldElsewhere(path string, key fileKey, pid, self int) bool {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell: the data is not taken
	}
	for _, e := range procs {
		other, err := strconv.Atoi(e.Name())
		if err != nil || other == pid || other == self {
			continue
		}
		fds, err := proc.ReadFds(other)
		if err != nil {
			continue
		}
		for _, f := range fds {
			if f.Target == path && sameFile(fmt.Sprintf("/proc/%d/fd/%d", other, f.Num), key) {
				return true
			}
		}
	}
	return false
}

func (fifo) owns(f *pb.Fd) bool { p := f.GetPipe(); return p != nil && p.FifoPath != "" }

func (fifo) show(f *pb.Fd) string { return showPipe(f.GetPipe()) }

// create opens the FIFO. It is opened O_NONBLOCK so that it does not wait
// for the other side (see fifo(7)); a write-only open with no reader fails
// ENXIO, so then a reader is held open for the time of the open. The
// recorded flags are then set with F_SETFL, and the recorded data written
// back if the FIFO is empty (a FIFO someone else kept open still has it).
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
	if p.Capacity > 0 {
		if _, err := r.rem.Syscall(unix.SYS_FCNTL, fd, unix.F_SETPIPE_SZ, uintptr(p.Capacity)); err != nil {
			r.log.Warn().Err(err).Int32("fd", f.Fd).Uint32("capacity", p.Capacity).
				Msg("cannot give the FIFO its recorded capacity (fs.pipe-max-size?): keeping the default")
		}
	}
	if len(p.Data) > 0 {
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
