package files

import (
	"fmt"
	"math"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// eventfd is an eventfd(2): its counter and EFD_SEMAPHORE, from fdinfo.
type eventfd struct{}

func (eventfd) name() string { return "eventfd" }

func (eventfd) claims(l *liveFd) bool { return l.link == proc.KindAnonInode && l.anon == "eventfd" }

func (eventfd) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	if l.info.EventfdCount == nil {
		return fmt.Errorf("%w: eventfd without a count in fdinfo", ErrUnsupported)
	}
	out.Kind = &pb.Fd_Eventfd{Eventfd: &pb.EventFd{Count: *l.info.EventfdCount, Semaphore: l.info.EventfdSemaphore}}
	return nil
}

func (eventfd) owns(f *pb.Fd) bool { return f.GetEventfd() != nil }

func (eventfd) create(r *restorer, f *pb.Fd) (uintptr, error) {
	e := f.GetEventfd()
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
	fd, err := r.rem.Syscall(unix.SYS_EVENTFD2, initval, flags)
	if err != nil {
		return 0, fmt.Errorf("create eventfd fd %d: %w", f.Fd, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create eventfd fd %d: %w", f.Fd, err)
	}
	if e.Count > math.MaxUint32 {
		addr, err := r.rem.Put(scratchArgs, le(e.Count))
		if err != nil {
			return 0, err
		}
		if _, err := r.rem.Syscall(unix.SYS_WRITE, fd, addr, 8); err != nil {
			return 0, fmt.Errorf("set count %d of eventfd fd %d: %w", e.Count, f.Fd, err)
		}
	}
	return fd, nil
}

func (eventfd) show(f *pb.Fd) string {
	e := f.GetEventfd()
	return fmt.Sprintf("count %d semaphore %v", e.Count, e.Semaphore)
}
