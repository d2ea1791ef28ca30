package files

import (
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// fifo is one end of a named FIFO (fifo(7)), reopened by its path.
type fifo struct{}

func (fifo) name() string { return "pipe" }

func (fifo) claims(l *liveFd) bool {
	return l.st.Mode&unix.S_IFMT == unix.S_IFIFO && isPath(l)
}

func (fifo) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	p := &pb.Pipe{Inode: l.st.Ino, WriteEnd: l.info.Flags&unix.O_ACCMODE == unix.O_WRONLY, FifoPath: l.target}
	if sz, err := unix.FcntlInt(uintptr(l.local), unix.F_GETPIPE_SZ, 0); err == nil {
		p.Capacity = uint32(sz)
	}
	out.Kind = &pb.Fd_Pipe{Pipe: p}
	return nil
}

func (fifo) owns(f *pb.Fd) bool { p := f.GetPipe(); return p != nil && p.FifoPath != "" }

func (fifo) show(f *pb.Fd) string { return showPipe(f.GetPipe()) }

// create opens the FIFO. It is opened O_NONBLOCK so that it does not wait
// for the other side (see fifo(7)); a write-only open with no reader fails
// ENXIO, so then a reader is held open for the time of the open.
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
	if err := r.setfl(fd, f.Flags); err != nil {
		return 0, fmt.Errorf("set flags %#o of fd %d FIFO %s: %w", f.Flags, f.Fd, p.FifoPath, err)
	}
	return fd, nil
}
