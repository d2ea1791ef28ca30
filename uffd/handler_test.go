package uffd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// fakeSource serves pages from a byte slice standing for the dumped
// memory at base. Requests are answered by a server goroutine, after delay
// and, when gate is set, after a value is received from gate.
type fakeSource struct {
	base  uint64
	data  []byte
	delay time.Duration
	gate  chan struct{}

	ch   chan PageData
	reqs chan Run
	stop chan struct{}
	wg   sync.WaitGroup

	mu        sync.Mutex
	requested map[uint64]int // page address → times requested
	acked     map[uint64]int
	ackc      chan uint64 // pages acked, if set
	inline    bool        // Request answers at once, from the caller
	zeros     bool        // requests are answered as read as zeros (PageData.Zero)
}

func newFakeSource(base uint64, data []byte, gated bool, opts ...func(*fakeSource)) *fakeSource {
	s := &fakeSource{base: base, data: data, ch: make(chan PageData, 1024), reqs: make(chan Run, 1024),
		stop: make(chan struct{}), requested: map[uint64]int{}, acked: map[uint64]int{}}
	if gated {
		s.gate = make(chan struct{})
	}
	for _, o := range opts {
		o(s)
	}
	s.wg.Add(1)
	go s.serve()
	return s
}

func (s *fakeSource) serve() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case r := <-s.reqs:
			if s.delay > 0 {
				time.Sleep(s.delay) // simulated network latency, not synchronisation
			}
			if s.gate != nil {
				select {
				case <-s.gate:
				case <-s.stop:
					return
				}
			}
			select {
			case s.ch <- s.page(r.Addr, int(r.Npages), false):
			case <-s.stop:
				return
			}
		}
	}
}

func (s *fakeSource) page(addr uint64, n int, pushed bool) PageData {
	if s.zeros && !pushed {
		return PageData{Addr: addr, Zero: n}
	}
	off := addr - s.base
	return PageData{Addr: addr, Data: s.data[off : off+uint64(n)*PageSize], Pushed: pushed}
}

func (s *fakeSource) Request(addr uint64, n int) error {
	s.mu.Lock()
	for k := range n {
		s.requested[addr+uint64(k)*PageSize]++
	}
	s.mu.Unlock()
	if s.inline {
		s.ch <- s.page(addr, n, false)
		return nil
	}
	s.reqs <- Run{Addr: addr, Npages: uint64(n)}
	return nil
}

func (s *fakeSource) Pages() <-chan PageData { return s.ch }

func (s *fakeSource) Ack(addr uint64, n int) {
	s.mu.Lock()
	for k := range n {
		s.acked[addr+uint64(k)*PageSize]++
	}
	s.mu.Unlock()
	if s.ackc != nil {
		s.ackc <- uint64(n)
	}
}

func (s *fakeSource) push(addr uint64, n int) { s.ch <- s.page(addr, n, true) }

func (s *fakeSource) close() {
	close(s.stop)
	s.wg.Wait()
}

// pattern fills pages with recognisable data: page k starts with its
// address and is then filled with byte(k+1).
func pattern(base uint64, pages int) []byte {
	b := make([]byte, pages*int(PageSize))
	for k := range pages {
		p := b[k*int(PageSize) : (k+1)*int(PageSize)]
		for i := range p {
			p[i] = byte(k + 1)
		}
		binary.LittleEndian.PutUint64(p, base+uint64(k)*PageSize)
	}
	return b
}

type fixture struct {
	addr uint64
	mem  []byte
	fd   *FD
	src  *fakeSource
	h    *Handler
	run  chan error
}

// start maps pages, registers them with a handler whose lazy runs are
// lazy (page indices) and runs it.
func start(t testing.TB, pages int, lazy []Run, cfg HandlerConfig, gated bool, opts ...func(*fakeSource)) *fixture {
	t.Helper()
	needRoot(t)
	x := &fixture{}
	x.addr, x.mem = region(t, pages)
	x.fd = openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	x.src = newFakeSource(x.addr, pattern(x.addr, pages), gated, opts...)
	t.Cleanup(x.src.close)
	r := Region{Start: x.addr, End: x.addr + uint64(pages)*PageSize}
	for _, l := range lazy {
		r.Lazy = append(r.Lazy, Run{Addr: x.addr + l.Addr*PageSize, Npages: l.Npages})
	}
	cfg.Regions = []Region{r}
	cfg.Source = x.src
	cfg.PID = os.Getpid()
	h, err := NewHandler(x.fd, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x.h = h
	x.run = make(chan error, 1)
	go func() { x.run <- h.Run(context.Background()) }()
	t.Cleanup(func() {
		h.Close()
		<-x.run
	})
	return x
}

func (x *fixture) page(k int) []byte { return x.mem[k*int(PageSize) : (k+1)*int(PageSize)] }

// check touches page k and compares it with want (the source's page k
// when want is nil).
func (x *fixture) check(t testing.TB, k int, want []byte) {
	t.Helper()
	if want == nil {
		want = x.src.data[k*int(PageSize) : (k+1)*int(PageSize)]
	}
	_, done := touch(x.page(k))
	if got := wait(t, done).data; !bytes.Equal(got, want) {
		t.Errorf("page %d reads %x..., want %x...", k, got[:16], want[:16])
	}
}

func (x *fixture) result(t testing.TB) error {
	t.Helper()
	select {
	case err := <-x.run:
		x.run <- err // for the cleanup
		return err
	case <-time.After(hang):
		t.Fatal("Run did not return")
	}
	return nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(hang)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func all(pages int) []Run { return []Run{{Addr: 0, Npages: uint64(pages)}} }

// TestHandlerFaults touches every page from several threads at once and
// checks contents, that each page was requested once and that Run returns
// nil when every page is in.
func TestHandlerFaults(t *testing.T) {
	const pages = 32
	x := start(t, pages, all(pages), HandlerConfig{}, false)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := g; k < pages; k += 4 {
				x.check(t, k, nil)
			}
		}()
	}
	wg.Wait()
	if err := x.result(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if in, total := x.h.Progress(); in != pages || total != pages {
		t.Errorf("Progress = %d/%d", in, total)
	}
	for a, n := range x.src.requested {
		if n != 1 {
			t.Errorf("page %#x requested %d times", a, n)
		}
	}
	if len(x.src.acked) != pages {
		t.Errorf("%d pages acked, want %d", len(x.src.acked), pages)
	}
	s := x.h.Stats()
	if s.Faults != pages || s.Pages.Fault != pages || s.Requests != pages || s.Bytes != pages*PageSize {
		t.Errorf("stats %+v", s)
	}
	t.Logf("\n%s", s)
}

// TestHandlerFaultAround checks the window: a fault requests its page and
// the next FaultAround pages, and a fault on one of them is not requested
// again.
func TestHandlerFaultAround(t *testing.T) {
	const pages = 8
	x := start(t, pages, all(pages), HandlerConfig{FaultAround: 3}, false)
	x.check(t, 0, nil)
	x.check(t, 2, nil) // brought by page 0's window
	waitFor(t, "4 pages installed", func() bool { in, _ := x.h.Progress(); return in >= 4 })
	x.src.mu.Lock()
	if n := len(x.src.requested); n != 4 {
		t.Errorf("%d pages requested, want 4", n)
	}
	x.src.mu.Unlock()
	s := x.h.Stats()
	if s.Requests != 1 {
		t.Errorf("%d requests, want 1", s.Requests)
	}
	x.src.push(x.addr+4*PageSize, 4)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	if s := x.h.Stats(); s.Pages.Fault != 1 || s.Pages.FaultAround != 3 || s.Pages.Push != 4 {
		t.Errorf("pages by path %+v", s.Pages)
	}
}

// TestHandlerZeroPage: a fault outside the lazy runs gets a zero page with
// no request.
func TestHandlerZeroPage(t *testing.T) {
	x := start(t, 8, []Run{{Addr: 2, Npages: 3}}, HandlerConfig{}, false)
	x.check(t, 0, make([]byte, PageSize))
	x.check(t, 6, make([]byte, PageSize))
	waitFor(t, "2 zero-page faults", func() bool { return x.h.Stats().FaultsBy[PathZero] == 2 })
	if s := x.h.Stats(); s.Pages.Zero != 2 || s.Requests != 0 {
		t.Errorf("stats %+v", s)
	}
	x.check(t, 3, nil)
	x.src.push(x.addr+2*PageSize, 3)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
}

// TestHandlerSourceZero: runs the source read as zeros arrive as
// PageData.Zero, pushed and in answer to a fault, and are mapped with
// UFFDIO_ZEROPAGE: they read as zeros, are counted as SourceZero and add
// no bytes copied; the other pages keep their data.
func TestHandlerSourceZero(t *testing.T) {
	const pages = 8
	x := start(t, pages, all(pages), HandlerConfig{}, false, func(s *fakeSource) { s.zeros = true })
	zero := make([]byte, PageSize)
	x.check(t, 6, zero) // requested, answered as zeros
	x.src.push(x.addr, 4)
	x.src.ch <- PageData{Addr: x.addr + 4*PageSize, Zero: 4, Pushed: true}
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	for k := range pages {
		want := x.src.data[k*int(PageSize) : (k+1)*int(PageSize)]
		if k >= 4 {
			want = zero
		}
		if got := x.page(k); !bytes.Equal(got, want) {
			t.Errorf("page %d reads %x..., want %x...", k, got[:16], want[:16])
		}
	}
	s := x.h.Stats()
	if s.Pages.SourceZero != 4 || s.Bytes != 4*PageSize || s.Pages.Fault != 1 || s.Pages.Push != 7 || s.FaultsBy[PathRequest] != 1 {
		t.Errorf("stats %+v", s)
	}
	if len(x.src.acked) != pages {
		t.Errorf("%d pages acked, want %d", len(x.src.acked), pages)
	}
}

// TestHandlerPushRace: while a fault's request is held, the push brings
// the page; the fault is served by the push and the late reply (a page
// arriving twice) is skipped.
func TestHandlerPushRace(t *testing.T) {
	x := start(t, 2, all(2), HandlerConfig{}, true)
	_, done := touch(x.page(1))
	waitFor(t, "the request", func() bool { x.src.mu.Lock(); defer x.src.mu.Unlock(); return len(x.src.requested) == 1 })
	x.src.push(x.addr, 2)
	if got := wait(t, done).data; !bytes.Equal(got, x.src.data[PageSize:]) {
		t.Errorf("page 1 reads %x...", got[:16])
	}
	if err := x.result(t); err != nil { // complete: both pages pushed
		t.Fatal(err)
	}
	s := x.h.Stats()
	if s.FaultsBy[PathPush] != 1 || s.Pages.Push != 2 {
		t.Errorf("stats %+v", s)
	}
}

// TestHandlerDuplicate delivers a page twice and a page that is already
// present (EEXIST): neither is retried and the present page keeps its
// contents.
func TestHandlerDuplicate(t *testing.T) {
	needRoot(t)
	x := start(t, 4, all(4), HandlerConfig{}, false)
	// Page 3 gets filled behind the handler's back.
	local := bytes.Repeat([]byte{0xEE}, int(PageSize))
	if _, err := x.fd.Copy(x.addr+3*PageSize, local, 0); err != nil {
		t.Fatal(err)
	}
	x.src.push(x.addr, 2)
	x.src.push(x.addr, 2)
	x.src.push(x.addr+2*PageSize, 2)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	s := x.h.Stats()
	if s.Duplicates != 2 || s.ExistWakes != 1 || s.Pages.Push != 3 {
		t.Errorf("stats %+v", s)
	}
	x.check(t, 1, nil)
	x.check(t, 3, local)
}

// TestHandlerRemove: a page dropped with MADV_DONTNEED before its data
// arrived reads zero, not the stale source data.
func TestHandlerRemove(t *testing.T) {
	x := start(t, 4, all(4), HandlerConfig{}, false)
	if err := unix.Madvise(x.mem[PageSize:2*PageSize], unix.MADV_DONTNEED); err != nil {
		t.Fatal(err) // returns once the handler has read the REMOVE event
	}
	x.src.push(x.addr, 4)
	x.check(t, 0, nil)
	x.check(t, 1, make([]byte, PageSize))
	x.check(t, 2, nil)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	if s := x.h.Stats(); s.RemovedLazy != 1 || s.Pages.Push != 3 {
		t.Errorf("stats %+v", s)
	}
	if n := x.src.acked[x.addr+PageSize]; n != 1 {
		t.Errorf("dropped page acked %d times", n)
	}
}

// TestHandlerRemoveInstalled: an installed page dropped by the process
// reads zero on its next fault (the handler must not answer with a wake,
// which would refault forever).
func TestHandlerRemoveInstalled(t *testing.T) {
	x := start(t, 2, all(2), HandlerConfig{}, false)
	x.check(t, 0, nil)
	if err := unix.Madvise(x.mem[:PageSize], unix.MADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	x.check(t, 0, make([]byte, PageSize))
	x.src.push(x.addr, 2)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
}

// TestHandlerUnmap: pages unmapped before they arrived are dropped and the
// transfer completes without them.
func TestHandlerUnmap(t *testing.T) {
	x := start(t, 4, all(4), HandlerConfig{}, false)
	if err := unix.MunmapPtr(unsafe.Pointer(&x.mem[2*PageSize]), uintptr(2*PageSize)); err != nil {
		t.Fatal(err)
	}
	x.src.push(x.addr, 4)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	if s := x.h.Stats(); s.RemovedLazy != 2 || s.Pages.Push != 2 {
		t.Errorf("stats %+v", s)
	}
	if in, total := x.h.Progress(); in != 4 || total != 4 {
		t.Errorf("Progress = %d/%d", in, total)
	}
}

// TestHandlerRemap moves a half-arrived region with mremap(2) and checks
// every page at the new address.
func TestHandlerRemap(t *testing.T) {
	const pages = 8
	x := start(t, pages, all(pages), HandlerConfig{FaultAround: 1}, false)
	x.src.push(x.addr, 2)
	x.check(t, 2, nil) // and 3, by fault-around
	waitFor(t, "4 pages", func() bool { in, _ := x.h.Progress(); return in == 4 })
	to, toMem := region(t, pages)
	if _, err := unix.MremapPtr(unsafe.Pointer(&x.mem[0]), uintptr(pages*PageSize), unsafe.Pointer(&toMem[0]),
		uintptr(pages*PageSize), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
		t.Fatal(err)
	}
	x.mem = toMem
	for k := pages - 1; k >= 0; k-- {
		x.check(t, k, nil)
	}
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	for a, n := range x.src.requested {
		if n != 1 || a >= x.addr+pages*PageSize || a < x.addr {
			t.Errorf("page %#x requested %d times (dump range [%#x, %#x), new address %#x)", a, n, x.addr, x.addr+pages*PageSize, to)
		}
	}
}

// TestHandlerSourceFailure: the source fails while a thread waits; the
// remaining pages are poisoned: the waiting read fails with EFAULT (a
// fault inside a system call), a direct access raises SIGBUS, and Run
// reports the loss.
func TestHandlerSourceFailure(t *testing.T) {
	x := start(t, 4, all(4), HandlerConfig{}, true)
	x.src.push(x.addr+3*PageSize, 1)
	waitFor(t, "page 3", func() bool { in, _ := x.h.Progress(); return in == 1 })
	tidc, done := touch(x.page(0))
	<-tidc
	waitFor(t, "the request", func() bool { x.src.mu.Lock(); defer x.src.mu.Unlock(); return len(x.src.requested) == 1 })
	x.src.ch <- PageData{Err: errors.New("connection reset")}
	err := x.result(t)
	if !errors.Is(err, ErrPagesLost) || !strings.Contains(err.Error(), "3 lazy pages") || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("Run = %v, want ErrPagesLost for 3 pages", err)
	}
	select {
	case r := <-done:
		if !errors.Is(r.err, unix.EFAULT) {
			t.Errorf("waiting read: %v, want EFAULT", r.err)
		}
	case <-time.After(hang):
		t.Fatal("waiting thread not released")
	}
	if s := x.h.Stats(); s.Poisoned != 3 || s.Lost != 3 {
		t.Errorf("stats %+v", s)
	}
	if got := directRead(x.mem[PageSize:]); got != "fault" {
		t.Errorf("direct read of a poisoned page: %s, want a fault (SIGBUS)", got)
	}
	if got := directRead(x.mem[3*PageSize:]); got != "ok" {
		t.Errorf("direct read of an installed page: %s", got)
	}
}

var sink byte

// directRead reads p[0] in user mode and reports "fault" if that raised a
// signal (SIGBUS on a poisoned page), else "ok".
func directRead(p []byte) (res string) {
	c := make(chan string, 1)
	go func() {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() {
			if recover() != nil {
				c <- "fault"
			}
		}()
		sink = p[0]
		c <- "ok"
	}()
	return <-c
}

// TestHandlerClose: Close interrupts Run, which poisons what is left.
func TestHandlerClose(t *testing.T) {
	x := start(t, 4, all(4), HandlerConfig{}, true)
	if err := x.h.Close(); err != nil {
		t.Fatal(err)
	}
	err := x.result(t)
	if !errors.Is(err, os.ErrClosed) {
		t.Errorf("Run after Close = %v", err)
	}
	if got := directRead(x.mem); got != "fault" {
		t.Errorf("read after Close: %s, want SIGBUS", got)
	}
}

// TestHandlerCancel: cancelling the context stops Run the same way.
func TestHandlerCancel(t *testing.T) {
	needRoot(t)
	addr, _ := region(t, 2)
	fd := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	src := newFakeSource(addr, pattern(addr, 2), true)
	defer src.close()
	h, err := NewHandler(fd, HandlerConfig{Regions: []Region{{addr, addr + 2*PageSize, all(2)}}, Source: src})
	if err == nil {
		t.Fatal("NewHandler accepted lazy runs at page indices outside the region")
	}
	fd = openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	h, err = NewHandler(fd, HandlerConfig{Regions: []Region{{addr, addr + 2*PageSize, []Run{{Addr: addr, Npages: 2}}}}, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(context.Background())
	c := make(chan error, 1)
	go func() { c <- h.Run(ctx) }()
	cancel()
	select {
	case err := <-c:
		if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrPagesLost) {
			t.Errorf("Run after cancel = %v", err)
		}
	case <-time.After(hang):
		t.Fatal("Run not stopped by cancel")
	}
}

// TestHandlerRemapWaiting moves a range while a thread waits on a page of
// it: the thread is woken and refaults at the old address (gone: EFAULT
// inside its system call), and the page is served at its new address.
func TestHandlerRemapWaiting(t *testing.T) {
	const pages = 4
	x := start(t, pages, all(pages), HandlerConfig{}, true)
	tidc, done := touch(x.page(2))
	<-tidc
	waitFor(t, "the request", func() bool { x.src.mu.Lock(); defer x.src.mu.Unlock(); return len(x.src.requested) == 1 })
	_, toMem := region(t, pages)
	if _, err := unix.MremapPtr(unsafe.Pointer(&x.mem[0]), uintptr(pages*PageSize), unsafe.Pointer(&toMem[0]),
		uintptr(pages*PageSize), unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if !errors.Is(r.err, unix.EFAULT) {
			t.Errorf("thread waiting on a moved page: %v, want EFAULT", r.err)
		}
	case <-time.After(hang):
		t.Fatal("thread waiting on a moved page not woken")
	}
	x.mem = toMem
	x.src.gate <- struct{}{} // the reply for page 2 arrives
	x.check(t, 2, nil)
	x.src.push(x.addr, pages)
	x.check(t, 0, nil)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	if s := x.h.Stats(); s.FaultsBy[PathAborted] != 1 {
		t.Errorf("stats %+v", s)
	}
}

// TestHandlerRegions serves two regions with several lazy runs and gaps,
// from page data that spans the gaps.
func TestHandlerRegions(t *testing.T) {
	needRoot(t)
	const pages = 16
	addr, mem := region(t, pages)
	fd := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	src := newFakeSource(addr, pattern(addr, pages), false)
	defer src.close()
	at := func(k uint64) uint64 { return addr + k*PageSize }
	h, err := NewHandler(fd, HandlerConfig{Source: src, Regions: []Region{
		{Start: at(8), End: at(16), Lazy: []Run{{Addr: at(9), Npages: 2}}},
		{Start: at(0), End: at(8), Lazy: []Run{{Addr: at(0), Npages: 2}, {Addr: at(4), Npages: 2}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	run := make(chan error, 1)
	go func() { run <- h.Run(context.Background()) }()
	x := &fixture{addr: addr, mem: mem, src: src, h: h, run: run}
	x.check(t, 5, nil)
	x.check(t, 2, make([]byte, PageSize))
	x.check(t, 15, make([]byte, PageSize))
	src.push(at(0), 12) // covers every run and the gaps between them
	for _, k := range []int{0, 1, 4, 9, 10} {
		x.check(t, k, nil)
	}
	x.check(t, 8, make([]byte, PageSize))
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	if in, total := h.Progress(); in != 6 || total != 6 {
		t.Errorf("Progress = %d/%d", in, total)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.acked) != 6 {
		t.Errorf("acked %v", src.acked)
	}
}

// prioSource is a fakeSource with a replies channel (a PrioritySource).
type prioSource struct {
	*fakeSource
	replies chan PageData
}

func (s prioSource) Replies() <-chan PageData { return s.replies }

// TestHandlerPushedPieces: a pushed frame is installed in pushPiece
// pieces, and a reply waiting meanwhile is installed after the first piece,
// not after the whole frame: a fault never waits behind a large push.
func TestHandlerPushedPieces(t *testing.T) {
	needRoot(t)
	const pages, frame = 128, 64 // a 256 KiB pushed frame
	addr, mem := region(t, pages)
	fd := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	src := prioSource{newFakeSource(addr, pattern(addr, pages), false), make(chan PageData, 1)}
	t.Cleanup(src.close)
	h, err := NewHandler(fd, HandlerConfig{
		Regions: []Region{{Start: addr, End: addr + pages*PageSize, Lazy: []Run{{Addr: addr, Npages: pages}}}},
		Source:  src, PID: os.Getpid(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	m := h.members[0]
	installed := func(from, n uint64) (k uint64) {
		for i := from; i < from+n; i++ {
			if m.installed.Get(i) {
				k++
			}
		}
		return k
	}
	atReply := ^uint64(0)
	reply := src.page(addr+100*PageSize, 1, false)
	reply.Release = func() { atReply = installed(0, frame) }
	src.replies <- reply
	released := false
	push := src.page(addr, frame, true)
	push.Release = func() { released = true }
	if err := h.installPushed(push, make([]Msg, maxRead)); err != nil {
		t.Fatal(err)
	}
	if want := uint64(pushPiece / PageSize); atReply >= frame || atReply != want {
		t.Errorf("the reply was installed with %d pages of the pushed frame in, want %d (one piece)", atReply, want)
	}
	if n := installed(0, frame); n != frame || !m.installed.Get(100) || !released {
		t.Errorf("%d of %d pushed pages installed, reply installed %v, frame released %v", n, frame, m.installed.Get(100), released)
	}
	for k := range frame + 1 {
		if k == frame {
			k = 100
		}
		if got, want := mem[k*PageSize:(k+1)*PageSize], src.data[k*PageSize:(k+1)*PageSize]; !bytes.Equal(got, want) {
			t.Errorf("page %d reads %x..., want %x...", k, got[:16], want[:16])
		}
	}
}

// TestHandlerCloseBeforeRun: a handler closed before Run (its restore
// failed before the process ran on a lazy page) poisons the pages and says
// so calmly, without "lost" (QA2 Q10: a WRN "1357 lazy pages lost" in a
// failure where the source kept every page).
func TestHandlerCloseBeforeRun(t *testing.T) {
	needRoot(t)
	addr, _ := region(t, 2)
	fd := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	src := newFakeSource(addr, pattern(addr, 2), true)
	defer src.close()
	var log bytes.Buffer
	h, err := NewHandler(fd, HandlerConfig{Regions: []Region{{addr, addr + 2*PageSize, []Run{{Addr: addr, Npages: 2}}}}, Source: src,
		PID: os.Getpid(), Log: zerolog.New(&log)})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Run(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Run after Close = %v", err)
	}
	got := log.String()
	if !strings.Contains(got, `"level":"info"`) || !strings.Contains(got, "never served") || !strings.Contains(got, `"pages":2`) || strings.Contains(got, "lost") {
		t.Errorf("log of Close before Run: %s", got)
	}
}

// TestHandlerAbsent: a run the source never had arrives as
// PageData.Absent: nothing is installed there, the pages are acked and
// count as done, a fault there gets a zero page without a request, and
// Run returns once the other pages are in, though the absent pages were
// never filled. After Close (the uffd released) they still read as zeros.
func TestHandlerAbsent(t *testing.T) {
	const pages = 8
	x := start(t, pages, all(pages), HandlerConfig{}, true) // requests held: faults are not answered
	x.src.ch <- PageData{Addr: x.addr + 4*PageSize, Absent: 4, Pushed: true}
	waitFor(t, "4 absent pages done", func() bool { in, _ := x.h.Progress(); return in == 4 })
	zero := make([]byte, PageSize)
	x.check(t, 5, zero) // answered locally: no request
	waitFor(t, "a zero-page fault", func() bool { return x.h.Stats().FaultsBy[PathZero] == 1 })
	if s := x.h.Stats(); s.Requests != 0 || s.Pages.Absent != 4 {
		t.Errorf("stats %+v", s)
	}
	x.src.push(x.addr, 4)
	if err := x.result(t); err != nil {
		t.Fatal(err)
	}
	x.h.Close()
	for k := range pages {
		want := x.src.data[k*int(PageSize) : (k+1)*int(PageSize)]
		if k >= 4 {
			want = zero
		}
		if got := x.page(k); !bytes.Equal(got, want) {
			t.Errorf("page %d reads %x..., want %x...", k, got[:16], want[:16])
		}
	}
	if len(x.src.acked) != pages {
		t.Errorf("%d pages acked, want %d", len(x.src.acked), pages)
	}
}

// polledSource is a fakeSource whose answers come on a pipe that the
// handler polls and reads through ReadReplies (a PolledSource): Request
// writes the run asked for into the pipe, ReadReplies answers each run it
// reads. swap replaces the pipe, as a reconnect replaces the connection.
type polledSource struct {
	*fakeSource
	pmu    sync.Mutex
	r, w   int
	kick   func()
	polled int // answers installed through ReadReplies
}

func newPolledSource(t *testing.T, base uint64, data []byte) *polledSource {
	s := &polledSource{fakeSource: newFakeSource(base, data, false), r: -1, w: -1}
	s.swap(t)
	t.Cleanup(func() {
		s.close()
		s.pmu.Lock()
		unix.Close(s.r)
		unix.Close(s.w)
		s.pmu.Unlock()
	})
	return s
}

func (s *polledSource) swap(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	s.pmu.Lock()
	if s.r >= 0 {
		unix.Close(s.r)
		unix.Close(s.w)
	}
	s.r, s.w = p[0], p[1]
	kick := s.kick
	s.pmu.Unlock()
	if kick != nil {
		kick()
	}
}

func (s *polledSource) Replies() <-chan PageData { return nil }

func (s *polledSource) PollReplies(kick func()) bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	s.kick = kick
	return true
}

func (s *polledSource) ReplyFD() int {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.r
}

func (s *polledSource) Request(addr uint64, n int) error {
	s.mu.Lock()
	for k := range n {
		s.requested[addr+uint64(k)*PageSize]++
	}
	s.mu.Unlock()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], addr)
	binary.LittleEndian.PutUint64(b[8:], uint64(n))
	s.pmu.Lock()
	defer s.pmu.Unlock()
	_, err := unix.Write(s.w, b[:])
	return err
}

func (s *polledSource) ReadReplies(install func(PageData) error) error {
	s.pmu.Lock() // swap must not close the fd under the read
	defer s.pmu.Unlock()
	for {
		var b [16]byte
		if n, err := unix.Read(s.r, b[:]); n != len(b) || err != nil {
			return nil // EAGAIN: all read (a record is written whole)
		}
		s.polled++
		if err := install(s.page(binary.LittleEndian.Uint64(b[:]), int(binary.LittleEndian.Uint64(b[8:])), false)); err != nil {
			return err
		}
	}
}

// TestHandlerPolledSource: with a PolledSource, answers are read by the
// Run loop from the fd it polls (none come on a channel), and after the
// source replaced its fd (a reconnect) the new one is polled.
func TestHandlerPolledSource(t *testing.T) {
	needRoot(t)
	const pages = 16
	addr, mem := region(t, pages)
	fd := openAPI(t, FeaturesNonCooperative|FeatureThreadID)
	src := newPolledSource(t, addr, pattern(addr, pages))
	h, err := NewHandler(fd, HandlerConfig{
		Regions: []Region{{Start: addr, End: addr + pages*PageSize, Lazy: []Run{{Addr: addr, Npages: pages}}}},
		Source:  src, PID: os.Getpid(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if h.polled == nil {
		t.Fatal("the handler does not poll a PolledSource")
	}
	run := make(chan error, 1)
	go func() { run <- h.Run(context.Background()) }()
	t.Cleanup(func() {
		h.Close()
		<-run
	})
	x := &fixture{addr: addr, mem: mem, src: src.fakeSource, h: h, run: run}
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for k := g; k < pages/2; k += 2 {
				x.check(t, k, nil)
			}
		})
	}
	wg.Wait()
	src.swap(t)
	for k := pages / 2; k < pages; k++ {
		x.check(t, k, nil)
	}
	if err := x.result(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	s := h.Stats()
	if src.polled != int(s.Requests) || s.Requests == 0 || s.Pages.Fault != pages {
		t.Errorf("%d answers read through ReadReplies, stats %+v: want one per request, every page by fault", src.polled, s)
	}
}
