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
	if tf.SettimeFlags&unix.TFD_TIMER_ABSTIME != 0 {
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
// relative, with the time they had left at the dump; but an absolute one
// (TFD_TIMER_ABSTIME) restored on the boot it was dumped on keeps its
// deadline, as a blocked clock_nanosleep(TIMER_ABSTIME) does (monoLeft).
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
	} else if left, ok := r.monoLeft(t); ok {
		value = left
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

// monoLeft is the time an absolute timer on a clock other than a wall
// clock (CLOCK_MONOTONIC, CLOCK_BOOTTIME) has left now to its dumped
// deadline, on the boot it was dumped on, where that clock runs on
// (through the dump and the downtime): the timer is armed with it, so it
// fires at its deadline, not that much later. At least 1 ns: a deadline
// passed meanwhile fires at once, its expiry counted as the kernel would.
// ok is false on another boot (the clock means nothing there) or for a
// relative timer, re-armed with what it had left.
//
// The deadline is in lazycr's view of the clock at the dump and now: a
// process in a time namespace of its own sees it shifted by its offsets,
// but the time left is the same in every view.
func (r *restorer) monoLeft(t *pb.TimerFd) (int64, bool) {
	if t.SettimeFlags&unix.TFD_TIMER_ABSTIME == 0 || wallAbsolute(t) || t.DeadlineNs == 0 {
		return 0, false
	}
	if here, err := BootID(); err != nil || r.bootID == "" || here != r.bootID {
		return 0, false
	}
	var now unix.Timespec
	if err := unix.ClockGettime(t.Clockid, &now); err != nil {
		return 0, false
	}
	return max(1, t.DeadlineNs-now.Nano()), true
}

func (timerfd) show(f *pb.Fd) string {
	t := f.GetTimerfd()
	return fmt.Sprintf("clock %d value %s interval %s ticks %d", t.Clockid,
		time.Duration(t.ValueNs), time.Duration(t.IntervalNs), t.Ticks)
}
