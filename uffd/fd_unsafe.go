package uffd

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// FD owns a userfaultfd file descriptor and an eventfd used to interrupt
// Wait. All methods are safe for concurrent use; Close may be called from any
// goroutine and makes a pending or later Wait return os.ErrClosed.
type FD struct {
	closed atomic.Bool

	// mu is held shared by every operation using the fds and exclusively by
	// Close, so an fd number is never closed (and reused) under a call.
	mu   sync.RWMutex
	fd   int // userfaultfd, O_CLOEXEC|O_NONBLOCK; -1 once closed
	wake int // eventfd, written by Close; -1 once closed

	num int // fd's number when adopted, for error messages only

	features atomic.Uint64 // accepted by API
}

// Open creates a userfaultfd with userfaultfd(2), O_CLOEXEC|O_NONBLOCK plus
// flags (e.g. kabi.UFFD_USER_MODE_ONLY). When the system call is refused
// (EPERM: vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE; ENOSYS) it
// falls back to /dev/userfaultfd (see OpenDev).
func Open(flags int) (*FD, error) {
	fl := uintptr(flags | unix.O_CLOEXEC | unix.O_NONBLOCK)
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, fl, 0, 0)
	if errno == 0 {
		return newFD(int(r))
	}
	if errno != unix.EPERM && errno != unix.ENOSYS {
		return nil, fmt.Errorf("open userfaultfd: %w", os.NewSyscallError("userfaultfd", errno))
	}
	f, err := OpenDev(flags)
	if err != nil {
		return nil, fmt.Errorf("open userfaultfd: %w (after %w)", err, os.NewSyscallError("userfaultfd", errno))
	}
	return f, nil
}

// OpenDev creates a userfaultfd through /dev/userfaultfd and its
// USERFAULTFD_IOC_NEW ioctl (Linux 6.1), which is governed by the device's
// permissions instead of vm.unprivileged_userfaultfd.
func OpenDev(flags int) (*FD, error) {
	dev, err := unix.Open("/dev/userfaultfd", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/userfaultfd: %w", &os.PathError{Op: "open", Path: "/dev/userfaultfd", Err: err})
	}
	defer unix.Close(dev)
	fd, err := kabi.IoctlInt(dev, kabi.USERFAULTFD_IOC_NEW, uintptr(flags|unix.O_CLOEXEC|unix.O_NONBLOCK))
	if err != nil {
		return nil, fmt.Errorf("create userfaultfd via /dev/userfaultfd fd %d: %w", dev, err)
	}
	return newFD(fd)
}

// FromFd adopts fd, a userfaultfd taken from another process (pidfd_getfd),
// or received in a Fork event. The FD owns it from now on, also on error. It
// sets O_NONBLOCK on the open file description (shared with any other
// holder), which poll(2) on a uffd requires.
func FromFd(fd int) (*FD, error) {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set close-on-exec on uffd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set non-blocking on uffd %d: %w", fd, os.NewSyscallError("fcntl", err))
	}
	return newFD(fd)
}

func newFD(fd int) (*FD, error) {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create wakeup eventfd for uffd %d: %w", fd, os.NewSyscallError("eventfd2", err))
	}
	return &FD{fd: fd, wake: wake, num: fd}, nil
}

// Fd returns the raw userfaultfd, valid until Close; -1 after Close.
func (f *FD) Fd() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.fd
}

// Features returns the features accepted by API (0 before it).
func (f *FD) Features() Features { return Features(f.features.Load()) }

// Close wakes any Wait (which then returns os.ErrClosed), waits for calls in
// flight and closes the fds. Closing a uffd with unserved ranges turns their
// missing pages into zero pages: only close when the transfer is finished.
func (f *FD) Close() error {
	if f.closed.Swap(true) {
		return nil
	}
	var one = [8]byte{1}
	f.mu.RLock()
	if f.wake >= 0 {
		unix.Write(f.wake, one[:]) // only wakes; cannot usefully fail
	}
	f.mu.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	fd, wake := f.fd, f.wake
	f.fd, f.wake = -1, -1 // one owner: nothing may use the numbers again
	var errW error
	if wake >= 0 {
		errW = unix.Close(wake)
	}
	errU := unix.Close(fd)
	if errU != nil {
		return fmt.Errorf("close uffd %d: %w", fd, os.NewSyscallError("close", errU))
	}
	if errW != nil {
		return fmt.Errorf("close eventfd %d: %w", wake, os.NewSyscallError("close", errW))
	}
	return nil
}

// acquire takes the shared lock; it fails with os.ErrClosed after Close.
func (f *FD) acquire() error {
	f.mu.RLock()
	if f.closed.Load() {
		f.mu.RUnlock()
		return os.ErrClosed
	}
	return nil
}

func (f *FD) ioctl(req uintptr, arg unsafe.Pointer) error {
	if err := f.acquire(); err != nil {
		return err
	}
	defer f.mu.RUnlock()
	return kabi.Ioctl(f.fd, req, arg)
}

// API performs the UFFDIO_API handshake asking for wanted and returns every
// feature the kernel offers and the ioctls available on the fd. On success
// exactly wanted is enabled. It can be done once per fd: a second call fails
// EINVAL, as does asking for a feature the kernel lacks (and EVENT_FORK
// without CAP_SYS_PTRACE fails EPERM). Asking for 0 just lists what is
// offered. See ioctl_userfaultfd(2), UFFDIO_API.
func (f *FD) API(wanted Features) (offered Features, ioctls Ioctls, err error) {
	a := kabi.UffdioAPI{API: kabi.UFFD_API, Features: uint64(wanted)}
	if err := f.ioctl(kabi.UFFDIO_API, unsafe.Pointer(&a)); err != nil {
		return 0, 0, fmt.Errorf("negotiate features %s on uffd %d: %w", wanted, f.num, err)
	}
	f.features.Store(uint64(wanted))
	return Features(a.Features), Ioctls(a.Ioctls), nil
}

// Register registers [start, start+length) (page aligned) with mode and
// returns the ioctls usable on the range (COPY, ZEROPAGE, WAKE, ...).
func (f *FD) Register(start, length uint64, mode Mode) (Ioctls, error) {
	r := kabi.UffdioRegister{Range: kabi.UffdioRange{Start: start, Len: length}, Mode: uint64(mode)}
	if err := f.ioctl(kabi.UFFDIO_REGISTER, unsafe.Pointer(&r)); err != nil {
		return 0, fmt.Errorf("register [%#x, %#x) mode %#x on uffd %d: %w", start, start+length, uint64(mode), f.num, err)
	}
	return Ioctls(r.Ioctls), nil
}

// Unregister removes [start, start+length) from the uffd; threads asleep on
// it are woken and retry the fault without userfaultfd.
func (f *FD) Unregister(start, length uint64) error {
	r := kabi.UffdioRange{Start: start, Len: length}
	if err := f.ioctl(kabi.UFFDIO_UNREGISTER, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("unregister [%#x, %#x) on uffd %d: %w", start, start+length, f.num, err)
	}
	return nil
}

// Wake wakes the threads asleep on faults in [start, start+length), e.g.
// after ErrExist or a DontWake copy.
func (f *FD) Wake(start, length uint64) error {
	r := kabi.UffdioRange{Start: start, Len: length}
	if err := f.ioctl(kabi.UFFDIO_WAKE, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("wake [%#x, %#x) on uffd %d: %w", start, start+length, f.num, classify(err))
	}
	return nil
}

// Copy atomically fills the missing pages at dst (an address in the
// registered process, page aligned) with src (a whole number of pages) and,
// unless mode has DontWake, wakes the threads waiting on them. n is the
// number of bytes copied; it can be less than len(src) only with ErrAgain,
// in which case the caller drains events and retries the rest. ErrExist:
// the first page was already there (nothing copied); ErrGone: the process
// is gone.
func (f *FD) Copy(dst uint64, src []byte, mode CopyMode) (n int, err error) {
	if len(src) == 0 {
		return 0, nil
	}
	c := kabi.UffdioCopy{Dst: dst, Src: unsafe.Pointer(&src[0]), Len: uint64(len(src)), Mode: uint64(mode)}
	err = f.ioctl(kabi.UFFDIO_COPY, unsafe.Pointer(&c))
	runtime.KeepAlive(src)
	if c.Copy > 0 {
		n = int(c.Copy)
	}
	if err != nil {
		return n, fmt.Errorf("copy %d bytes to %#x via uffd %d: %w", len(src), dst, f.num, classify(err))
	}
	return n, nil
}

// ZeroPage maps zero pages over the missing pages of [start, start+length)
// and returns the bytes zeroed; errors are classified as for Copy.
func (f *FD) ZeroPage(start, length uint64, mode CopyMode) (n int, err error) {
	z := kabi.UffdioZeropage{Range: kabi.UffdioRange{Start: start, Len: length}, Mode: uint64(mode & DontWake)}
	err = f.ioctl(kabi.UFFDIO_ZEROPAGE, unsafe.Pointer(&z))
	if z.Zeropage > 0 {
		n = int(z.Zeropage)
	}
	if err != nil {
		return n, fmt.Errorf("zero [%#x, %#x) via uffd %d: %w", start, start+length, f.num, classify(err))
	}
	return n, nil
}

// Poison marks the missing pages of [start, start+length) as poisoned: an
// access raises SIGBUS (UFFDIO_POISON, Linux 6.6, needs FeaturePoison). Use
// it when a page cannot be fetched, never leave the fault to become a zero
// page.
func (f *FD) Poison(start, length uint64, mode CopyMode) (n int, err error) {
	p := kabi.UffdioPoison{Range: kabi.UffdioRange{Start: start, Len: length}, Mode: uint64(mode & DontWake)}
	err = f.ioctl(kabi.UFFDIO_POISON, unsafe.Pointer(&p))
	if p.Updated > 0 {
		n = int(p.Updated)
	}
	if err != nil {
		return n, fmt.Errorf("poison [%#x, %#x) via uffd %d: %w", start, start+length, f.num, classify(err))
	}
	return n, nil
}

// maxRead is the number of messages one ReadMsgs reads at most.
const maxRead = 32

// ReadMsgs reads the pending messages without blocking, at most
// min(len(buf), 32), decodes them into buf and returns buf[:n]. With nothing
// pending it returns an empty slice and nil; use Wait to block. Unknown
// events are returned with only Event set.
func (f *FD) ReadMsgs(buf []Msg) ([]Msg, error) {
	var raw [maxRead]kabi.UffdMsg
	want := min(len(buf), maxRead)
	if want == 0 {
		return buf[:0], nil
	}
	if err := f.acquire(); err != nil {
		return buf[:0], err
	}
	var (
		r     uintptr
		errno unix.Errno
	)
	for {
		r, _, errno = unix.Syscall(unix.SYS_READ, uintptr(f.fd), uintptr(unsafe.Pointer(&raw[0])), uintptr(want*kabi.SizeofUffdMsg))
		if errno != unix.EINTR {
			break
		}
	}
	f.mu.RUnlock()
	switch errno {
	case 0:
	case unix.EAGAIN:
		return buf[:0], nil
	default:
		return buf[:0], fmt.Errorf("read events from uffd %d: %w", f.num, os.NewSyscallError("read", errno))
	}
	n := int(r) / kabi.SizeofUffdMsg
	for i := range n {
		buf[i], _ = Decode(&raw[i])
	}
	return buf[:n], nil
}

// Wait blocks until the uffd has messages to read (true), timeout passes
// (false; a negative timeout waits forever) or Close is called
// (os.ErrClosed). It is the interruptible wait of a fault loop (STYLE rule 7).
func (f *FD) Wait(timeout time.Duration) (bool, error) {
	if err := f.acquire(); err != nil {
		return false, err
	}
	defer f.mu.RUnlock()
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	for {
		ms := -1
		if timeout >= 0 {
			left := time.Until(deadline)
			if left < 0 {
				left = 0
			}
			ms = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		pfd := [2]unix.PollFd{{Fd: int32(f.fd), Events: unix.POLLIN}, {Fd: int32(f.wake), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd[:], ms)
		if f.closed.Load() {
			return false, os.ErrClosed
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("wait on uffd %d: %w", f.num, os.NewSyscallError("poll", err))
		}
		if n == 0 {
			return false, nil
		}
		if pfd[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			return false, fmt.Errorf("wait on uffd %d: poll revents %#x (API handshake not done?)", f.num, pfd[0].Revents)
		}
		if pfd[0].Revents&unix.POLLIN != 0 {
			return true, nil
		}
	}
}
