package files

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lazycr/lazycr/internal/kabi"
	"google.golang.org/protobuf/proto"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// epoll is an epoll instance (epoll(7)) and its interest list, from the
// fdinfo "tfd:" lines. The list names fds of the process, so it is filled
// once every fd has its final number.
type epoll struct{}

func (epoll) name() string { return "epoll" }

func (epoll) claims(l *liveFd) bool { return l.link == proc.KindAnonInode && l.anon == "eventpoll" }

// dump records each target under the fd number it was added with (the
// interest list's key, with the file). When that number was closed since,
// or now names another file (the target was a dup), an fd of the process
// that does refer to the watched file is found with kcmp(2)
// KCMP_EPOLL_TFD and recorded as FileFd; a target no fd refers to is
// refused. (CRIU's eventpoll.c resolves targets the same way.)
func (epoll) dump(d *dumper, l *liveFd, out *pb.Fd) error {
	ep := &pb.Epoll{}
	toff := map[int]uint32{}
	for _, t := range l.info.Epoll {
		et := &pb.EpollTarget{Fd: int32(t.Tfd), Events: t.Events, Data: t.Data}
		slot := &kabi.KcmpEpollSlot{Efd: uint32(l.num), Tfd: uint32(t.Tfd), Toff: toff[t.Tfd]}
		toff[t.Tfd]++
		file, err := d.epollFile(slot)
		if err != nil {
			return fmt.Errorf("epoll target fd %d (inode %d): %w", t.Tfd, t.Ino, err)
		}
		if file != t.Tfd {
			et.FileFd = proto.Int32(int32(file))
		}
		ep.Targets = append(ep.Targets, et)
	}
	out.Kind = &pb.Fd_Epoll{Epoll: ep}
	return nil
}

// epollFile returns an fd of the process that refers to the file slot
// watches: the slot's own number when it still does.
func (d *dumper) epollFile(slot *kabi.KcmpEpollSlot) (int, error) {
	order := []int{int(slot.Tfd)}
	for _, f := range d.fds {
		if f.Num != int(slot.Tfd) && f.Num != int(slot.Efd) {
			order = append(order, f.Num)
		}
	}
	for _, fd := range order {
		same, err := kabi.KcmpEpollTfd(d.pid, d.pid, fd, slot)
		if errors.Is(err, unix.EBADF) {
			continue // the number is closed
		}
		if err != nil {
			return 0, err
		}
		if same {
			return fd, nil
		}
	}
	return 0, fmt.Errorf("%w: no fd of the process refers to the watched file", ErrUnsupported)
}

func (epoll) owns(f *pb.Fd) bool { return f.GetEpoll() != nil }

// create makes an empty epoll instance; finish fills it.
func (epoll) create(r *restorer, f *pb.Fd) (uintptr, error) {
	fd, err := r.rem.Syscall(unix.SYS_EPOLL_CREATE1, unix.EPOLL_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("create epoll fd %d: %w", f.Fd, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create epoll fd %d: %w", f.Fd, err)
	}
	return fd, nil
}

// finish adds the recorded targets (final numbers). struct epoll_event is
// packed on x86-64: 12 bytes. See epoll_ctl(2). A target whose file is
// at another number (FileFd) is added under its own number all the same:
// the file is dup3'ed there for the time of the EPOLL_CTL_ADD (the number
// is free, or its fd is set aside and put back), so the interest list has
// the same (file, fd) key as in the dumped process.
func (epoll) finish(r *restorer, f *pb.Fd) error {
	for _, t := range f.GetEpoll().Targets {
		if t.FileFd == nil && !r.inImage[t.Fd] {
			return fmt.Errorf("epoll fd %d: target fd %d is not in the image", f.Fd, t.Fd)
		}
		if t.FileFd != nil && !r.inImage[*t.FileFd] {
			return fmt.Errorf("epoll fd %d: target fd %d's file, fd %d, is not in the image", f.Fd, t.Fd, *t.FileFd)
		}
		addr, err := r.rem.Put(scratchArgs, le(t.Events, t.Data))
		if err != nil {
			return err
		}
		undo, err := r.lendNumber(t)
		if err != nil {
			return fmt.Errorf("epoll fd %d target fd %d: %w", f.Fd, t.Fd, err)
		}
		_, err = r.rem.Syscall(unix.SYS_EPOLL_CTL, uintptr(f.Fd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr)
		if uerr := undo(); uerr != nil && err == nil {
			err = uerr
		}
		if err != nil {
			return fmt.Errorf("add fd %d (events %#x) to epoll fd %d: %w", t.Fd, t.Events, f.Fd, err)
		}
	}
	return nil
}

// lendNumber puts target t's file at number t.Fd when it lives at FileFd,
// and returns what undoes that: the number closed again, or its own fd put
// back with its FD_CLOEXEC.
func (r *restorer) lendNumber(t *pb.EpollTarget) (func() error, error) {
	if t.FileFd == nil {
		return func() error { return nil }, nil
	}
	file, num := uintptr(*t.FileFd), uintptr(t.Fd)
	if !r.inImage[t.Fd] {
		if _, err := r.rem.Syscall(unix.SYS_DUP3, file, num, unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("dup3 fd %d to %d: %w", file, num, err)
		}
		return func() error {
			_, err := r.rem.Syscall(unix.SYS_CLOSE, num)
			return err
		}, nil
	}
	aside, err := r.rem.Syscall(unix.SYS_FCNTL, num, unix.F_DUPFD_CLOEXEC, r.base)
	if err != nil {
		return nil, fmt.Errorf("set fd %d aside: %w", num, err)
	}
	if _, err := r.rem.Syscall(unix.SYS_DUP3, file, num, unix.O_CLOEXEC); err != nil {
		r.closeRemote(aside)
		return nil, fmt.Errorf("dup3 fd %d to %d: %w", file, num, err)
	}
	return func() error {
		var flags uintptr
		if r.cloexec[t.Fd] {
			flags = unix.O_CLOEXEC
		}
		if _, err := r.rem.Syscall(unix.SYS_DUP3, aside, num, flags); err != nil {
			return fmt.Errorf("put fd %d back: %w", num, err)
		}
		_, err := r.rem.Syscall(unix.SYS_CLOSE, aside)
		return err
	}, nil
}

func (epoll) show(f *pb.Fd) string {
	var ts []string
	for _, t := range f.GetEpoll().Targets {
		d := fmt.Sprintf("fd %d events %#x", t.Fd, t.Events)
		if t.FileFd != nil {
			d += fmt.Sprintf(" (its file is fd %d)", *t.FileFd)
		}
		ts = append(ts, d)
	}
	return strings.Join(ts, "; ")
}
