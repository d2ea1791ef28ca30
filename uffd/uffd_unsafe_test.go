package uffd

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/lazycr/lazycr/internal/kabi"
	"golang.org/x/sys/unix"
)

// hang is how long a test waits for something that should happen at once
// before declaring it hung. It is a guard, never an assertion on speed.
const hang = 10 * time.Second

var pageSize = uint64(os.Getpagesize())

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: userfaultfd events and EVENT_FORK need CAP_SYS_PTRACE")
	}
}

// region maps pages of private anonymous memory, unmapped at cleanup.
// Cleanups run last-in first-out: open the uffd after mapping, so it is
// closed before the munmap (an UNMAP-negotiated uffd would block munmap).
func region(t testing.TB, pages int) (uint64, []byte) {
	t.Helper()
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(pages)*uintptr(pageSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatalf("mmap %d pages: %v", pages, err)
	}
	t.Cleanup(func() { unix.MunmapPtr(p, uintptr(pages)*uintptr(pageSize)) })
	return uint64(uintptr(p)), unsafe.Slice((*byte)(p), pages*int(pageSize))
}

func openAPI(t testing.TB, want Features) *FD {
	t.Helper()
	f, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Error(err)
		}
	})
	if _, _, err := f.API(want); err != nil {
		t.Fatal(err)
	}
	return f
}

// next waits for and returns the next message.
func next(t testing.TB, f *FD) Msg {
	t.Helper()
	var buf [1]Msg
	for {
		ok, err := f.Wait(hang)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Fatal("no uffd message within the hang guard")
		}
		msgs, err := f.ReadMsgs(buf[:])
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 1 {
			return msgs[0]
		}
	}
}

// touchResult is what a toucher saw.
type touchResult struct {
	tid  int
	data []byte
	err  error
}

// touch reads n bytes at p from inside a write(2) to a pipe, on its own
// locked thread, so the fault happens in the kernel while the goroutine is
// in a system call (a stop-the-world GC cannot wait on it).
func touch(p []byte) (tid chan int, done chan touchResult) {
	tid, done = make(chan int, 1), make(chan touchResult, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var pfd [2]int
		if err := unix.Pipe2(pfd[:], unix.O_CLOEXEC); err != nil {
			done <- touchResult{err: err}
			return
		}
		defer unix.Close(pfd[0])
		defer unix.Close(pfd[1])
		tid <- unix.Gettid()
		if _, err := unix.Write(pfd[1], p); err != nil {
			done <- touchResult{err: err}
			return
		}
		got := make([]byte, len(p))
		_, err := unix.Read(pfd[0], got)
		done <- touchResult{tid: unix.Gettid(), data: got, err: err}
	}()
	return tid, done
}

func wait(t testing.TB, done chan touchResult) touchResult {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	case <-time.After(hang):
		t.Fatal("toucher still blocked")
	}
	return touchResult{}
}

func TestAPI(t *testing.T) {
	needRoot(t)
	f, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	offered, ioctls, err := f.API(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("offered %#x %s; ioctls %s", uint64(offered), offered, ioctls)
	for _, need := range []Features{FeatureEventFork, FeatureEventRemap, FeatureEventRemove, FeatureEventUnmap, FeatureThreadID} {
		if !offered.Has(need) {
			t.Errorf("kernel does not offer %s", need)
		}
	}
	for _, nr := range []int{kabi.UFFDIO_NR_API, kabi.UFFDIO_NR_REGISTER, kabi.UFFDIO_NR_UNREGISTER} {
		if !ioctls.Has(nr) {
			t.Errorf("ioctls %s lack %s", ioctls, kabi.IoctlBitNames[nr])
		}
	}
	// The handshake is once per fd.
	if _, _, err := f.API(0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("second UFFDIO_API: %v, want EINVAL", err)
	}
	// An unknown feature is refused.
	g, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, _, err := g.API(1 << 62); !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "ioctl UFFDIO_API") {
		t.Errorf("UFFDIO_API with unknown feature: %v, want EINVAL naming the ioctl", err)
	}
}

func TestOpenDev(t *testing.T) {
	needRoot(t)
	f, err := OpenDev(0)
	if errors.Is(err, unix.ENOENT) {
		t.Skip("no /dev/userfaultfd")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := f.API(FeatureThreadID); err != nil {
		t.Fatal(err)
	}
	fl, err := unix.FcntlInt(uintptr(f.Fd()), unix.F_GETFD, 0)
	if err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("uffd from /dev/userfaultfd not close-on-exec: %#x %v", fl, err)
	}
}

func TestFromFd(t *testing.T) {
	needRoot(t)
	r, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0) // blocking, like a stub's
	if errno != 0 {
		t.Fatal(errno)
	}
	f, err := FromFd(int(r))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl, err := unix.FcntlInt(uintptr(f.Fd()), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("adopted uffd not made non-blocking: %#x %v", fl, err)
	}
	if _, _, err := f.API(0); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.Wait(0); ok || err != nil {
		t.Errorf("Wait(0) on an idle uffd = %v, %v", ok, err)
	}
}

// TestCopy serves one fault with UFFDIO_COPY and checks the toucher sees the
// data, the fault is reported with the toucher's thread id, and a second
// copy of the same page reports ErrExist.
func TestCopy(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 4)
	f := openAPI(t, FeatureThreadID)
	ioctls, err := f.Register(addr, 4*pageSize, ModeMissing)
	if err != nil {
		t.Fatal(err)
	}
	for _, nr := range []int{kabi.UFFDIO_NR_COPY, kabi.UFFDIO_NR_ZEROPAGE, kabi.UFFDIO_NR_WAKE} {
		if !ioctls.Has(nr) {
			t.Errorf("range ioctls %s lack %s", ioctls, kabi.IoctlBitNames[nr])
		}
	}
	page := 2
	off := uint64(page)*pageSize + 100
	tidc, done := touch(mem[off : off+16])
	tid := <-tidc
	m := next(t, f)
	if m.Event != EventPageFault {
		t.Fatalf("got %v, want a page fault", m)
	}
	want := addr + uint64(page)*pageSize
	if m.PageFault.Addr != want {
		t.Errorf("fault at %#x, want %#x", m.PageFault.Addr, want)
	}
	if m.PageFault.Flags&FaultWrite != 0 {
		t.Errorf("read fault reported with flags %#x", m.PageFault.Flags)
	}
	if m.PageFault.TID != tid {
		t.Errorf("fault tid %d, want toucher %d", m.PageFault.TID, tid)
	}
	src := bytes.Repeat([]byte{0xAB}, int(pageSize))
	copy(src[100:], "hello, uffd copy")
	n, err := f.Copy(want, src, 0)
	if err != nil || n != int(pageSize) {
		t.Fatalf("Copy = %d, %v", n, err)
	}
	if r := wait(t, done); string(r.data) != "hello, uffd copy" {
		t.Errorf("toucher read %q", r.data)
	}
	n, err = f.Copy(want, src, 0)
	if !errors.Is(err, ErrExist) || !errors.Is(err, unix.EEXIST) || n != 0 {
		t.Errorf("second Copy = %d, %v; want 0, ErrExist wrapping EEXIST", n, err)
	}
	if !strings.Contains(err.Error(), "ioctl UFFDIO_COPY") {
		t.Errorf("error %q does not name the ioctl", err)
	}
	if err := f.Unregister(addr, 4*pageSize); err != nil {
		t.Fatal(err)
	}
}

// TestDirectTouch has a goroutine fault in user mode (no system call) and
// serves it, tolerating a refault: the Go runtime may interrupt the sleeping
// thread with a preemption signal, and the fault is then reported again.
func TestDirectTouch(t *testing.T) {
	needRoot(t)
	// A stop-the-world could wait forever on the faulting thread while the
	// serving goroutine is parked: no GC during this test.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	addr, mem := region(t, 1)
	f := openAPI(t, FeatureThreadID)
	if _, err := f.Register(addr, pageSize, ModeMissing); err != nil {
		t.Fatal(err)
	}
	got := make(chan byte, 1)
	go func() { got <- mem[7] }()
	m := next(t, f)
	if m.Event != EventPageFault || m.PageFault.Addr != addr {
		t.Fatalf("got %v", m)
	}
	src := make([]byte, pageSize)
	src[7] = 42
	if _, err := f.Copy(addr, src, 0); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case b := <-got:
			if b != 42 {
				t.Errorf("toucher read %d, want 42", b)
			}
			return
		case <-time.After(hang):
			t.Fatal("toucher still blocked")
		default:
			// A refault already queued is answered by EEXIST + wake.
			if ok, _ := f.Wait(time.Millisecond); ok {
				var buf [4]Msg
				msgs, _ := f.ReadMsgs(buf[:])
				for _, m := range msgs {
					if _, err := f.Copy(m.PageFault.Addr, src, 0); errors.Is(err, ErrExist) {
						f.Wake(m.PageFault.Addr, pageSize)
					}
				}
			}
		}
	}
}

func TestZeroPage(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 2)
	mem[pageSize+5] = 0 // populate page 1 before registering
	f := openAPI(t, 0)
	if _, err := f.Register(addr, 2*pageSize, ModeMissing); err != nil {
		t.Fatal(err)
	}
	_, done := touch(mem[10:20])
	m := next(t, f)
	if m.PageFault.Addr != addr {
		t.Fatalf("got %v", m)
	}
	n, err := f.ZeroPage(addr, pageSize, 0)
	if err != nil || n != int(pageSize) {
		t.Fatalf("ZeroPage = %d, %v", n, err)
	}
	if r := wait(t, done); !bytes.Equal(r.data, make([]byte, 10)) {
		t.Errorf("toucher read %v", r.data)
	}
	if _, err := f.ZeroPage(addr+pageSize, pageSize, 0); !errors.Is(err, ErrExist) {
		t.Errorf("ZeroPage over a present page: %v, want ErrExist", err)
	}
}

// TestWake copies without waking, checks the toucher still sleeps, then
// wakes it.
func TestWake(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 1)
	f := openAPI(t, 0)
	if _, err := f.Register(addr, pageSize, ModeMissing); err != nil {
		t.Fatal(err)
	}
	_, done := touch(mem[:8])
	next(t, f)
	src := bytes.Repeat([]byte{7}, int(pageSize))
	if _, err := f.Copy(addr, src, DontWake); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("toucher returned without a wake: %+v", r)
	default:
	}
	if err := f.Wake(addr, pageSize); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, done); !bytes.Equal(r.data, src[:8]) {
		t.Errorf("toucher read %v", r.data)
	}
}

func TestPoison(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 1)
	f, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	offered, _, err := f.API(FeaturePoison)
	if err != nil {
		t.Skipf("no UFFD_FEATURE_POISON (offered %s): %v", offered, err)
	}
	ioctls, err := f.Register(addr, pageSize, ModeMissing)
	if err != nil {
		t.Fatal(err)
	}
	if !ioctls.Has(kabi.UFFDIO_NR_POISON) {
		t.Fatalf("range ioctls %s lack POISON", ioctls)
	}
	if n, err := f.Poison(addr, pageSize, 0); err != nil || n != int(pageSize) {
		t.Fatalf("Poison = %d, %v", n, err)
	}
	// A read through a system call now gets EFAULT instead of a fault.
	var pfd [2]int
	if err := unix.Pipe2(pfd[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd[0])
	defer unix.Close(pfd[1])
	if _, err := unix.Write(pfd[1], mem[:8]); !errors.Is(err, unix.EFAULT) {
		t.Errorf("write(2) from a poisoned page: %v, want EFAULT", err)
	}
}

// eventFD opens a uffd with the non-cooperative events (except FORK) and
// registers [addr, addr+length).
func eventFD(t *testing.T, addr, length uint64) *FD {
	t.Helper()
	f := openAPI(t, FeatureEventRemove|FeatureEventUnmap|FeatureEventRemap|FeatureThreadID)
	if _, err := f.Register(addr, length, ModeMissing); err != nil {
		t.Fatal(err)
	}
	return f
}

// The thread causing a non-cooperative event sleeps until the event is
// read, so each syscall runs in its own goroutine while the test reads.
func inBackground(fn func() error) chan error {
	c := make(chan error, 1)
	go func() { c <- fn() }()
	return c
}

func waitErr(t *testing.T, c chan error) {
	t.Helper()
	select {
	case err := <-c:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(hang):
		t.Fatal("system call still blocked after its event was read")
	}
}

func TestRemoveEvent(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 4)
	f := eventFD(t, addr, 4*pageSize)
	start := addr + pageSize
	c := inBackground(func() error {
		return unix.Madvise(mem[pageSize:3*pageSize], unix.MADV_DONTNEED)
	})
	// While the event is unread the address space is "changing": a copy
	// is refused with ErrAgain until the events are drained.
	if ok, err := f.Wait(hang); !ok || err != nil {
		t.Fatalf("Wait = %v, %v", ok, err)
	}
	n, err := f.Copy(addr, make([]byte, pageSize), 0)
	if !errors.Is(err, ErrAgain) || !errors.Is(err, unix.EAGAIN) || n != 0 {
		t.Errorf("Copy with an event pending = %d, %v; want 0, ErrAgain", n, err)
	}
	m := next(t, f)
	if m.Event != EventRemove || m.Remove != (Remove{start, start + 2*pageSize}) {
		t.Errorf("got %v, want remove [%#x, %#x)", m, start, start+2*pageSize)
	}
	waitErr(t, c)
}

func TestUnmapEvent(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 4)
	f := eventFD(t, addr, 4*pageSize)
	start := addr + 3*pageSize
	c := inBackground(func() error { return unix.MunmapPtr(unsafe.Pointer(&mem[3*pageSize]), uintptr(pageSize)) })
	m := next(t, f)
	if m.Event != EventUnmap || m.Unmap != (Unmap{start, start + pageSize}) {
		t.Errorf("got %v, want unmap [%#x, %#x)", m, start, start+pageSize)
	}
	waitErr(t, c)
}

func TestRemapEvent(t *testing.T) {
	needRoot(t)
	addr, mem := region(t, 2)
	to, toMem := region(t, 2) // a placeholder the move replaces
	f := eventFD(t, addr, 2*pageSize)
	c := inBackground(func() error {
		_, err := unix.MremapPtr(unsafe.Pointer(&mem[0]), uintptr(2*pageSize), unsafe.Pointer(&toMem[0]), uintptr(2*pageSize), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED)
		return err
	})
	m := next(t, f)
	if m.Event != EventRemap || m.Remap != (Remap{From: addr, To: to, Len: 2 * pageSize}) {
		t.Errorf("got %v, want remap %#x -> %#x len %#x", m, addr, to, 2*pageSize)
	}
	// With EVENT_UNMAP the old range is then reported unmapped too
	// (mremap(2) runs the munmap of the source after the move).
	if m := next(t, f); m.Event != EventUnmap || m.Unmap != (Unmap{addr, addr + 2*pageSize}) {
		t.Errorf("got %v, want unmap of the old range [%#x, %#x)", m, addr, addr+2*pageSize)
	}
	waitErr(t, c)
	// The registration moved with the range: a fault there is reported at
	// its new address.
	_, done := touch(toMem[:4])
	if m := next(t, f); m.Event != EventPageFault || m.PageFault.Addr != to {
		t.Errorf("got %v, want a fault at %#x", m, to)
	}
	if _, err := f.ZeroPage(to, pageSize, 0); err != nil {
		t.Fatal(err)
	}
	wait(t, done)
}

// TestCloseWakesWait checks Close interrupts a blocked Wait with
// os.ErrClosed and that calls after Close fail the same way.
func TestCloseWakesWait(t *testing.T) {
	needRoot(t)
	f, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.API(0); err != nil {
		t.Fatal(err)
	}
	c := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		_, err := f.Wait(-1)
		c <- err
	}()
	<-started
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Wait after Close: %v, want os.ErrClosed", err)
		}
	case <-time.After(hang):
		t.Fatal("Wait not interrupted by Close")
	}
	if _, err := f.Register(0, pageSize, ModeMissing); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Register after Close: %v", err)
	}
	if _, err := f.ReadMsgs(make([]Msg, 1)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadMsgs after Close: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDecode(t *testing.T) {
	for _, c := range []struct {
		raw  kabi.UffdMsg
		want Msg
	}{
		{kabi.UffdMsg{Event: kabi.UFFD_EVENT_PAGEFAULT, Arg: [3]uint64{1, 0x7000, 0xdead00000042}}, Msg{Event: EventPageFault, PageFault: PageFault{Addr: 0x7000, Flags: 1, TID: 0x42}}},
		{kabi.UffdMsg{Event: kabi.UFFD_EVENT_FORK, Arg: [3]uint64{0xffffffff00000009}}, Msg{Event: EventFork, Fork: Fork{UFD: 9}}},
		{kabi.UffdMsg{Event: kabi.UFFD_EVENT_REMAP, Arg: [3]uint64{1, 2, 3}}, Msg{Event: EventRemap, Remap: Remap{1, 2, 3}}},
		{kabi.UffdMsg{Event: kabi.UFFD_EVENT_REMOVE, Arg: [3]uint64{4, 5}}, Msg{Event: EventRemove, Remove: Remove{4, 5}}},
		{kabi.UffdMsg{Event: kabi.UFFD_EVENT_UNMAP, Arg: [3]uint64{6, 7}}, Msg{Event: EventUnmap, Unmap: Unmap{6, 7}}},
	} {
		got, ok := Decode(&c.raw)
		if !ok || got != c.want {
			t.Errorf("Decode(%+v) = %+v, %v; want %+v", c.raw, got, ok, c.want)
		}
	}
	if m, ok := Decode(&kabi.UffdMsg{Event: 0x99}); ok || m.Event != 0x99 {
		t.Errorf("unknown event decoded as %v, %v", m, ok)
	}
}

func TestFeaturesString(t *testing.T) {
	if s := (FeatureEventFork | FeatureThreadID).String(); s != "EVENT_FORK|THREAD_ID" {
		t.Errorf("String = %q", s)
	}
	if got := Ioctls(1<<kabi.UFFDIO_NR_WAKE | 1<<kabi.UFFDIO_NR_COPY).String(); got != "WAKE|COPY" {
		t.Errorf("Ioctls.String = %q", got)
	}
	if !slices.Equal(FeaturesNonCooperative.Names(), []string{"EVENT_FORK", "EVENT_REMAP", "EVENT_REMOVE", "EVENT_UNMAP"}) {
		t.Errorf("FeaturesNonCooperative = %v", FeaturesNonCooperative.Names())
	}
}

// FuzzDecode checks Decode against the raw words of struct uffd_msg.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(kabi.UFFD_EVENT_PAGEFAULT), uint64(1), uint64(0x7000), uint64(42))
	f.Add(uint8(kabi.UFFD_EVENT_REMAP), uint64(1), uint64(2), uint64(3))
	f.Add(uint8(0), uint64(0), uint64(0), uint64(0))
	f.Fuzz(func(t *testing.T, ev uint8, a, b, c uint64) {
		raw := kabi.UffdMsg{Event: ev, Arg: [3]uint64{a, b, c}}
		m, ok := Decode(&raw)
		if m.Event != Event(ev) {
			t.Fatalf("event %#x decoded as %v", ev, m.Event)
		}
		var want Msg
		want.Event = Event(ev)
		switch want.Event {
		case EventPageFault:
			want.PageFault = PageFault{Addr: b, Flags: a, TID: int(uint32(c))}
		case EventFork:
			want.Fork = Fork{UFD: int(uint32(a))}
		case EventRemap:
			want.Remap = Remap{a, b, c}
		case EventRemove:
			want.Remove = Remove{a, b}
		case EventUnmap:
			want.Unmap = Unmap{a, b}
		default:
			if ok {
				t.Fatalf("unknown event %#x decoded ok", ev)
			}
		}
		if m != want {
			t.Fatalf("Decode = %+v, want %+v", m, want)
		}
	})
}

func addrOfTest(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
