package files

import (
	"errors"
	"fmt"
	"os"
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
	n := 0
	for _, t := range l.info.Epoll {
		if disarmed(t.Events) {
			n++
		}
	}
	if n > maxDisarmed {
		return fmt.Errorf("%w: %d disarmed EPOLLONESHOT entries, more than lazycr can re-create at once (%d)", ErrUnsupported, n, maxDisarmed)
	}
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
		if disarmed(t.Events) {
			if err := d.canFire(file); err != nil {
				return fmt.Errorf("disarmed EPOLLONESHOT entry of fd %d: %w", t.Tfd, err)
			}
		}
		ep.Targets = append(ep.Targets, et)
	}
	out.Kind = &pb.Fd_Epoll{Epoll: ep}
	return nil
}

// canFire checks that the file at fd is ready for some event now: restore
// re-creates a disarmed EPOLLONESHOT entry by making it fire (see finish),
// which needs that. poll(2) on a copy of the fd.
func (d *dumper) canFire(fd int) error {
	local, err := unix.PidfdGetfd(d.pidfd, fd, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_getfd", err)
	}
	defer unix.Close(local)
	pfd := []unix.PollFd{{Fd: int32(local), Events: unix.POLLIN | unix.POLLOUT | unix.POLLPRI | unix.POLLRDHUP}}
	n, err := unix.Poll(pfd, 0)
	if err != nil {
		return os.NewSyscallError("poll", err)
	}
	if n == 0 || pfd[0].Revents == 0 {
		return fmt.Errorf("%w: its file is ready for no event, so restore could not re-create it disarmed", ErrUnsupported)
	}
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

// epPrivateBits are the epoll_event flags that are not events
// (EP_PRIVATE_BITS in fs/eventpoll.c): an EPOLLONESHOT entry that has
// fired keeps only these, and is disarmed until EPOLL_CTL_MOD.
const epPrivateBits = unix.EPOLLWAKEUP | unix.EPOLLONESHOT | unix.EPOLLET | unix.EPOLLEXCLUSIVE

// disarmed: a fired EPOLLONESHOT entry.
func disarmed(events uint32) bool {
	return events&unix.EPOLLONESHOT != 0 && events&^uint32(epPrivateBits) == 0
}

// finish adds the recorded targets (final numbers). struct epoll_event is
// packed on x86-64: 12 bytes. See epoll_ctl(2). A target whose file is
// at another number (FileFd) is added under its own number all the same:
// the file is dup3'ed there for the time of the EPOLL_CTL_ADD (the number
// is free, or its fd is set aside and put back), so the interest list has
// the same (file, fd) key as in the dumped process.
//
// EPOLL_CTL_ADD always adds EPOLLERR|EPOLLHUP, so a disarmed EPOLLONESHOT
// entry cannot be added as it is. It is added first, alone, armed for
// every event, and made to fire with an epoll_wait(2) in the process, which
// disarms it exactly as the process's own epoll_wait did; an entry whose
// file is not ready for any event cannot be disarmed that way and fails
// the restore.
func (epoll) finish(r *restorer, f *pb.Fd) error {
	targets := f.GetEpoll().Targets
	var first, rest []*pb.EpollTarget
	for _, t := range targets {
		if t.FileFd == nil && !r.inImage[t.Fd] {
			return fmt.Errorf("epoll fd %d: target fd %d is not in the image", f.Fd, t.Fd)
		}
		if t.FileFd != nil && !r.inImage[*t.FileFd] {
			return fmt.Errorf("epoll fd %d: target fd %d's file, fd %d, is not in the image", f.Fd, t.Fd, *t.FileFd)
		}
		if disarmed(t.Events) {
			first = append(first, t)
		} else {
			rest = append(rest, t)
		}
	}
	const every = unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLPRI | unix.EPOLLRDHUP | unix.EPOLLERR | unix.EPOLLHUP
	for _, t := range first {
		if err := r.epollAdd(f.Fd, t, t.Events|every); err != nil {
			return err
		}
	}
	if len(first) > 0 {
		if err := r.fireOneshots(f.Fd, first); err != nil {
			return err
		}
	}
	for _, t := range rest {
		if err := r.epollAdd(f.Fd, t, t.Events); err != nil {
			return err
		}
	}
	return nil
}

// epollAdd adds target t to epoll fd epfd with events.
func (r *restorer) epollAdd(epfd int32, t *pb.EpollTarget, events uint32) error {
	addr, err := r.rem.Put(scratchArgs, le(events, t.Data))
	if err != nil {
		return err
	}
	undo, err := r.lendNumber(t)
	if err != nil {
		return fmt.Errorf("epoll fd %d target fd %d: %w", epfd, t.Fd, err)
	}
	_, err = r.rem.Syscall(unix.SYS_EPOLL_CTL, uintptr(epfd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr)
	if uerr := undo(); uerr != nil && err == nil {
		err = uerr
	}
	if err != nil {
		return fmt.Errorf("add fd %d (events %#x) to epoll fd %d: %w", t.Fd, events, epfd, err)
	}
	return nil
}

// maxDisarmed is how many disarmed EPOLLONESHOT entries of one epoll fd
// fireOneshots re-creates: their struct epoll_event (12 bytes, packed on
// x86-64) fill the scratch page from scratchArgs to 1 KiB past
// scratchMsg. The dump refuses more, while the process still runs.
const maxDisarmed = (scratchMsg + 1024 - scratchArgs) / epollEventSize

// epollEventSize is sizeof(struct epoll_event) on x86-64.
const epollEventSize = 12

// fireOneshots runs epoll_wait(epfd, timeout 0) in the process, with only
// the oneshot entries in the set, and checks through fdinfo that each is
// disarmed now.
func (r *restorer) fireOneshots(epfd int32, oneshots []*pb.EpollTarget) error {
	n := len(oneshots)
	if n > maxDisarmed {
		return fmt.Errorf("epoll fd %d: %d disarmed EPOLLONESHOT entries, more than lazycr can re-create at once (%d)", epfd, n, maxDisarmed)
	}
	addr, err := r.rem.Put(scratchArgs, make([]byte, n*epollEventSize))
	if err != nil {
		return err
	}
	if _, err := r.rem.Syscall(unix.SYS_EPOLL_PWAIT, uintptr(epfd), addr, uintptr(n), 0, 0, 8); err != nil {
		return fmt.Errorf("epoll fd %d: fire its disarmed EPOLLONESHOT entries: %w", epfd, err)
	}
	info, err := proc.ReadFdInfo(r.pid, int(epfd))
	if err != nil {
		return fmt.Errorf("epoll fd %d: %w", epfd, err)
	}
	for _, t := range oneshots {
		for _, e := range info.Epoll {
			if int32(e.Tfd) == t.Fd && e.Data == t.Data && !disarmed(e.Events) {
				return fmt.Errorf("epoll fd %d: the disarmed EPOLLONESHOT entry of fd %d cannot be re-created (its file is not ready for any event, so it cannot be made to fire)", epfd, t.Fd)
			}
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
