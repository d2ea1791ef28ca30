package files

import (
	"fmt"
	"os"
	"time"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// timerfd is a timerfd_create(2) timer: clock, time left, interval and
// unread expirations, from fdinfo.
type timerfd struct{}

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, u64) from
// include/uapi/linux/timerfd.h (needs CONFIG_CHECKPOINT_RESTORE).
var tfdIocSetTicks = kabi.IOW('T', 0, 8)

func (timerfd) name() string { return "timerfd" }

func (timerfd) claims(l *liveFd) bool { return l.link == proc.KindAnonInode && l.anon == "timerfd" }

func (timerfd) dump(_ *dumper, l *liveFd, out *pb.Fd) error {
	t := l.info.Timerfd
	if t == nil {
		return fmt.Errorf("%w: timerfd without its setting in fdinfo", ErrUnsupported)
	}
	tf := &pb.TimerFd{
		Clockid: int32(t.Clockid), SettimeFlags: int32(t.SettimeFlags), Ticks: t.Ticks,
		ValueNs: t.ValueSec*1e9 + t.ValueNsec, IntervalNs: t.IntervalSec*1e9 + t.IntervalNsec,
	}
	if wallAbsolute(tf) {
		var now unix.Timespec
		if err := unix.ClockGettime(tf.Clockid, &now); err != nil {
			return fmt.Errorf("read clock %d: %w", tf.Clockid, os.NewSyscallError("clock_gettime", err))
		}
		left := tf.ValueNs
		if left == 0 && tf.IntervalNs > 0 {
			left = tf.IntervalNs // expired, unread: see create
		}
		if left > 0 {
			tf.DeadlineNs = now.Nano() + left
		}
	}
	out.Kind = &pb.Fd_Timerfd{Timerfd: tf}
	return nil
}

// wallAbsolute: an absolute timer on a wall clock, which means the same
// on any host, so it is re-armed absolute (with TFD_TIMER_CANCEL_ON_SET if
// it had it). Other clocks differ between hosts: their timers are re-armed
// relative, with the time they had left.
func wallAbsolute(t *pb.TimerFd) bool {
	return t.SettimeFlags&unix.TFD_TIMER_ABSTIME != 0 &&
		(t.Clockid == unix.CLOCK_REALTIME || t.Clockid == unix.CLOCK_REALTIME_ALARM)
}

func (timerfd) owns(f *pb.Fd) bool { return f.GetTimerfd() != nil }

// create re-arms the timer relative to now with the time it had left, and
// gives it back its unread expirations (TFD_IOC_SET_TICKS).
func (timerfd) create(r *restorer, f *pb.Fd) (uintptr, error) {
	t := f.GetTimerfd()
	flags := uintptr(unix.TFD_CLOEXEC)
	if f.Flags&unix.O_NONBLOCK != 0 {
		flags |= unix.TFD_NONBLOCK
	}
	fd, err := r.rem.Syscall(unix.SYS_TIMERFD_CREATE, uintptr(t.Clockid), flags)
	if err != nil {
		return 0, fmt.Errorf("create timerfd fd %d (clock %d): %w", f.Fd, t.Clockid, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create timerfd fd %d: %w", f.Fd, err)
	}
	var setFlags uintptr
	if wallAbsolute(t) && t.DeadlineNs > 0 {
		setFlags = uintptr(t.SettimeFlags) & (unix.TFD_TIMER_ABSTIME | unix.TFD_TIMER_CANCEL_ON_SET)
	}
	// An armed periodic timer that expired while the process was frozen,
	// its ticks not yet read, shows "it_value 0" in fdinfo: it is still
	// armed. Re-arm it one interval ahead; the missed ticks are set below.
	value := t.ValueNs
	if value == 0 && t.IntervalNs > 0 {
		value = t.IntervalNs
	}
	if setFlags != 0 {
		value = t.DeadlineNs
	}
	if value > 0 {
		spec := le(t.IntervalNs/1e9, t.IntervalNs%1e9, value/1e9, value%1e9) // struct itimerspec
		addr, err := r.rem.Put(scratchArgs, spec)
		if err != nil {
			return 0, err
		}
		if _, err := r.rem.Syscall(unix.SYS_TIMERFD_SETTIME, fd, setFlags, addr, 0); err != nil {
			return 0, fmt.Errorf("arm timerfd fd %d (%d ns left, interval %d ns): %w", f.Fd, value, t.IntervalNs, err)
		}
	}
	if t.Ticks > 0 {
		addr, err := r.rem.Put(scratchArgs, le(t.Ticks))
		if err != nil {
			return 0, err
		}
		if _, err := r.rem.Syscall(unix.SYS_IOCTL, fd, tfdIocSetTicks, addr); err != nil {
			r.log.Warn().Err(err).Int32("fd", f.Fd).Uint64("ticks", t.Ticks).
				Msg("cannot give the timerfd its unread expirations (TFD_IOC_SET_TICKS needs CONFIG_CHECKPOINT_RESTORE)")
		}
	}
	return fd, nil
}

func (timerfd) show(f *pb.Fd) string {
	t := f.GetTimerfd()
	return fmt.Sprintf("clock %d value %s interval %s ticks %d", t.Clockid,
		time.Duration(t.ValueNs), time.Duration(t.IntervalNs), t.Ticks)
}
