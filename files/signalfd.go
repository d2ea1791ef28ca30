package files

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// signalfd is a signalfd(2): its signal mask, from fdinfo.
type signalfd struct{}

func (signalfd) name() string { return "signalfd" }

func (signalfd) claims(l *liveFd) bool { return l.link == proc.KindAnonInode && l.anon == "signalfd" }

func (signalfd) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	if l.info.Signalfd == nil {
		return fmt.Errorf("%w: signalfd without a mask in fdinfo", ErrUnsupported)
	}
	out.Kind = &pb.Fd_Signalfd{Signalfd: &pb.SignalFd{Sigmask: *l.info.Signalfd}}
	return nil
}

func (signalfd) owns(f *pb.Fd) bool { return f.GetSignalfd() != nil }

func (signalfd) create(r *restorer, f *pb.Fd) (uintptr, error) {
	s := f.GetSignalfd()
	flags := uintptr(unix.SFD_CLOEXEC)
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.SFD_NONBLOCK
	}
	addr, err := r.rem.Put(scratchArgs, le(s.Sigmask))
	if err != nil {
		return 0, err
	}
	fd, err := r.rem.Syscall(unix.SYS_SIGNALFD4, ^uintptr(0), addr, 8, flags)
	if err != nil {
		return 0, fmt.Errorf("create signalfd fd %d (mask %#x): %w", f.Fd, s.Sigmask, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create signalfd fd %d: %w", f.Fd, err)
	}
	return fd, nil
}

func (signalfd) show(f *pb.Fd) string { return "mask " + Sigset(f.GetSignalfd().Sigmask) }

// Sigset renders a signal mask as sorted signal names, "-" when empty.
func Sigset(m uint64) string {
	if m == 0 {
		return "-"
	}
	var names []string
	for i := 0; i < 64; i++ {
		if m&(1<<i) != 0 {
			n := unix.SignalName(unix.Signal(i + 1))
			if n == "" {
				n = fmt.Sprintf("SIG%d", i+1)
			}
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
