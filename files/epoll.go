package files

import (
	"fmt"
	"strings"

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

func (epoll) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	ep := &pb.Epoll{}
	for _, t := range l.info.Epoll {
		ep.Targets = append(ep.Targets, &pb.EpollTarget{Fd: int32(t.Tfd), Events: t.Events, Data: t.Data})
	}
	out.Kind = &pb.Fd_Epoll{Epoll: ep}
	return nil
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
// packed on x86-64: 12 bytes. See epoll_ctl(2).
func (epoll) finish(r *restorer, f *pb.Fd) error {
	for _, t := range f.GetEpoll().Targets {
		if !r.inImage[t.Fd] {
			r.log.Warn().Int32("fd", f.Fd).Int32("target", t.Fd).
				Msg("epoll target is not in the fd table: skipped")
			continue
		}
		addr, err := r.rem.Put(scratchArgs, le(t.Events, t.Data))
		if err != nil {
			return err
		}
		if _, err := r.rem.Syscall(unix.SYS_EPOLL_CTL, uintptr(f.Fd), unix.EPOLL_CTL_ADD, uintptr(t.Fd), addr); err != nil {
			return fmt.Errorf("add fd %d (events %#x) to epoll fd %d: %w", t.Fd, t.Events, f.Fd, err)
		}
	}
	return nil
}

func (epoll) show(f *pb.Fd) string {
	var ts []string
	for _, t := range f.GetEpoll().Targets {
		ts = append(ts, fmt.Sprintf("fd %d events %#x", t.Fd, t.Events))
	}
	return strings.Join(ts, "; ")
}
