package uffd

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lazycr/lazycr/internal/kabi"
	"github.com/lazycr/lazycr/internal/schedslice"
	"github.com/lazycr/lazycr/lazypages"
	"github.com/lazycr/lazycr/proc"
	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
)

// Errors of the lazy-pages handler.
var (
	// ErrSourceClosed: the PageSource closed its Pages channel while pages
	// were still needed. The missing pages are poisoned.
	ErrSourceClosed = errors.New("page source closed")
	// ErrPagesLost: Run stopped before every lazy page was installed; the
	// pages not installed were poisoned (an access raises SIGBUS). The
	// returned error wraps it together with the cause.
	ErrPagesLost = errors.New("pages lost")
	// ErrExited: every process the handler served exited on its own
	// before all its lazy pages were installed; nobody needs the rest.
	// Run's error is then an *ExitedError.
	ErrExited = errors.New("every served process exited before its last lazy pages were needed")
)

// ExitedError is Run's answer when every served process exited (none was
// killed by the handler) before every lazy page was installed: the
// migration is over, not failed. Unneeded is how many lazy pages were never
// installed in any process.
type ExitedError struct {
	PID      int // the restored (root) process
	Unneeded uint64
}

func (e *ExitedError) Error() string {
	return fmt.Sprintf("serve lazy pages: pid %d exited with %d lazy pages never needed: %v", e.PID, e.Unneeded, ErrExited)
}

// Unwrap makes errors.Is(err, ErrExited) true.
func (e *ExitedError) Unwrap() error { return ErrExited }

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	// Regions are the registered lazy VMAs, at their dump-time addresses
	// (the process is restored at the same addresses). NewHandler
	// registers each with UFFDIO_REGISTER_MODE_MISSING.
	Regions []Region
	// Source supplies the lazy pages.
	Source PageSource
	// FaultAround is the number of extra pages requested after a faulting
	// page (pages still needed and not in flight, in the same lazy run).
	FaultAround int
	// PID is the restored process, for logs and as the target of SIGBUS
	// when a page cannot be poisoned.
	PID int
	// Log receives per-event logs at trace level and problems at warn.
	Log zerolog.Logger
	// Trace keeps a FaultRecord per fault for Trace and WriteTrace.
	Trace bool
	// OnFork, if set, is called with the uffd of each forked child the
	// handler adopts (e.g. to hand a reference to a keeper); an error is
	// logged.
	OnFork func(uffd int) error
	// OnChildPID, if set, is called once the pid (thread-group id) of a
	// forked child adopted through OnFork is known, with the uffd OnFork
	// got: the child can then be watched and killed by pid even after its
	// parent exited (it is no longer found among the parent's children
	// then). An error is logged.
	OnChildPID func(uffd, pid int) error
	// Space keys the process's lazy pages towards Source (see SpaceAddr);
	// 0 for a single process.
	Space int
	// Members are the other processes of a restored tree, each with its
	// own uffd and lazy VMAs, served by the same loop from the same
	// Source. The handler is done when every member's pages are in.
	Members []Member
	// BeforeClose, if set, is called once when the handler is about to
	// close the uffds for good: every page is in, or every missing page is
	// poisoned (or its process killed). Another holder of the uffds can let
	// go then.
	BeforeClose func()
}

// Member is one more process of a restored tree for a Handler.
type Member struct {
	FD      *FD // its userfaultfd after the API handshake; the handler owns it
	PID     int
	Space   int      // its key space towards the Source, unique in the tree
	Regions []Region // its lazy VMAs, at its dump-time addresses
}

// A Handler serves the missing-page faults of a restored process (and of
// the children it forks) from a PageSource: the lazy-pages daemon of a
// post-copy restore. See Documentation/admin-guide/mm/userfaultfd.rst,
// "Non-cooperative userfaultfd".
//
// Page state (package lazypages) is kept per member (the process and each
// forked child) as bitmaps over the lazy pages, numbered in keyed dump-time
// order by one lazypages.Index; a page is needed, installed or dropped in
// each member and in flight (requested, not yet arrived) for the whole
// group, so it is requested once. Each member keeps a
// lazypages.Translation from its current addresses to dump-time addresses
// that follows mremap(2), and the faults waiting for each page.
type Handler struct {
	cfg HandlerConfig
	src PageSource
	// replies carries answers to requests when src is a PrioritySource
	// (nil otherwise: a nil channel is never ready).
	replies <-chan PageData
	// polled reads the answers in the Run loop when src is a
	// PolledSource that agreed to it (nil otherwise).
	polled PolledSource
	log    zerolog.Logger
	start  time.Time

	idx   *lazypages.Index // every member's lazy runs (keyed dump addresses), numbered
	total uint64           // lazy pages: idx.Pages()

	// Owned by the Run goroutine (and by NewHandler/Close when Run never
	// runs).
	inflight lazypages.Bitmap
	acked    lazypages.Bitmap
	members  []*member
	retries  []retryOp
	retrying *retryOp // the op runRetries is installing, nil outside it
	primary  *member
	lostGone uint64 // pages the primary still needed when it went away
	// everyone is every member served so far, removed ones included (for
	// the pages no process ever needed); killed is set once the handler
	// signalled one or poisoned its pages (a gone member then may not have
	// ended on its own).
	everyone []*member
	killed   bool
	arrBase  uint64 // pages [arrBase, arrBase+len(arrGot)) are being installed
	arrGot   []bool // page arrBase+k got installed in some member
	arrZero  []bool // page arrBase+k got zeroed (UFFDIO_ZEROPAGE) in some member
	// counted: the pages Stats.Pages counted already. A page arrives once
	// even when it is installed in a second member later: a retry after
	// EAGAIN (a fork copying the address space), a child that needed it too.
	counted lazypages.Bitmap

	evfd int // eventfd waking the Run loop: source data, ctx, Close

	// life guards the Run/Close handshake.
	life    sync.Mutex
	running bool
	closed  bool
	runDone chan struct{}
	// evClosed: the eventfd is closed, a source's kick must not write it.
	evClosed bool

	closing atomic.Bool
	done    atomic.Uint64 // pages installed or dropped in every member (acked)

	// qmu guards queue, filled by the forwarding goroutine.
	qmu   sync.Mutex
	queue []PageData // at most one item per arm token

	arm, disarm chan struct{} // see forward

	// mu guards the statistics and the trace.
	mu    sync.Mutex
	stats Summary
	lat   []time.Duration
	trace Trace
}

// member is one process served by the handler: the restored process or a
// child it forked (with its own uffd).
type member struct {
	fd *FD
	// pid is the process's pid; 0 for a forked child until it is known
	// (the FORK event comes before the child has a pid: it is learnt from
	// its first fault's thread id, or looked up among parent's children).
	pid       int
	parent    int                    // a forked child's parent pid (0 for the restored process)
	tr        *lazypages.Translation // current → dump-time (keyed) addresses
	installed lazypages.Bitmap
	dropped   lazypages.Bitmap
	needed    uint64 // lazy pages neither installed nor dropped
	waiters   lazypages.Waiters[*pending]
	canPoison bool
	gone      bool
	// pidfd is the process's pidfd (-1 if none: a forked child), readable
	// once it exited.
	pidfd int
	space int // the space its dump-time addresses are keyed in
}

type pending struct {
	rec       FaultRecord
	requested bool // this fault sent the request
}

// retryOp is an install to do again after EAGAIN: data (or zeros pages the
// source read as zeros) for dump address dump, or, with neither, a zero
// page for fault p at current address cur.
type retryOp struct {
	m      *member
	dump   uint64
	data   []byte
	zeros  uint64
	pushed bool
	cur    uint64
	p      *pending
	// noVMASince: when a copy of this op first found no registered VMA
	// at its address (ENOENT, see copyRun); zero if it never did.
	noVMASince time.Time
}

// noVMAPatience bounds how long a copy that finds no registered VMA at
// its address (ENOENT) is retried as if the address space were changing
// before it fails as it did before.
const noVMAPatience = 5 * time.Second

// how says how markInstalled's page got in.
type how uint8

const (
	howCopied  how = iota // UFFDIO_COPY of the source's bytes
	howZeroed             // UFFDIO_ZEROPAGE: the source read it as zeros
	howExisted            // EEXIST: another path filled it
)

func (m *member) needs(i uint64) bool { return !m.installed.Get(i) && !m.dropped.Get(i) }
func (h *Handler) now() time.Duration { return time.Since(h.start) }

// NewHandler registers cfg.Regions on fd (after the caller's UFFDIO_API
// handshake with FeaturesNonCooperative|FeatureThreadID), and each of
// cfg.Members' regions on its own uffd, and returns a handler for them. The
// handler owns fd and every member's FD from now on, also on error.
func NewHandler(fd *FD, cfg HandlerConfig) (*Handler, error) {
	h := &Handler{cfg: cfg, src: cfg.Source, log: cfg.Log, start: time.Now(), evfd: -1,
		runDone: make(chan struct{}), arm: make(chan struct{}, 1), disarm: make(chan struct{})}
	if ps, ok := cfg.Source.(PrioritySource); ok {
		h.replies = ps.Replies()
	}
	specs := append([]Member{{FD: fd, PID: cfg.PID, Space: cfg.Space, Regions: cfg.Regions}}, cfg.Members...)
	var members []*member
	fail := func(err error) (*Handler, error) {
		for _, sp := range specs {
			if sp.FD != nil {
				sp.FD.Close()
			}
		}
		for _, m := range members {
			if m.pidfd >= 0 {
				unix.Close(m.pidfd)
			}
		}
		if h.evfd >= 0 {
			unix.Close(h.evfd)
		}
		return nil, err
	}
	if cfg.Source == nil {
		return fail(errors.New("create lazy-pages handler: no page source"))
	}
	if cfg.FaultAround < 0 {
		return fail(fmt.Errorf("create lazy-pages handler: negative fault-around %d", cfg.FaultAround))
	}
	// Every member's runs, keyed by space, numbered in keyed order.
	var all []lazypages.Run
	spaces := map[int]int{}
	for _, sp := range specs {
		if sp.FD == nil {
			return fail(fmt.Errorf("create lazy-pages handler for pid %d: no uffd", sp.PID))
		}
		if sp.Space < 0 || sp.Space >= MaxSpaces {
			return fail(fmt.Errorf("create lazy-pages handler for pid %d: space %d outside 0..%d", sp.PID, sp.Space, MaxSpaces-1))
		}
		if other, ok := spaces[sp.Space]; ok {
			return fail(fmt.Errorf("create lazy-pages handler for pid %d: space %d is pid %d's too", sp.PID, sp.Space, other))
		}
		spaces[sp.Space] = sp.PID
		off := SpaceAddr(sp.Space, 0)
		regions := slices.Clone(sp.Regions)
		slices.SortFunc(regions, func(a, b Region) int { return cmp.Compare(a.Start, b.Start) })
		m := &member{fd: sp.FD, pid: sp.PID, canPoison: true, pidfd: -1, space: sp.Space}
		var segs []lazypages.Seg
		for k, r := range regions {
			if r.Start%PageSize != 0 || r.End%PageSize != 0 || r.End <= r.Start || r.End > SpaceSize || (k > 0 && r.Start < regions[k-1].End) {
				return fail(fmt.Errorf("create lazy-pages handler for pid %d: bad region [%#x, %#x)", sp.PID, r.Start, r.End))
			}
			last := r.Start
			for _, l := range r.Lazy {
				if l.Addr%PageSize != 0 || l.Addr < last || l.End() > r.End || l.Npages == 0 {
					return fail(fmt.Errorf("create lazy-pages handler for pid %d: bad lazy run %#x+%d pages in region [%#x, %#x)", sp.PID, l.Addr, l.Npages, r.Start, r.End))
				}
				all = append(all, lazypages.Run{Addr: off + l.Addr, Npages: l.Npages})
				last = l.End()
			}
			segs = append(segs, lazypages.Seg{Cur: r.Start, Dump: off + r.Start, Len: r.End - r.Start})
		}
		tr, err := lazypages.NewTranslation(segs)
		if err != nil {
			return fail(fmt.Errorf("create lazy-pages handler for pid %d: %w", sp.PID, err))
		}
		m.tr = tr
		for _, r := range regions {
			ioctls, err := sp.FD.Register(r.Start, r.End-r.Start, ModeMissing)
			if err != nil {
				return fail(fmt.Errorf("create lazy-pages handler for pid %d: %w", sp.PID, err))
			}
			if !ioctls.Has(kabi.UFFDIO_NR_COPY) || !ioctls.Has(kabi.UFFDIO_NR_ZEROPAGE) || !ioctls.Has(kabi.UFFDIO_NR_WAKE) {
				return fail(fmt.Errorf("create lazy-pages handler for pid %d: region [%#x, %#x) lacks COPY/ZEROPAGE/WAKE (ioctls %s)", sp.PID, r.Start, r.End, ioctls))
			}
			if !ioctls.Has(kabi.UFFDIO_NR_POISON) {
				m.canPoison = false
			}
		}
		if sp.PID > 0 {
			// An exited process is noticed through its pidfd (pidfd_open(2):
			// readable once it terminated), not only when an ioctl fails
			// ESRCH: a process that exits between faults must not leave Run
			// waiting.
			if pfd, err := unix.PidfdOpen(sp.PID, 0); err == nil {
				m.pidfd = pfd
			} else {
				h.log.Debug().Err(err).Int("pid", sp.PID).Msg("pidfd_open: exit noticed through ESRCH only")
			}
		}
		members = append(members, m)
	}
	idx, err := lazypages.NewIndex(all)
	if err != nil {
		return fail(fmt.Errorf("create lazy-pages handler for pid %d: %w", cfg.PID, err))
	}
	h.idx, h.total = idx, idx.Pages()
	ev, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fail(fmt.Errorf("create lazy-pages handler wakeup eventfd: %w", os.NewSyscallError("eventfd2", err)))
	}
	h.evfd = ev
	h.inflight, h.acked = lazypages.NewBitmap(h.total), lazypages.NewBitmap(h.total)
	h.counted = lazypages.NewBitmap(h.total)
	for _, m := range members {
		// A member needs the pages of its own space; the others' are
		// never its to fill (dropped from the start).
		m.installed, m.dropped = lazypages.NewBitmap(h.total), lazypages.NewBitmap(h.total)
		lo, hi := h.idx.SpacePages(m.space)
		m.needed = hi - lo
		m.dropped.SetRange(0, lo)
		m.dropped.SetRange(hi, h.total-hi)
	}
	h.members, h.primary = members, members[0]
	h.everyone = slices.Clone(members)
	h.trace = Trace{Start: h.start, PID: cfg.PID}
	// Last, once nothing can fail: the source then leaves its answers to
	// the Run loop.
	if ps, ok := cfg.Source.(PolledSource); ok && ps.PollReplies(h.sourceKick) {
		h.polled = ps
	}
	return h, nil
}

// Progress returns the lazy pages installed (or dropped by the process) in
// every member so far, and the number of lazy pages.
func (h *Handler) Progress() (installed, total uint64) { return h.done.Load(), h.total }

// Stats returns the counters and the fault-latency summary so far.
func (h *Handler) Stats() Summary {
	h.mu.Lock()
	s := h.stats
	lat := slices.Clone(h.lat)
	s.Histogram = nil
	h.mu.Unlock()
	s.setLatency(lat)
	return s
}

// Trace returns a copy of the fault records (empty unless
// HandlerConfig.Trace).
func (h *Handler) Trace() Trace {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.trace
	t.Faults = slices.Clone(t.Faults)
	t.Installed = slices.Clone(t.Installed)
	return t
}

// WriteTrace writes the fault records as Chrome/Perfetto trace-event JSON
// (see Trace.WriteJSON).
func (h *Handler) WriteTrace(w io.Writer) error {
	t := h.Trace()
	return t.WriteJSON(w)
}

// kick wakes the Run loop.
func (h *Handler) kick() {
	one := [8]byte{1}
	unix.Write(h.evfd, one[:]) // EAGAIN only if the counter is saturated: already awake
}

// sourceKick wakes the Run loop for a PolledSource whose ReplyFD changed;
// it may come at any time, also after Close.
func (h *Handler) sourceKick() {
	h.life.Lock()
	defer h.life.Unlock()
	if !h.evClosed {
		h.kick()
	}
}

// Close stops the handler. A running Run poisons the pages not yet
// installed, closes the uffds and returns an error wrapping os.ErrClosed
// and ErrPagesLost; Close waits for it. Without Run, Close poisons and
// closes itself (a later Run returns os.ErrClosed).
func (h *Handler) Close() error {
	h.life.Lock()
	if h.closed {
		h.life.Unlock()
		return nil
	}
	h.closed = true
	running := h.running
	h.life.Unlock()
	h.closing.Store(true)
	h.kick()
	var err error
	if running {
		<-h.runDone
	} else {
		if h.done.Load() < h.total && len(h.members) > 0 {
			// Closed before Run: no fault was served, so the process never
			// ran on a lazy page; its caller gave up on it (a failed
			// restore) and the source still has every page. Not a loss.
			left := h.total - h.done.Load()
			if lerr := h.finish(os.ErrClosed); lerr != nil {
				h.log.Info().Int("pid", h.cfg.PID).Uint64("pages", left).Msg("lazy pages never served: closed before the process ran on them (they stay at the source); the pages not fetched are poisoned here")
			}
		} else {
			h.finish(nil)
		}
	}
	h.life.Lock()
	h.evClosed = true
	if cerr := unix.Close(h.evfd); cerr != nil && err == nil {
		err = fmt.Errorf("close eventfd %d: %w", h.evfd, os.NewSyscallError("close", cerr))
	}
	h.evfd = -1
	h.life.Unlock()
	return err
}

// Run serves faults and events and installs arriving pages until every
// lazy page is installed or dropped in every member (nil), ctx is
// cancelled, Close is called (os.ErrClosed) or the source fails. On the
// failures every page not yet installed is poisoned with UFFDIO_POISON, so a
// thread touching it gets SIGBUS rather than a hang or a zero page, and the
// error wraps ErrPagesLost and says how many pages were lost. Run closes the
// uffds when it returns: with nobody reading them, the process would block
// on its next munmap, madvise or fork. Call Close afterwards to release the
// handler's own eventfd.
func (h *Handler) Run(ctx context.Context) error {
	h.life.Lock()
	if h.closed {
		h.life.Unlock()
		return fmt.Errorf("serve lazy pages of pid %d: %w", h.cfg.PID, os.ErrClosed)
	}
	if h.running {
		h.life.Unlock()
		return fmt.Errorf("serve lazy pages of pid %d: already running", h.cfg.PID)
	}
	h.running = true
	h.life.Unlock()
	defer close(h.runDone)

	kicked := make(chan struct{})
	stopCtx := context.AfterFunc(ctx, func() {
		h.kick()
		close(kicked)
	})
	defer func() {
		if !stopCtx() {
			<-kicked // the eventfd stays open until the kick is done
		}
	}()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		h.forward(stop)
	}()
	// The loop runs on an OS thread of its own that asks for a short
	// scheduler slice: woken by a fault or an answer, it preempts the
	// threads moving the push instead of waiting for the end of their
	// slice (see internal/schedslice). The goroutine ends locked, so Go
	// ends the thread and no other goroutine inherits the slice.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := schedslice.Request(schedslice.Min); err != nil {
			h.log.Debug().Err(err).Msg("fault loop keeps the default scheduler slice")
		}
		errc <- h.loop(ctx)
	}()
	err := <-errc
	close(stop)
	wg.Wait()
	return h.finish(err)
}

// forward moves page data from the source into the queue and wakes Run,
// but only while Run waits in poll (armed by a token on h.arm): while Run is
// busy, data stays in the channel and Run takes it itself, without a
// goroutine hand-off. Each token yields one item or ends with a disarm.
func (h *Handler) forward(stop <-chan struct{}) {
	ch := h.src.Pages()
	for {
		select {
		case <-stop:
			return
		case <-h.arm:
		}
		select {
		case <-stop:
			return
		case <-h.disarm:
		case d := <-h.replies:
			h.qmu.Lock()
			h.queue = append(h.queue, d)
			h.qmu.Unlock()
			h.kick()
		case d, ok := <-ch:
			if !ok {
				d = PageData{Err: ErrSourceClosed}
			}
			h.qmu.Lock()
			h.queue = append(h.queue, d)
			h.qmu.Unlock()
			h.kick()
			if !ok {
				return
			}
		}
	}
}

func (h *Handler) complete() bool {
	for _, m := range h.members {
		if m.needed > 0 {
			return false
		}
	}
	return true
}

func (h *Handler) loop(ctx context.Context) error {
	var (
		msgs  [maxRead]Msg
		pfds  []unix.PollFd
		ev    [8]byte
		armed bool // a token is on h.arm or held by forward
	)
	for {
		if len(h.members) > 0 && h.complete() {
			return nil // every process still there has all its pages
		}
		if len(h.members) == 0 {
			// Every process is gone. One the handler killed lost pages;
			// otherwise they exited on their own and the pages left are
			// needed by nobody: the migration is over.
			if h.killed && h.lostGone > 0 {
				return fmt.Errorf("serve lazy pages: pid %d gone with %d pages not installed: %w", h.cfg.PID, h.lostGone, ErrGone)
			}
			if n := h.unneeded(); n > 0 && !h.killed {
				return &ExitedError{PID: h.cfg.PID, Unneeded: n}
			}
			return nil
		}
		if h.closing.Load() {
			return os.ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		// Data already waiting is taken without a wake-up through forward:
		// poll only looks at the uffds then.
		ready := len(h.replies) > 0 || len(h.src.Pages()) > 0
		timeout := -1
		switch {
		case ready:
			timeout = 0
		case len(h.retries) > 0:
			timeout = 1
		}
		if !armed && !ready {
			h.arm <- struct{}{}
			armed = true
		}
		pfds = append(pfds[:0], unix.PollFd{Fd: int32(h.evfd), Events: unix.POLLIN})
		for _, m := range h.members {
			pfds = append(pfds, unix.PollFd{Fd: int32(m.fd.Fd()), Events: unix.POLLIN})
		}
		// Then each member's pidfd: readable once it exited.
		var watched []*member
		for _, m := range h.members {
			if m.pidfd >= 0 {
				watched = append(watched, m)
				pfds = append(pfds, unix.PollFd{Fd: int32(m.pidfd), Events: unix.POLLIN})
			}
		}
		// Last, the connection the answers come on, if the loop reads it.
		rfd, ri := -1, len(pfds)
		if h.polled != nil {
			if rfd = h.polled.ReplyFD(); rfd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(rfd), Events: unix.POLLIN})
			}
		}
		if _, err := unix.Poll(pfds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait on uffds of pid %d: %w", h.cfg.PID, os.NewSyscallError("poll", err))
		}
		if pfds[0].Revents&unix.POLLIN != 0 {
			unix.Read(h.evfd, ev[:])
		}
		select {
		case h.disarm <- struct{}{}:
			armed = false
		default:
		}
		h.resolveChildren()
		members := slices.Clone(h.members)
		for k, m := range watched {
			if m.gone || pfds[1+len(members)+k].Revents == 0 {
				continue
			}
			// Read what it left first: a fault it raised is answered before
			// ESRCH would tell, and its events are accounted.
			if err := h.drain(m, msgs[:]); err != nil {
				h.log.Warn().Err(err).Int("pid", m.pid).Msg("read the last events of an exited process")
			}
			h.log.Debug().Int("pid", m.pid).Msg("process exited")
			h.removeMember(m)
		}
		// Answers first: their threads wait already. Then the new faults.
		if rfd >= 0 && pfds[ri].Revents != 0 {
			if err := h.installReplies(); err != nil {
				return err
			}
		}
		for k, m := range members {
			if m.gone {
				continue
			}
			if re := pfds[k+1].Revents; re&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				h.log.Warn().Int("pid", m.pid).Int("uffd", m.fd.Fd()).Msgf("uffd poll revents %#x: dropping member", re)
				h.removeMember(m)
				continue
			}
			if err := h.drain(m, msgs[:]); err != nil {
				return err
			}
		}
		h.qmu.Lock()
		q := h.queue
		h.queue = nil
		h.qmu.Unlock()
		if len(q) > 0 {
			armed = false // the token was spent on this item
		}
		// Take what is ready on the channels directly too: a reply that is
		// already there costs no goroutine hand-off. Replies go first.
	replies:
		for {
			select {
			case d := <-h.replies:
				q = append(q, d)
			default:
				break replies
			}
		}
		slices.SortStableFunc(q, func(a, b PageData) int {
			switch {
			case a.Pushed == b.Pushed:
				return 0
			case !a.Pushed:
				return -1
			}
			return 1
		})
	more:
		for len(q) < 64 {
			select {
			case d, ok := <-h.src.Pages():
				if !ok {
					d = PageData{Err: ErrSourceClosed}
				}
				q = append(q, d)
				if !ok {
					break more
				}
			default:
				break more
			}
		}
		for _, d := range q {
			if d.Err != nil {
				return fmt.Errorf("page source: %w", d.Err)
			}
			if !d.Pushed {
				if err := h.install(d); err != nil {
					return err
				}
				continue
			}
			if err := h.installPushed(d, msgs[:]); err != nil {
				return err
			}
		}
		if len(h.retries) > 0 {
			for _, m := range slices.Clone(h.members) {
				if err := h.drain(m, msgs[:]); err != nil {
					return err
				}
			}
			if err := h.runRetries(); err != nil {
				return err
			}
		}
	}
}

// pushPiece is the most pushed bytes installed at once: between pieces the
// handler reads new faults and installs the replies that came, so a fault
// waits for at most one piece's UFFDIO_COPY (64 KiB: 4.7 GB/s into fresh
// pages here, against 0.73 GB/s in 4 KiB calls, see DESIGN.md).
const pushPiece = 64 << 10

// installPushed installs pushed data in pieces of at most pushPiece bytes,
// answering faults first between them: new faults are read (so their
// requests go out now) and replies that came in meanwhile are installed.
func (h *Handler) installPushed(d PageData, msgs []Msg) error {
	if d.Release != nil {
		defer d.Release()
	}
	whole := d
	for off := 0; ; {
		piece := whole
		piece.Release = nil
		if whole.Zero == 0 {
			n := min(len(whole.Data)-off, pushPiece)
			piece.Addr, piece.Data = whole.Addr+uint64(off), whole.Data[off:off+n]
			off += n
		}
		if err := h.install(piece); err != nil {
			return err
		}
		for _, m := range slices.Clone(h.members) {
			if err := h.drain(m, msgs); err != nil {
				return err
			}
		}
		if err := h.installReplies(); err != nil {
			return err
		}
		if off >= len(whole.Data) {
			return nil
		}
	}
}

// installReplies installs the answers already waiting: on the replies
// channel, and on the connection the loop reads itself.
func (h *Handler) installReplies() error {
	if h.polled != nil {
		err := h.polled.ReadReplies(func(d PageData) error {
			if d.Err != nil {
				return fmt.Errorf("page source: %w", d.Err)
			}
			return h.install(d)
		})
		if err != nil {
			return err
		}
	}
	for {
		select {
		case d := <-h.replies:
			if d.Err != nil {
				return fmt.Errorf("page source: %w", d.Err)
			}
			if err := h.install(d); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

// drain reads and handles every pending message of m.
func (h *Handler) drain(m *member, buf []Msg) error {
	for !m.gone {
		msgs, err := m.fd.ReadMsgs(buf)
		if err != nil {
			return fmt.Errorf("serve lazy pages of pid %d: %w", m.pid, err)
		}
		if len(msgs) == 0 {
			return nil
		}
		now := h.now()
		for _, msg := range msgs {
			if err := h.handle(m, msg, now); err != nil {
				return err
			}
		}
	}
	return nil
}

func (h *Handler) handle(m *member, msg Msg, now time.Duration) error {
	if m.gone {
		return nil
	}
	h.log.Trace().Int("pid", m.pid).Stringer("msg", msg).Msg("uffd message")
	switch msg.Event {
	case EventPageFault:
		return h.fault(m, msg.PageFault, now)
	case EventRemove:
		return h.drop(m, msg.Remove.Start, msg.Remove.End, true)
	case EventUnmap:
		err := h.drop(m, msg.Unmap.Start, msg.Unmap.End, false)
		m.tr.Cut(msg.Unmap.Start, msg.Unmap.End)
		return err
	case EventRemap:
		return h.remap(m, msg.Remap)
	case EventFork:
		return h.fork(m, msg.Fork.UFD)
	default:
		h.log.Warn().Int("pid", m.pid).Stringer("event", msg.Event).Msg("unknown uffd event ignored")
	}
	return nil
}

func (h *Handler) fault(m *member, pf PageFault, now time.Duration) error {
	if m.pid == 0 && pf.TID > 0 {
		// A thread of the child: its thread group is the child, unless
		// another process reached into the child's memory
		// (process_vm_readv(2), /proc/PID/mem, ptrace): the fault then
		// names the accessing task (uffd_msg.ptid) and nothing tells it
		// apart. So the pid is learnt only when it can be no other: a
		// child of m's parent that no member is, m being the parent's
		// only member without a pid (QA4 F0: a sibling that read the
		// child's memory was taken for the child, and its exit closed
		// the child's uffd, whose missing pages then read as zeros).
		if pid := proc.Tgid(pf.TID); h.onlyCandidate(m, pid) {
			h.learnPID(m, pid)
		}
	}
	addr := pf.Addr &^ (PageSize - 1)
	p := &pending{rec: FaultRecord{Addr: addr, PID: m.pid, TID: pf.TID, Read: now}}
	h.mu.Lock()
	h.stats.Faults++
	h.mu.Unlock()
	dump, ok := m.tr.ToDump(addr)
	var i uint64
	if ok {
		p.rec.DumpAddr = dump
		i, ok = h.idx.Lookup(dump)
	}
	if !ok || m.dropped.Get(i) {
		return h.zero(m, addr, p)
	}
	if m.installed.Get(i) {
		if err := h.wake(m, addr); err != nil {
			return fmt.Errorf("serve fault at %#x of pid %d: %w", addr, m.pid, err)
		}
		p.rec.Path = PathPresent
		h.finishFault(p, h.now())
		return nil
	}
	m.waiters.Add(i, p)
	if h.inflight.Get(i) {
		p.rec.Path = PathFaultAround
		return nil
	}
	n := uint64(1)
	end := h.idx.RunEnd(i)
	for j := i + 1; j < end && n <= uint64(h.cfg.FaultAround) && m.needs(j) && !h.inflight.Get(j); j++ {
		n++
	}
	h.inflight.SetRange(i, n)
	p.requested = true
	p.rec.Path = PathRequest
	if err := h.src.Request(dump, int(n)); err != nil {
		return fmt.Errorf("request %d pages at %#x for pid %d: %w", n, dump, m.pid, err)
	}
	p.rec.Requested = h.now()
	h.mu.Lock()
	h.stats.Requests++
	h.mu.Unlock()
	return nil
}

// zero answers a fault on a page with no data with a zero page.
func (h *Handler) zero(m *member, addr uint64, p *pending) error {
	p.rec.Path = PathZero
	_, err := m.fd.ZeroPage(addr, PageSize, 0)
	switch {
	case err == nil:
		h.mu.Lock()
		h.stats.Pages.Zero++
		h.mu.Unlock()
	case errors.Is(err, ErrExist):
		if err := h.wake(m, addr); err != nil {
			return fmt.Errorf("serve fault at %#x of pid %d: %w", addr, m.pid, err)
		}
		p.rec.Path = PathPresent
	case errors.Is(err, ErrAgain):
		h.retries = append(h.retries, retryOp{m: m, cur: addr, p: p})
		return nil
	case errors.Is(err, ErrGone):
		h.removeMember(m)
		return nil
	default:
		// The range is no longer registered (it was unmapped): the thread
		// refaults and gets what the kernel gives it. If it cannot even be
		// woken it would sleep for good: that is an error of the handler.
		h.log.Warn().Err(err).Int("pid", m.pid).Uint64("addr", addr).Msg("zero page")
		if werr := h.wake(m, addr); werr != nil {
			return fmt.Errorf("serve fault at %#x of pid %d: %w (after %w)", addr, m.pid, werr, err)
		}
		p.rec.Path = PathAborted
	}
	h.finishFault(p, h.now())
	return nil
}

// wake wakes the threads waiting on the page at addr in m. A process that
// is gone is removed (not an error); any other failure is returned: the
// thread would otherwise sleep for good.
func (h *Handler) wake(m *member, addr uint64) error {
	err := m.fd.Wake(addr, PageSize)
	if errors.Is(err, ErrGone) {
		h.removeMember(m)
		return nil
	}
	return err
}

func (h *Handler) finishFault(p *pending, now time.Duration) {
	p.rec.Done = now
	h.mu.Lock()
	h.stats.FaultsBy[p.rec.Path]++
	if p.rec.Path != PathAborted {
		h.lat = append(h.lat, p.rec.Latency())
	}
	if h.cfg.Trace {
		h.trace.Faults = append(h.trace.Faults, p.rec)
	}
	h.mu.Unlock()
}

// install copies arriving page data into every member that needs it (or
// maps zero pages for a run the source read as zeros).
func (h *Handler) install(d PageData) error {
	if d.Release != nil {
		defer d.Release()
	}
	if d.Absent > 0 {
		return h.absent(d)
	}
	size := uint64(len(d.Data))
	if d.Zero > 0 {
		size = uint64(d.Zero) * PageSize
	}
	if d.Addr%PageSize != 0 || len(d.Data)%PageSize != 0 || d.Zero < 0 || (d.Zero > 0 && d.Data != nil) {
		h.log.Warn().Uint64("addr", d.Addr).Int("len", len(d.Data)).Int("zero", d.Zero).Msg("page source sent unaligned data, ignored")
		return nil
	}
	replied := h.now()
	var err error
	h.idx.Each(d.Addr, d.Addr+size, func(i0, n, dump uint64) {
		if err != nil {
			return
		}
		h.inflight.ClearRange(i0, n)
		var data []byte // nil: zero pages
		if d.Zero == 0 {
			data = d.Data[dump-d.Addr : dump-d.Addr+n*PageSize]
		}
		needed := false
		err = h.account(i0, n, d.Pushed, func() error {
			for _, m := range slices.Clone(h.members) {
				if e := h.installMember(m, dump, i0, n, data, d.Pushed, replied, &needed); e != nil {
					return e
				}
			}
			return nil
		})
		if err != nil {
			return
		}
		if !needed {
			h.mu.Lock()
			h.stats.Duplicates += n
			h.mu.Unlock()
		}
		h.ackDone(i0, n)
	})
	h.sample()
	return err
}

// absent marks the pages of d (PageData.Absent) that a member still needs
// as needed no more (dropped): the source never had them. A fault there
// then gets a zero page (fault). Pages in flight or with a fault waiting
// are left to their answer, which is zeros.
func (h *Handler) absent(d PageData) error {
	if d.Addr%PageSize != 0 || d.Data != nil || d.Zero != 0 || d.Absent > (^uint64(0)-d.Addr)/PageSize {
		h.log.Warn().Uint64("addr", d.Addr).Uint64("absent", d.Absent).Msg("page source sent a bad absent run, ignored")
		return nil
	}
	var marked uint64
	h.idx.Each(d.Addr, d.Addr+d.Absent*PageSize, func(i0, n, _ uint64) {
		for i := i0; i < i0+n; i++ {
			if h.inflight.Get(i) {
				continue
			}
			for _, m := range h.members {
				if m.needs(i) && !m.waiters.Waiting(i) {
					m.dropped.Set(i)
					m.needed--
					marked++
				}
			}
		}
		h.ackDone(i0, n)
	})
	h.mu.Lock()
	h.stats.Pages.Absent += marked
	h.mu.Unlock()
	return nil
}

// installMember installs pages [i0, i0+n) at dump address dump into m
// where m needs them: data, or zero pages if data is nil.
func (h *Handler) installMember(m *member, dump, i0, n uint64, data []byte, pushed bool, replied time.Duration, needed *bool) error {
	if m.gone {
		return nil
	}
	var err error
	m.tr.ByDump(dump, dump+n*PageSize, func(cur, d, ln uint64) {
		j0 := i0 + (d-dump)/PageSize
		cnt := ln / PageSize
		for k := uint64(0); k < cnt && err == nil && !m.gone; {
			if !m.needs(j0 + k) {
				k++
				continue
			}
			e := k
			for e < cnt && m.needs(j0+e) {
				e++
			}
			*needed = true
			var buf []byte
			if data != nil {
				off := (d - dump) + k*PageSize
				buf = data[off : off+(e-k)*PageSize]
			}
			err = h.copyRun(m, cur+k*PageSize, j0+k, e-k, buf, pushed, replied)
			k = e
		}
	})
	return err
}

// copyRun copies buf (npages pages) to cur, or maps npages zero pages
// there if buf is nil (the source read them as zeros: UFFDIO_ZEROPAGE,
// ioctl_userfaultfd(2)); pages j, j+1, ... are all needed by m.
func (h *Handler) copyRun(m *member, cur, j, npages uint64, buf []byte, pushed bool, replied time.Duration) error {
	mode := DontWake
	if m.waiters.AnyIn(j, npages) {
		mode = 0
	}
	kind := howCopied
	if buf == nil {
		kind = howZeroed
	}
	size := int(npages * PageSize)
	off := 0
	for off < size {
		var nb int
		var err error
		if buf == nil {
			nb, err = m.fd.ZeroPage(cur+uint64(off), uint64(size-off), mode)
		} else {
			nb, err = m.fd.Copy(cur+uint64(off), buf[off:], mode)
		}
		if nb > 0 {
			h.installed(m, j+uint64(off)/PageSize, uint64(nb)/PageSize, pushed, replied, kind)
			off += nb
		}
		if err == nil {
			if nb == 0 {
				break
			}
			continue
		}
		switch {
		case errors.Is(err, ErrExist):
			// Filled by another path: it is there, wake its waiters; never
			// retry the copy.
			pg := j + uint64(off)/PageSize
			hadWaiters := m.waiters.Waiting(pg)
			if hadWaiters {
				if werr := h.wake(m, cur+uint64(off)); werr != nil {
					return fmt.Errorf("install page %#x into pid %d: %w", cur+uint64(off), m.pid, werr)
				}
			}
			h.mu.Lock()
			h.stats.ExistWakes++
			h.mu.Unlock()
			h.markInstalled(m, pg, pushed, replied, howExisted)
			off += PageSize
		case errors.Is(err, ErrAgain), errors.Is(err, unix.ENOENT) && time.Since(h.noVMASince()) < noVMAPatience:
			// ENOENT: no registered VMA at the address. mfill_atomic
			// (mm/userfaultfd.c) looks the VMA up before it checks
			// mmap_changing, so a copy to a range an mremap(2) just
			// moved fails ENOENT, not EAGAIN, until the REMAP event is
			// read and the translation follows it (QA7's fork+mremap
			// test, on main: 'UFFDIO_COPY: no such file or directory'
			// and the process killed). Retried as EAGAIN, after the
			// events, from the dump address; a range really unmapped
			// is no longer needed then. A copy that keeps failing so
			// fails after noVMAPatience.
			pg := j + uint64(off)/PageSize
			h.inflight.SetRange(pg, j+npages-pg)
			op := retryOp{m: m, dump: h.idx.Addr(pg), pushed: pushed}
			if errors.Is(err, unix.ENOENT) {
				op.noVMASince = h.noVMASince()
			}
			if buf == nil {
				op.zeros = j + npages - pg
			} else {
				// Copy: the source may reuse buf once install returns (Release).
				op.data = bytes.Clone(buf[off:])
			}
			h.retries = append(h.retries, op)
			return nil
		case errors.Is(err, ErrGone):
			h.removeMember(m)
			return nil
		default:
			return fmt.Errorf("install %d pages at %#x into pid %d: %w", (size-off)/int(PageSize), cur+uint64(off), m.pid, err)
		}
	}
	return nil
}

// account runs install (which copies pages [i0, i0+n) into members) and
// counts each page that arrived in at least one member once, by path: push,
// fault (some member waited on it) or fault-around.
func (h *Handler) account(i0, n uint64, pushed bool, install func() error) error {
	waited := make([]bool, n)
	for _, m := range h.members {
		if m.waiters.Pages() == 0 {
			continue
		}
		for k := range n {
			if m.waiters.Waiting(i0 + k) {
				waited[k] = true
			}
		}
	}
	h.arrBase, h.arrGot, h.arrZero = i0, make([]bool, n), make([]bool, n)
	err := install()
	var push, fault, around, zero uint64
	for k, got := range h.arrGot {
		if !got || h.counted.Get(i0+uint64(k)) {
			continue
		}
		h.counted.Set(i0 + uint64(k))
		switch {
		case pushed:
			push++
		case waited[k]:
			fault++
		default:
			around++
		}
		if h.arrZero[k] {
			zero++
		}
	}
	h.arrGot, h.arrZero = nil, nil
	h.mu.Lock()
	h.stats.Pages.Push += push
	h.stats.Pages.Fault += fault
	h.stats.Pages.FaultAround += around
	h.stats.Pages.SourceZero += zero
	h.mu.Unlock()
	return err
}

// installed records that pages [j, j+n) of m were copied (or zeroed) in.
func (h *Handler) installed(m *member, j, n uint64, pushed bool, replied time.Duration, kind how) {
	for k := j; k < j+n; k++ {
		h.markInstalled(m, k, pushed, replied, kind)
	}
}

func (h *Handler) markInstalled(m *member, i uint64, pushed bool, replied time.Duration, kind how) {
	if !m.needs(i) {
		return
	}
	m.installed.Set(i)
	m.needed--
	ws := m.waiters.Take(i)
	now := h.now()
	bytes := 0
	h.mu.Lock()
	switch kind {
	case howCopied:
		bytes = PageSize
		h.stats.Bytes += PageSize
	}
	h.mu.Unlock()
	if kind != howExisted && i >= h.arrBase && i-h.arrBase < uint64(len(h.arrGot)) {
		h.arrGot[i-h.arrBase] = true
		h.arrZero[i-h.arrBase] = kind == howZeroed
	}
	if len(ws) == 0 {
		return
	}
	for _, p := range ws {
		switch {
		case pushed:
			p.rec.Path = PathPush
		case p.requested:
			p.rec.Path = PathRequest
		default:
			p.rec.Path = PathFaultAround
		}
		p.rec.Replied = replied
		p.rec.Bytes = bytes
		h.finishFault(p, now)
	}
}

// ackDone acks the pages of [i0, i0+n) no member needs any more.
func (h *Handler) ackDone(i0, n uint64) {
	start, cnt, end := uint64(0), uint64(0), uint64(0) // end: start's run's end
	flush := func() {
		if cnt > 0 {
			h.src.Ack(h.idx.Addr(start), int(cnt))
			h.done.Add(cnt)
		}
		cnt = 0
	}
	for i := i0; i < i0+n; i++ {
		doneAll := !h.acked.Get(i) && !h.inflight.Get(i)
		for _, m := range h.members {
			if !doneAll {
				break // acked pages are the bulk at the end: skip the members
			}
			if m.needs(i) {
				doneAll = false
			}
		}
		if !doneAll {
			flush()
			continue
		}
		h.acked.Set(i)
		if cnt > 0 && start+cnt == i && i < end {
			cnt++
			continue
		}
		flush()
		start, cnt, end = i, 1, h.idx.RunEnd(i)
	}
	flush()
}

// sample adds a point to the pages-installed counter track.
func (h *Handler) sample() {
	if !h.cfg.Trace {
		return
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	s := CounterSample{At: now, Pages: h.stats.Pages.Fault + h.stats.Pages.FaultAround + h.stats.Pages.Push}
	if k := len(h.trace.Installed); k > 0 && now-h.trace.Installed[k-1].At < 100*time.Microsecond {
		h.trace.Installed[k-1].Pages = s.Pages
		return
	}
	h.trace.Installed = append(h.trace.Installed, s)
}

// drop marks the lazy pages of current range [a, b) dropped (madvise
// DONTNEED/REMOVE, munmap): they must never be filled with source data. A
// fault waiting there gets a zero page (removed) or is woken (unmapped).
// The first failure to answer a waiting fault is returned, after the
// bookkeeping is complete.
func (h *Handler) drop(m *member, a, b uint64, removed bool) error {
	a &^= PageSize - 1
	var ackRuns [][2]uint64
	var err error
	m.tr.ByCur(a, b, func(cur, dump, n uint64) {
		h.idx.Each(dump, dump+n, func(i0, cnt, d uint64) {
			for i := i0; i < i0+cnt; i++ {
				if m.needs(i) {
					m.needed--
					h.mu.Lock()
					h.stats.RemovedLazy++
					h.mu.Unlock()
				}
				m.installed.Clear(i)
				m.dropped.Set(i)
				if ws := m.waiters.Take(i); len(ws) > 0 {
					at := cur + (d - dump) + (i-i0)*PageSize
					for _, p := range ws {
						if removed {
							if e := h.zero(m, at, p); e != nil && err == nil {
								err = e
							}
						} else {
							if e := h.wake(m, at); e != nil && err == nil {
								err = fmt.Errorf("wake fault at %#x of pid %d after munmap: %w", at, m.pid, e)
							}
							p.rec.Path = PathAborted
							h.finishFault(p, h.now())
						}
					}
				}
			}
			ackRuns = append(ackRuns, [2]uint64{i0, cnt})
		})
	})
	for _, r := range ackRuns {
		h.ackDone(r[0], r[1])
	}
	return err
}

// remap moves the translation of [From, From+Len) to To (mremap(2)).
// Threads waiting on the old addresses are woken: they refault at the old
// address, which is no longer mapped.
func (h *Handler) remap(m *member, r Remap) error {
	if r.From == r.To || r.Len == 0 {
		return nil
	}
	// Whatever was at the destination was unmapped first.
	err := h.drop(m, r.To, r.To+r.Len, false)
	m.tr.Cut(r.To, r.To+r.Len)
	m.tr.ByCur(r.From, r.From+r.Len, func(cur, dump, n uint64) {
		h.idx.Each(dump, dump+n, func(i0, cnt, d uint64) {
			for i := i0; i < i0+cnt; i++ {
				ws := m.waiters.Take(i)
				if len(ws) == 0 {
					continue
				}
				old := cur + (d - dump) + (i-i0)*PageSize
				if e := h.wake(m, old); e != nil && err == nil {
					err = fmt.Errorf("wake fault at %#x of pid %d after mremap: %w", old, m.pid, e)
				}
				for _, p := range ws {
					p.rec.Path = PathAborted
					h.finishFault(p, h.now())
				}
			}
		})
	})
	m.tr.Move(r.From, r.To, r.Len)
	return err
}

// adoptFork takes the uffd of a forked child (a FORK event's fd). A test
// replaces it to make adoption fail.
var adoptFork = FromFd

// fork adds the child of m, served through ufd, with a copy of m's state.
// If the uffd cannot be adopted the child can never be served: its pages
// still needed are poisoned through the raw fd (or, without
// UFFDIO_POISON, the child is killed) before the fd is closed, so they
// never read as zeros.
func (h *Handler) fork(m *member, ufd int) error {
	c := &member{tr: m.tr.Clone(), installed: slices.Clone(m.installed), parent: m.pid, pidfd: -1, space: m.space,
		dropped: slices.Clone(m.dropped), needed: m.needed, canPoison: m.canPoison}
	// A second fd, kept until the child is served or poisoned.
	raw, err := unix.FcntlInt(uintptr(ufd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		raw = -1
	}
	fd, err := adoptFork(ufd) // owns ufd, also on error
	if err != nil {
		h.log.Error().Err(err).Int("parent", m.pid).Uint64("needed", c.needed).
			Msg("cannot adopt the uffd of a forked child: poisoning its lazy pages")
		if raw < 0 {
			h.killChild(c, unix.SIGKILL)
			return nil
		}
		c.fd = &FD{fd: raw, wake: -1, num: raw}
		h.members = append(h.members, c)
		h.poisonMember(c)
		h.removeMember(c)
		return nil
	}
	if raw >= 0 {
		unix.Close(raw)
	}
	c.fd = fd
	h.members = append(h.members, c)
	h.everyone = append(h.everyone, c)
	if h.cfg.OnFork != nil {
		if err := h.cfg.OnFork(fd.Fd()); err != nil {
			h.log.Warn().Err(err).Int("parent", m.pid).Msg("hand the forked child's uffd over")
		}
	}
	for _, r := range slices.Clone(h.retries) {
		if r.m == m && (r.data != nil || r.zeros > 0) {
			r.m = c
			h.retries = append(h.retries, r)
		}
	}
	h.log.Debug().Int("pid", m.pid).Int("uffd", fd.Fd()).Uint64("needed", c.needed).Msg("process forked: serving the child's uffd")
	return nil
}

// onlyCandidate reports whether pid can only be forked child m: a live
// child of m's parent that is no member, while m is the only member of
// that parent without a pid.
func (h *Handler) onlyCandidate(m *member, pid int) bool {
	for _, o := range h.members {
		if o != m && o.pid == 0 && o.parent == m.parent {
			return false
		}
	}
	return slices.Contains(h.unknownChildren(m.parent), pid)
}

// learnPID records pid as forked child m's pid: its exit is then noticed
// through a pidfd, and OnChildPID is told.
func (h *Handler) learnPID(m *member, pid int) {
	if m.pid != 0 || pid <= 0 {
		return
	}
	m.pid = pid
	if m.pidfd < 0 {
		if pfd, err := unix.PidfdOpen(pid, 0); err == nil {
			m.pidfd = pfd
		}
	}
	h.log.Debug().Int("pid", pid).Int("parent", m.parent).Msg("forked child's pid learnt")
	if h.cfg.OnChildPID != nil {
		if err := h.cfg.OnChildPID(m.fd.Fd(), pid); err != nil {
			h.log.Warn().Err(err).Int("pid", pid).Msg("hand the forked child's pid over")
		}
	}
}

// resolveChildren looks up the pid of forked children whose pid is not
// known yet, while their parent still has them as children (once it
// exited they are re-parented and no longer found there): a child is
// named when it is its parent's only live child not accounted for and the
// only member of that parent without a pid (the FORK event comes before
// the child has a pid, see dup_mmap in the kernel).
func (h *Handler) resolveChildren() {
	if !slices.ContainsFunc(h.members, func(m *member) bool { return m.pid == 0 && m.parent > 0 }) {
		return // the usual case: nothing to look up, nothing allocated
	}
	unknown := map[int]int{} // parent → members without a pid
	for _, m := range h.members {
		if m.pid == 0 && m.parent > 0 {
			unknown[m.parent]++
		}
	}
	for _, m := range slices.Clone(h.members) {
		if m.pid != 0 || m.parent <= 0 || unknown[m.parent] != 1 {
			continue
		}
		var live []int
		for _, c := range h.unknownChildren(m.parent) {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c)); err == nil {
				if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] != 'Z' && st[i+2] != 'X' {
					live = append(live, c)
				}
			}
		}
		if len(live) == 1 {
			h.learnPID(m, live[0])
		}
	}
}

func (m *member) closePidfd() {
	if m.pidfd >= 0 {
		unix.Close(m.pidfd)
		m.pidfd = -1
	}
}

// removeMember drops a member whose process is gone.
func (h *Handler) removeMember(m *member) {
	if m.gone {
		return
	}
	m.gone = true
	if m == h.primary {
		h.lostGone = m.needed
	}
	h.log.Debug().Int("pid", m.pid).Uint64("needed", m.needed).Msg("process gone: no longer served")
	m.waiters = lazypages.Waiters[*pending]{} // nobody to answer: the process is gone
	h.members = slices.DeleteFunc(h.members, func(x *member) bool { return x == m })
	m.fd.Close()
	m.closePidfd()
	h.ackDone(0, h.total)
}

// noVMASince is when the copy being retried first found no VMA (ENOENT),
// or now for a first failure.
func (h *Handler) noVMASince() time.Time {
	if h.retrying != nil && !h.retrying.noVMASince.IsZero() {
		return h.retrying.noVMASince
	}
	return time.Now()
}

func (h *Handler) runRetries() error {
	ops := h.retries
	h.retries = nil
	h.mu.Lock()
	h.stats.Retries += uint64(len(ops))
	h.mu.Unlock()
	defer func() { h.retrying = nil }()
	for _, op := range ops {
		if op.m.gone {
			continue
		}
		h.retrying = &op
		if op.data == nil && op.zeros == 0 {
			if err := h.zero(op.m, op.cur, op.p); err != nil {
				return err
			}
			continue
		}
		needed := false
		i0, _ := h.idx.Lookup(op.dump)
		n := uint64(len(op.data))/PageSize + op.zeros
		h.inflight.ClearRange(i0, n)
		if err := h.account(i0, n, op.pushed, func() error {
			return h.installMember(op.m, op.dump, i0, n, op.data, op.pushed, h.now(), &needed)
		}); err != nil {
			return err
		}
		h.ackDone(i0, n)
	}
	return nil
}

// finish poisons what is left when cause is not nil, and closes the uffds.
func (h *Handler) finish(cause error) error {
	var lost uint64
	if cause != nil && !errors.Is(cause, ErrGone) && !errors.Is(cause, ErrExited) {
		lost = h.poisonAll()
	}
	if h.cfg.BeforeClose != nil {
		h.cfg.BeforeClose()
		h.cfg.BeforeClose = nil
	}
	for _, m := range h.members {
		m.gone = true
		m.fd.Close()
		m.closePidfd()
	}
	h.members = nil
	if cause == nil {
		return nil
	}
	if errors.Is(cause, ErrGone) || errors.Is(cause, ErrExited) {
		return cause
	}
	return fmt.Errorf("serve lazy pages of pid %d: %d lazy %w: %w", h.cfg.PID, lost, ErrPagesLost, cause)
}

// unneeded counts the lazy pages installed in no member ever served.
func (h *Handler) unneeded() uint64 {
	var got uint64
	for w := range h.acked {
		var word uint64
		for _, m := range h.everyone {
			word |= m.installed[w]
		}
		got += uint64(bits.OnesCount64(word))
	}
	return h.total - min(got, h.total)
}

// poisonAll poisons every page some member still needs and returns how
// many pages (counted once per member) were lost.
func (h *Handler) poisonAll() uint64 {
	var lost uint64
	// Index loop: an event handled while poisoning may add a forked child.
	for mi := 0; mi < len(h.members); mi++ {
		lost += h.poisonMember(h.members[mi])
	}
	h.mu.Lock()
	h.stats.Lost += lost
	h.mu.Unlock()
	return lost
}

// poisonMember poisons every page m still needs, or kills it with SIGBUS
// when poisoning is not possible, and returns how many pages it needed.
func (h *Handler) poisonMember(m *member) uint64 {
	lost := m.needed
	{
		var poisoned uint64
		// A pass stops when an event changed the layout; poisoned pages
		// are marked dropped, so the next pass only does what is left.
		for pass := 0; pass < 8 && m.needed > 0 && !m.gone && m.canPoison; pass++ {
			changed := false
			m.tr.ByCur(0, ^uint64(0), func(cur, dump, n uint64) {
				h.idx.Each(dump, dump+n, func(i0, cnt, d uint64) {
					for k := uint64(0); k < cnt && !m.gone && !changed; {
						if !m.needs(i0 + k) {
							k++
							continue
						}
						e := k
						for e < cnt && m.needs(i0+e) {
							e++
						}
						done, ch := h.poison(m, cur+(d-dump)+k*PageSize, i0+k, e-k)
						poisoned += done
						changed = ch
						k = e
					}
				})
			})
			if !changed {
				break
			}
		}
		if m.needed > 0 && !m.gone {
			h.log.Error().Int("pid", m.pid).Uint64("pages", m.needed).Msg("cannot poison lost pages: killing the process with SIGBUS")
			h.killChild(m, unix.SIGBUS)
		}
		if poisoned > 0 {
			h.killed = true // its end is the handler's doing, not its own
		}
		h.mu.Lock()
		h.stats.Poisoned += poisoned
		h.mu.Unlock()
		for _, p := range m.waiters.TakeAll() {
			p.rec.Path = PathAborted
			h.finishFault(p, h.now())
		}
	}
	return lost
}

// killChild sends sig to m's process. A forked child whose pid is not
// known yet is looked up among its parent's children that are not members
// with a known pid; if that is ambiguous, each candidate gets sig (each is
// a fork of the restored process sharing its lazy memory: better dead
// than running on zeros).
func (h *Handler) killChild(m *member, sig unix.Signal) {
	pids := []int{m.pid}
	if m.pid == 0 {
		pids = h.unknownChildren(m.parent)
		if len(pids) == 1 {
			m.pid = pids[0]
		}
	}
	if len(pids) == 0 {
		h.log.Error().Int("parent", m.parent).Msg("forked child with lost pages not found: it may read zeros")
		return
	}
	h.killed = true
	for _, pid := range pids {
		if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			h.log.Error().Err(err).Int("pid", pid).Stringer("signal", sig).Msg("kill a process with lost pages")
		}
	}
}

// unknownChildren lists the children of parent (from
// /proc/PARENT/task/*/children, see proc(5)) that are not members with a
// known pid.
func (h *Handler) unknownChildren(parent int) []int {
	if parent <= 0 {
		return nil
	}
	known := map[int]bool{}
	for _, m := range h.members {
		known[m.pid] = true
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", parent))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", parent, t.Name()))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !known[pid] {
				out = append(out, pid)
			}
		}
	}
	return out
}

// poison poisons cnt pages at at (lazy pages i, i+1, ...) of m with
// UFFDIO_POISON, which also wakes the threads waiting there: they refault
// and get SIGBUS. It returns the pages poisoned and whether a
// non-cooperative event was handled meanwhile (the layout may have changed).
func (h *Handler) poison(m *member, at, i, cnt uint64) (uint64, bool) {
	var done uint64
	for k := uint64(0); k < cnt; {
		n, err := m.fd.Poison(at+k*PageSize, (cnt-k)*PageSize, 0)
		np := uint64(max(n, 0)) / PageSize
		for j := k; j < k+np; j++ {
			if m.needs(i + j) {
				m.needed--
			}
			m.dropped.Set(i + j) // never to be filled
		}
		k += np
		done += np
		switch {
		case err == nil:
			if np == 0 {
				return done, false
			}
		case errors.Is(err, ErrExist):
			if m.needs(i + k) { // filled by someone else: keep it
				m.installed.Set(i + k)
				m.needed--
			}
			k++
		case errors.Is(err, ErrAgain):
			// A non-cooperative event is pending: handle the events (a
			// fork adds a member, poisoned in its turn). Faults are left:
			// poisoning wakes those on lazy pages, closing the uffd those
			// on other pages (which then read zeros, as they should).
			var buf [maxRead]Msg
			msgs, rerr := m.fd.ReadMsgs(buf[:])
			if rerr != nil {
				h.log.Warn().Err(rerr).Int("pid", m.pid).Msg("poison lazy pages: read events")
				m.canPoison = false
				return done, false
			}
			for _, msg := range msgs {
				if msg.Event != EventPageFault {
					if herr := h.handle(m, msg, h.now()); herr != nil {
						h.log.Warn().Err(herr).Int("pid", m.pid).Stringer("event", msg.Event).Msg("poison lazy pages: handle event")
					}
				}
			}
			return done, true
		case errors.Is(err, ErrGone):
			m.gone = true
			return done, false
		default:
			h.log.Warn().Err(err).Int("pid", m.pid).Msg("poison lazy pages")
			m.canPoison = false
			return done, false
		}
	}
	return done, false
}
