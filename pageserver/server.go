package pageserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/internal/schedslice"
	"github.com/lazycr/lazycr/lazypages"
	"github.com/lazycr/lazycr/uffd"
)

// Memory reads the frozen process's memory at dump-time addresses, e.g.
// with process_vm_readv(2). ReadAt fills all of b or returns an error.
type Memory interface {
	ReadAt(b []byte, addr uint64) error
}

// FileStream is an image file read as it is sent, never held whole (a
// lazy skeleton's pages file, read from the frozen process).
type FileStream interface {
	Size() uint64
	// ReadAt fills all of b from offset off of the file or returns an
	// error.
	ReadAt(b []byte, off uint64) error
}

// ServerConfig configures a page server.
type ServerConfig struct {
	Files map[string][]byte // the image set, served by GET_IMAGES
	// Streams are more files of the image set, read as they are sent;
	// their names must differ from Files'.
	Streams map[string]FileStream
	// Lazy are the lazy page runs, disjoint, keyed by process
	// (uffd.SpaceAddr: space k is Pids[k]).
	Lazy []uffd.Run
	// Pids are the processes served, pids in the image, ascending; nil
	// means one process, named pid 0 on the wire.
	Pids []uint32
	// Memory reads the frozen processes at keyed addresses.
	Memory Memory
	// Token, if set, is a shared secret a client must present in HELLO.
	Token []byte
	// TLS, if set, wraps every connection (see ServerTLS).
	TLS *tls.Config
	// ReconnectTimeout is how long a session that resumed waits for its
	// target to reconnect. Zero means do not wait.
	ReconnectTimeout time.Duration
	// HandshakeTimeout bounds TLS and HELLO on a new connection (default 10s).
	HandshakeTimeout time.Duration
	// Session is the session id WELCOME announces; zero picks a random one
	// (see NewSessionID). Set it to name the session before serving, so it
	// can be printed for a later Adopted server.
	Session uint64
	// Adopted continues a session whose target resumed the process under an
	// earlier server (one that died or gave up): only reconnects of Session
	// are accepted, pages are pushed at once, and Serve gives up if none
	// comes within ReconnectTimeout. Nothing is acknowledged yet, so pages
	// the target already has may be sent again (it ignores them).
	Adopted bool
	// BeforeImages, if set, runs once, when the target first asks for the
	// image set and before it is sent: the source's last step before the
	// target builds the process (migrate releases the frozen process's
	// POSIX locks there, for the target to take). Its error goes to the
	// target as ERROR and ends Serve.
	BeforeImages func() error
	// Absent, if set, lists keyed runs inside Lazy that the source never
	// had: the frozen process never populated them, they read as zeros
	// (see TypeAbsent). A lazy VMA may then be announced whole, unscanned:
	// Absent is called once, on a goroutine of its own, when the target
	// first says RESUMED (at once for an Adopted session), so its scan
	// costs the freeze nothing. Until it returns the push waits (requests
	// are answered); its runs are never pushed and go to the target in
	// ABSENT frames. If it fails, the error is logged and every page is
	// pushed (read, and sent as ZERO where it holds zeros).
	Absent func() ([]uffd.Run, error)
	Log    zerolog.Logger
}

// Result is what a Serve call did.
type Result struct {
	// Pages answered, and the page bytes sent for them (pages that read as
	// zeros are sent as ZERO frames, without their bytes).
	RequestPages, RequestBytes uint64 // in answer to requests
	PushPages, PushBytes       uint64 // by the background push
	ZeroPages                  uint64 // of those pages, sent as ZERO: they read as all zero bytes
	AbsentPages                uint64 // lazy pages the source never had (ServerConfig.Absent): never sent
	Requests                   uint64 // requests answered
	Refused                    uint64 // requests refused (outside the lazy runs)
	AckedPages                 uint64 // lazy pages the target acknowledged
	Reconnects                 int
	Duration                   time.Duration
	Done                       bool // the target sent DONE (or EXITED)
	// Exited is the target's EXITED text: the process exited there
	// before all its lazy pages were needed ("" after a plain DONE).
	Exited string
	// ResumedAt is when the target's first RESUMED arrived (zero if none
	// did, and for an adopted session); DoneAt when its DONE did.
	ResumedAt, DoneAt time.Time
}

// Server serves one migration: the image files, then the lazy pages to one
// target session. Create it with NewServer; Serve runs once.
type Server struct {
	cfg ServerConfig
	log zerolog.Logger

	// mu guards everything below and the connState of the active connection.
	mu      sync.Mutex
	idx     *lazyIndex
	acked   lazypages.Bitmap // pages the target acknowledged: never sent again
	resumed bool             // the target said RESUMED
	cursor  uint64           // global index the push continues from
	res     Result
	// absent: the pages ServerConfig.Absent named, once absentState is
	// absentKnown (as runs for ABSENT, and as global indexes).
	absentState int
	absent      []uffd.Run
	absentBits  lazypages.Bitmap
	live        *connState // the connection being served, if any
	scans       sync.WaitGroup
}

// absentState values.
const (
	absentNone     = iota // ServerConfig.Absent not called yet
	absentScanning        // it runs: the push waits
	absentKnown           // done (or failed, or not configured)
)

// NewServer returns a server for cfg; the configuration is checked by Serve.
func NewServer(cfg ServerConfig) *Server {
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	return &Server{cfg: cfg, log: cfg.Log}
}

// peer is a connection that passed the handshake.
type peer struct {
	w       *wire
	hello   *Hello
	replies bool // HELLO_REPLIES: the replies connection of a served session
}

type connResult struct {
	done bool
	err  error
}

// Serve accepts targets on l and serves the session until the target sends
// DONE. It closes l before returning.
//
// Before the target said RESUMED, a lost connection ends Serve with an error
// wrapping ErrLostBeforeResume, and FAIL with ErrRestoreFailed: the caller
// releases the frozen process. After RESUMED, Serve waits up to
// ReconnectTimeout for the same session to reconnect, then returns
// ErrGaveUp: the caller keeps the frozen process (the target may still come
// back to an Adopted server).
// Clients with a wrong token, version or session get an ERROR frame and
// nothing else, without disturbing the session.
func (s *Server) Serve(ctx context.Context, l net.Listener) (Result, error) {
	start := time.Now()
	idx, err := s.init()
	if err != nil {
		Refuse(l, s.cfg, err.Error(), RefuseWait)
		return Result{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	hellos := make(chan peer)
	defer func() {
		cancel()
		l.Close()
		wg.Wait()
		s.scans.Wait()
	}()
	wg.Go(func() { s.acceptLoop(ctx, l, hellos, &wg) })
	if s.cfg.Adopted {
		s.mu.Lock()
		s.startAbsent(idx)
		s.mu.Unlock()
	}

	var (
		session  uint64
		active   bool
		results  = make(chan connResult, 1)
		giveUp   <-chan time.Time
		timer    *time.Timer
		welcomed int
	)
	result := func() Result {
		s.mu.Lock()
		defer s.mu.Unlock()
		r := s.res
		r.Duration = time.Since(start)
		return r
	}
	refuse := func(p peer, msg string) {
		s.log.Warn().Str("peer", p.w.conn.RemoteAddr().String()).Msg("refuse target: " + msg)
		wg.Go(func() { refusePeer(p.w, msg) })
	}
	var activeConn, waiting *peer
	// attach hands the active connection its replies connection, once
	// (attachOpen until then).
	var attach chan *wire
	attachOpen := false
	accept := func(p peer) {
		if session == 0 {
			session = s.cfg.Session
			if session == 0 {
				session = NewSessionID()
			}
		}
		if timer != nil {
			timer.Stop()
			timer, giveUp = nil, nil
		}
		welcomed++
		if welcomed > 1 || s.cfg.Adopted {
			s.mu.Lock()
			s.res.Reconnects++
			s.mu.Unlock()
		}
		active, activeConn = true, &p
		s.log.Info().Str("peer", p.w.conn.RemoteAddr().String()).Uint64("session", session).Int("connection", welcomed).Msg("target connected")
		att := make(chan *wire, 1)
		attach, attachOpen = att, true
		wg.Go(func() { results <- s.runConn(ctx, p, session, idx, att) })
	}
	defer func() {
		if waiting != nil {
			waiting.w.conn.Close()
		}
		select {
		case rw := <-attach: // its connection ended before taking it
			rw.conn.Close()
		default:
		}
	}()
	if s.cfg.Adopted {
		session = s.cfg.Session
		timer = time.NewTimer(s.cfg.ReconnectTimeout)
		giveUp = timer.C
		s.log.Info().Uint64("session", session).Dur("timeout", s.cfg.ReconnectTimeout).Msg("adopted session: waiting for its target to reconnect")
	}
	for {
		select {
		case p := <-hellos:
			if p.replies {
				// The replies connection of the connection being served
				// (one per connection); anything else is refused.
				if !active || session == 0 || p.hello.Session != session || !attachOpen {
					refuse(p, "no connection of this session is served: a replies connection comes after HELLO")
					continue
				}
				attach <- p.w
				attachOpen = false
				continue
			}
			switch {
			case active && session != 0 && p.hello.Session == session:
				// The target reconnected before this side noticed the old
				// connection died: drop the old one, take the new one
				// when it is gone.
				if waiting != nil {
					refuse(*waiting, "superseded by a newer connection of the session")
				}
				waiting = &p
				activeConn.w.conn.Close()
				continue
			case active:
				refuse(p, "another target is being served")
				continue
			case session == 0 && p.hello.Session != 0:
				refuse(p, fmt.Sprintf("unknown session %#x", p.hello.Session))
				continue
			case session != 0 && p.hello.Session != session:
				refuse(p, fmt.Sprintf("session %#x is not the one waiting for its target", p.hello.Session))
				continue
			}
			accept(p)
		case r := <-results:
			select {
			case rw := <-attach: // came too late for its connection
				rw.conn.Close()
			default:
			}
			active, activeConn, attach, attachOpen = false, nil, nil, false
			if r.done {
				return result(), nil
			}
			s.mu.Lock()
			resumed := s.resumed
			s.mu.Unlock()
			if errors.Is(r.err, ErrRestoreFailed) || errors.Is(r.err, ErrTargetAborted) || !resumed || ctx.Err() != nil {
				if ctx.Err() != nil {
					r.err = ctx.Err()
				} else if !errors.Is(r.err, ErrRestoreFailed) && !errors.Is(r.err, ErrTargetAborted) {
					r.err = fmt.Errorf("%w: %w", ErrLostBeforeResume, r.err)
				}
				return result(), fmt.Errorf("serve session %#x: %w", session, r.err)
			}
			if errors.Is(r.err, ErrMemoryGone) {
				// Every reconnect would be served from the same dead
				// process: the target and this server looped, reconnecting
				// thousands of times a second, the copy waiting forever.
				return result(), fmt.Errorf("serve session %#x: %w", session, r.err)
			}
			if waiting != nil {
				p := *waiting
				waiting = nil
				s.log.Warn().Err(r.err).Msg("target connection replaced by a reconnect")
				accept(p)
				continue
			}
			s.log.Warn().Err(r.err).Dur("timeout", s.cfg.ReconnectTimeout).Msg("target connection lost after resume, waiting for it to reconnect")
			timer = time.NewTimer(s.cfg.ReconnectTimeout)
			giveUp = timer.C
		case <-giveUp:
			return result(), fmt.Errorf("serve session %#x: %w after %v", session, ErrGaveUp, s.cfg.ReconnectTimeout)
		case <-ctx.Done():
			if active {
				<-results // runConn closes its connection on ctx.Done
			}
			if session == 0 {
				return result(), fmt.Errorf("wait for a target to connect: %w", ctx.Err())
			}
			return result(), fmt.Errorf("serve session %#x: %w", session, ctx.Err())
		}
	}
}

// Resumed reports whether the target said the process runs there: from
// then on the original must never be released, whatever happens.
func (s *Server) Resumed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resumed
}

// init validates the configuration and builds the page index.
func (s *Server) init() (*lazyIndex, error) {
	if s.cfg.Memory == nil && len(s.cfg.Lazy) > 0 {
		return nil, errors.New("serve pages: no Memory to read lazy pages from")
	}
	if s.cfg.Adopted && s.cfg.Session == 0 {
		return nil, errors.New("serve an adopted session: no session id")
	}
	if err := checkImages(s.manifest().Files); err != nil {
		return nil, fmt.Errorf("serve image files: %w", err)
	}
	pids := s.cfg.Pids
	if pids == nil {
		pids = []uint32{0}
	}
	idx, err := newLazyIndex(pids, s.cfg.Lazy)
	if err != nil {
		return nil, fmt.Errorf("serve lazy runs: %w", err)
	}
	if len(idx.ranges.Runs()) > MaxRuns {
		return nil, fmt.Errorf("serve lazy runs: %d runs exceed the limit of %d", len(idx.ranges.Runs()), MaxRuns)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.idx != nil {
		return nil, errors.New("serve: this server already served")
	}
	s.idx = idx
	s.acked = lazypages.NewBitmap(idx.Pages())
	s.resumed = s.cfg.Adopted
	if s.cfg.Absent == nil {
		s.absentState = absentKnown
	}
	return idx, nil
}

// startAbsent calls ServerConfig.Absent on a goroutine of its own, the
// first time only, and wakes the connection being served when it is done.
// Called with s.mu held.
func (s *Server) startAbsent(idx *lazyIndex) {
	if s.absentState != absentNone {
		return
	}
	s.absentState = absentScanning
	s.scans.Go(func() {
		t := time.Now()
		runs, err := s.cfg.Absent()
		bits := lazypages.NewBitmap(idx.Pages())
		var pages uint64
		if err == nil {
			slices.SortFunc(runs, func(a, b uffd.Run) int { return cmp.Compare(a.Addr, b.Addr) })
			for k, r := range runs {
				if err = idx.ranges.Check(r.Addr, r.Npages); err == nil && k > 0 && r.Addr < runs[k-1].End() {
					err = fmt.Errorf("absent run at %#x overlaps the one ending %#x", r.Addr, runs[k-1].End())
				}
				if err != nil {
					break
				}
				// Inside the merged ranges, which the index's runs tile.
				idx.Each(r.Addr, r.End(), func(i0, n, _ uint64) { pages += bits.SetRange(i0, n) })
			}
		}
		s.mu.Lock()
		if err != nil {
			s.log.Warn().Err(err).Msg("find the lazy pages the source never had: every lazy page is pushed")
		} else {
			s.absent, s.absentBits = runs, bits
			s.res.AbsentPages = pages
			s.log.Debug().Int("runs", len(runs)).Uint64("pages", pages).Dur("took", time.Since(t)).Msg("lazy pages the source never had")
		}
		s.absentState = absentKnown
		live := s.live
		s.mu.Unlock()
		if live != nil {
			live.notify()
		}
	})
}

// NewSessionID returns a random non-zero session id.
func NewSessionID() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

// acceptLoop accepts connections until l is closed (or ctx ends) and hands
// those that pass the handshake to hellos. Any other Accept error (EMFILE,
// ENFILE, ENOBUFS, ECONNABORTED, …) is logged and retried with an
// exponential backoff from 5 ms to 1 s, as net/http's Server does: a
// transient shortage must not end every later reconnect. See accept(2),
// ERRORS.
func (s *Server) acceptLoop(ctx context.Context, l net.Listener, hellos chan<- peer, wg *sync.WaitGroup) {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				if ctx.Err() == nil {
					s.log.Error().Err(err).Msg("accept target: listener closed")
				}
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn().Err(err).Dur("retry_in", delay).Msg("accept target")
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		wg.Go(func() {
			p, err := s.handshake(ctx, c)
			if err != nil {
				s.log.Warn().Err(err).Str("peer", c.RemoteAddr().String()).Msg("handshake")
				return
			}
			select {
			case hellos <- p:
			case <-ctx.Done():
				p.w.conn.Close()
			}
		})
	}
}

// handshake runs TLS and reads HELLO; a wrong version or token gets an
// ERROR frame and the connection closed.
func (s *Server) handshake(ctx context.Context, c net.Conn) (peer, error) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	c.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if s.cfg.TLS != nil {
		tc := tls.Server(c, s.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return peer{}, fmt.Errorf("tls handshake with %s: %w", c.RemoteAddr(), err)
		}
		c = tc
	}
	w := newWire(c)
	h, p, err := w.readFrame()
	if err == nil && h.Type != TypeHello && h.Type != TypeHelloReplies {
		err = fmt.Errorf("%w: %s before HELLO", ErrProtocol, h.Type)
	}
	var hello *Hello
	if err == nil {
		hello, err = DecodeHello(p)
	}
	if err == nil && hello.Version != ProtocolVersion {
		err = fmt.Errorf("%w: target speaks %d, source %d", ErrVersion, hello.Version, ProtocolVersion)
	}
	if err == nil && !tokenOK(hello.Token, s.cfg.Token) {
		what := "wrong token"
		if len(hello.Token) == 0 {
			what = "no token (the source has a secret: $LAZYCR_TOKEN or --token)"
		}
		err = fmt.Errorf("%w: %s", ErrRefused, what)
	}
	if err != nil {
		refusePeer(w, err.Error())
		return peer{}, fmt.Errorf("hello from %s: %w", c.RemoteAddr(), err)
	}
	c.SetDeadline(time.Time{})
	return peer{w: w, hello: hello, replies: h.Type == TypeHelloReplies}, nil
}

// tokenOK compares in constant time (hashes first, so the length does not
// leak either).
func tokenOK(got, want []byte) bool {
	if len(want) == 0 {
		return true
	}
	a, b := sha256.Sum256(got), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// refusePeer sends one ERROR frame and closes the connection.
func refusePeer(w *wire, msg string) {
	w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	w.writeFrame(TypeError, 0, message(msg))
	w.conn.Close()
}

// connState is the per-connection state shared by its reader and writer.
// Guarded by Server.mu.
type connState struct {
	sent       lazypages.Bitmap // sent on this connection or acked
	reqs       []queuedRequest
	errs       []errFrame
	wantImages bool
	resumedOK  bool // RESUMED received, RESUMED_OK not yet sent
	pushing    bool // RESUMED_OK sent: push may run
	absentSent bool // the absent runs went out (or there are none)
	// direct: RESUMED_OK is out (or the session had resumed before this
	// connection): the reader answers requests itself, without waiting for
	// the writer and the push batch it may be sending.
	direct  bool
	credit  uint64 // pushed bytes the client can still take (CREDIT)
	done    bool
	fail    string
	abort   string // ABORT received: the target killed its copy
	readErr error
	wake    chan struct{}
}

type queuedRequest struct {
	id     uint64
	addr   uint64
	npages uint64
}

type errFrame struct {
	id  uint64
	msg string
}

func (cs *connState) notify() {
	select {
	case cs.wake <- struct{}{}:
	default:
	}
}

// runConn serves one connection until DONE, FAIL or an error, and the
// replies connection that attach may bring.
func (s *Server) runConn(ctx context.Context, p peer, session uint64, idx *lazyIndex, attach <-chan *wire) connResult {
	w := p.w
	defer w.conn.Close()
	afterDone := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(afterDone)
		// Stopped (interrupted) before the process resumed: the target
		// hears why rather than a reset connection.
		s.mu.Lock()
		resumed := s.resumed
		s.mu.Unlock()
		if !resumed {
			w.conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = w.writeFrame(TypeError, 0, message(fmt.Sprintf("the source stopped serving before the process resumed: %v", context.Cause(ctx))))
		}
		w.conn.Close()
	})
	// The hook runs on a goroutine of its own: no close of w may overtake
	// its ERROR (the target then read a bare EOF), neither the one deferred
	// above nor the one once writeLoop has returned (it returns as soon as
	// ctx is done: TestRefuseTellsTheTarget failed 10 in 200 under load).
	hookDone := sync.OnceFunc(func() {
		if !stop() {
			<-afterDone
		}
	})
	defer hookDone()
	end := make(chan struct{})
	repliesDone := make(chan struct{})
	defer func() {
		close(end)
		<-repliesDone
	}()

	s.mu.Lock()
	// A reconnected session pushes at once: it resumed already.
	cs := &connState{sent: slices.Clone(s.acked), pushing: s.resumed, direct: s.resumed, credit: PushWindow, wake: make(chan struct{}, 1)}
	s.live = cs
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.live == cs {
			s.live = nil
		}
		s.mu.Unlock()
	}()
	welcome := &Welcome{Version: ProtocolVersion, Session: session, LazyPages: idx.Pages(), LazyBytes: idx.Pages() * PageSize,
		Pids: idx.ranges.Pids(), Runs: idx.ranges.Runs()}
	if err := w.writeFrame(TypeWelcome, 0, welcome.Append(nil)); err != nil {
		close(repliesDone)
		return connResult{err: fmt.Errorf("send WELCOME: %w", err)}
	}

	go func() {
		defer close(repliesDone)
		select {
		case rw := <-attach:
			s.serveReplies(rw, cs, idx, end)
		case <-end:
		}
	}()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		s.readLoop(w, cs, idx)
	}()
	res := s.writeLoop(ctx, w, cs, idx, readerDone)
	if ctx.Err() != nil {
		hookDone()
	}
	w.conn.Close()
	<-readerDone
	return res
}

// serveReplies answers the REQUEST frames of a replies connection on it,
// whatever the session's connection is pushing, until the connection fails
// or end is closed (the session's connection ended). A request outside the
// lazy runs gets an ERROR with its id; anything but REQUEST ends it.
//
// It runs on an OS thread of its own that asks for a short scheduler slice
// (internal/schedslice) and, on plain TCP, waits for the next request in
// poll(2) on the socket rather than in Go's netpoller: a request wakes this
// thread directly and it preempts the push, instead of waiting for the
// netpoller to be looked at and for a free P. The caller's goroutine ends
// after it, still locked, and Go ends the thread with it.
func (s *Server) serveReplies(rw *wire, cs *connState, idx *lazyIndex, end <-chan struct{}) {
	runtime.LockOSThread()
	if err := schedslice.Request(schedslice.Min); err != nil {
		s.log.Debug().Err(err).Msg("replies connection keeps the default scheduler slice")
	}
	tc, _ := rw.conn.(*net.TCPConn)
	var rc syscall.RawConn
	if tc != nil {
		rc, _ = tc.SyscallConn()
	}
	stopped := make(chan struct{})
	defer func() {
		close(stopped)
		rw.conn.Close()
	}()
	go func() {
		select {
		case <-end:
			if tc != nil {
				tc.CloseRead() // wakes the poll below: Close waits for it
			}
			rw.conn.Close()
		case <-stopped:
		}
	}()
	peer := rw.conn.RemoteAddr().String()
	if err := rw.writeFrame(TypeRepliesOK, 0); err != nil {
		s.log.Warn().Err(err).Str("peer", peer).Msg("send REPLIES_OK")
		return
	}
	s.log.Debug().Str("peer", peer).Msg("replies connection open")
	var buf []byte
	for {
		if rc != nil && rw.br.Buffered() == 0 {
			if err := waitReadable(rc); err != nil {
				s.log.Debug().Err(err).Str("peer", peer).Msg("replies connection ends")
				return
			}
		}
		h, p, err := rw.readFrame()
		if err == nil && h.Type != TypeRequest {
			err = fmt.Errorf("%w: %s on the replies connection", ErrProtocol, h.Type)
		}
		var req *Request
		if err == nil {
			req, err = DecodeRequest(p)
		}
		if err != nil {
			s.log.Debug().Err(err).Str("peer", peer).Msg("replies connection ends")
			return
		}
		key, rerr := idx.ranges.Key(req.Pid, req.Addr)
		if rerr == nil {
			rerr = idx.ranges.Check(key, uint64(req.Npages))
		}
		if rerr != nil {
			s.mu.Lock()
			s.res.Refused++
			s.mu.Unlock()
			msg := fmt.Sprintf("request %d: pid %d: %v", h.ID, req.Pid, rerr)
			s.log.Warn().Uint64("request", h.ID).Msg("refuse request: " + msg)
			if err := rw.writeFrame(TypeError, h.ID, message(msg)); err != nil {
				return
			}
			continue
		}
		r := queuedRequest{id: h.ID, addr: key, npages: uint64(req.Npages)}
		s.mu.Lock()
		s.take(cs, idx, r)
		s.mu.Unlock()
		if need := int(r.npages * PageSize); len(buf) < need {
			buf = make([]byte, need)
		}
		if err := s.sendPages(rw, idx, buf, &r); err != nil {
			s.log.Warn().Err(err).Str("peer", peer).Msg("answer on the replies connection")
			return
		}
	}
}

// waitReadable waits in poll(2), on the calling thread, until rc's socket
// is readable (or at its end, or in error: the read that follows says
// which). The fd stays open while poll runs (a Close waits for it), so
// each poll lasts at most pollSlice and a Close waits at most that long;
// the session's end shuts the socket down first, which wakes it at once.
func waitReadable(rc syscall.RawConn) error {
	for {
		var n int
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			for {
				if n, perr = unix.Poll(pfd, int(pollSlice.Milliseconds())); !errors.Is(perr, unix.EINTR) {
					return true
				}
			}
		})
		switch {
		case err != nil:
			return err
		case perr != nil:
			return os.NewSyscallError("poll", perr)
		case n > 0:
			return nil
		}
	}
}

// pollSlice bounds one poll of waitReadable.
const pollSlice = 20 * time.Millisecond

// readLoop decodes the target's frames into cs until DONE, FAIL or an error.
func (s *Server) readLoop(w *wire, cs *connState, idx *lazyIndex) {
	fail := func(err error) {
		s.mu.Lock()
		cs.readErr = err
		s.mu.Unlock()
		cs.notify()
	}
	var buf []byte // for the requests the reader answers
	for {
		h, p, err := w.readFrame()
		if err != nil {
			fail(fmt.Errorf("read from target %s: %w", w.conn.RemoteAddr(), err))
			return
		}
		var answer *queuedRequest
		s.mu.Lock()
		switch h.Type {
		case TypeGetImages:
			cs.wantImages = true
		case TypeResumed:
			if !s.resumed {
				s.log.Info().Msg("target resumed the process")
				s.res.ResumedAt = time.Now()
			}
			s.resumed = true
			s.startAbsent(idx)
			cs.resumedOK = true
		case TypeRequest:
			var req *Request
			req, err = DecodeRequest(p)
			if err != nil {
				break
			}
			key, rerr := idx.ranges.Key(req.Pid, req.Addr)
			if rerr == nil {
				rerr = idx.ranges.Check(key, uint64(req.Npages))
			}
			if rerr != nil {
				s.res.Refused++
				cs.errs = append(cs.errs, errFrame{id: h.ID, msg: fmt.Sprintf("request %d: pid %d: %v", h.ID, req.Pid, rerr)})
				break
			}
			r := queuedRequest{id: h.ID, addr: key, npages: uint64(req.Npages)}
			if cs.direct {
				s.take(cs, idx, r)
				answer = &r
				break
			}
			cs.reqs = append(cs.reqs, r)
		case TypeAck:
			var ack *Ack
			ack, err = DecodeAck(p, idx.ranges)
			if err != nil {
				break
			}
			for _, r := range ack.Runs {
				g, _ := idx.Lookup(r.Addr) // inside idx.ranges: DecodeAck checked
				s.res.AckedPages += s.acked.SetRange(g, r.Npages)
				cs.sent.SetRange(g, r.Npages)
			}
		case TypeCredit:
			var n uint64
			if n, err = DecodeCredit(p); err == nil {
				cs.credit = min(cs.credit+n, MaxCredit)
			}
		case TypeDone:
			cs.done = true
		case TypeExited:
			var msg *string
			if msg, err = DecodeMessage(p); err == nil {
				cs.done = true
				s.res.Exited = *msg
				if s.res.Exited == "" {
					s.res.Exited = "the process exited"
				}
			}
		case TypeFail:
			var msg *string
			if msg, err = DecodeMessage(p); err == nil {
				cs.fail = *msg
			}
		case TypeAbort:
			var msg *string
			if msg, err = DecodeMessage(p); err == nil {
				cs.abort = *msg
				if cs.abort == "" {
					cs.abort = "no reason given"
				}
			}
		default:
			err = fmt.Errorf("%w: unexpected %s from the target", ErrProtocol, h.Type)
		}
		stop := cs.done || cs.fail != "" || cs.abort != ""
		s.mu.Unlock()
		if err == nil && answer != nil {
			if need := int(answer.npages * PageSize); len(buf) < need {
				buf = make([]byte, need)
			}
			err = s.sendPages(w, idx, buf, answer)
		}
		if err != nil {
			fail(fmt.Errorf("read from target %s: %w", w.conn.RemoteAddr(), err))
			return
		}
		cs.notify()
		if stop {
			return
		}
	}
}

// work is one thing for the writer to do, taken under Server.mu.
type work struct {
	errs      []errFrame
	images    bool
	resumedOK bool
	absent    []uffd.Run // to send as ABSENT frames
	req       *queuedRequest
	push      *queuedRequest // a batch [addr, npages) inside one run
	done      bool
	fail      string
	abort     string
	readErr   error
}

// next picks the writer's next job: replies and errors, then one request,
// then one push batch.
func (s *Server) next(cs *connState, idx *lazyIndex) (wk work, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	wk.errs, cs.errs = cs.errs, nil
	wk.images, cs.wantImages = cs.wantImages, false
	wk.resumedOK, cs.resumedOK = cs.resumedOK, false
	if wk.resumedOK {
		cs.pushing = true
		cs.credit = PushWindow
	}
	if cs.pushing && !cs.absentSent && s.absentState == absentKnown {
		cs.absentSent = true
		if len(s.absent) > 0 {
			wk.absent = s.absent
			cs.sent.Or(s.absentBits)
		}
	}
	switch {
	case cs.abort != "":
		wk.abort = cs.abort
	case cs.fail != "":
		wk.fail = cs.fail
	case cs.done:
		wk.done = true
	case cs.readErr != nil:
		wk.readErr = cs.readErr
	case len(wk.errs) > 0 || wk.images || wk.resumedOK:
	case len(cs.reqs) > 0:
		r := cs.reqs[0]
		cs.reqs = cs.reqs[1:]
		wk.req = &r
		s.take(cs, idx, r)
	case cs.pushing && cs.credit >= PageSize && cs.absentSent:
		wk.push = s.pushBatch(cs, idx)
		if wk.push != nil {
			cs.credit -= min(cs.credit, wk.push.npages*PageSize)
		}
	}
	ok = wk.abort != "" || wk.fail != "" || wk.done || wk.readErr != nil || len(wk.errs) > 0 || wk.images || wk.resumedOK || wk.absent != nil || wk.req != nil || wk.push != nil
	return wk, ok
}

// take marks request r's pages sent and moves the push cursor after them
// (pages near a fault go first). Called with s.mu held.
func (s *Server) take(cs *connState, idx *lazyIndex, r queuedRequest) {
	g, _ := idx.Lookup(r.addr) // inside idx.ranges: checked when read
	cs.sent.SetRange(g, r.npages)
	s.cursor = g + r.npages
	if s.cursor >= idx.Pages() {
		s.cursor = 0
	}
}

// pushBatch picks the next unsent pages from the cursor onwards (wrapping),
// contiguous inside one run, up to MaxPushBytes, and marks them sent.
func (s *Server) pushBatch(cs *connState, idx *lazyIndex) *queuedRequest {
	g, ok := cs.sent.NextClear(s.cursor, idx.Pages())
	if !ok {
		if g, ok = cs.sent.NextClear(0, s.cursor); !ok {
			return nil
		}
	}
	left := idx.RunEnd(g) - g
	n := cs.sent.ClearRun(g, min(left, MaxPushBytes/PageSize, max(cs.credit/PageSize, 1)))
	cs.sent.SetRange(g, n)
	s.cursor = g + n
	if s.cursor >= idx.Pages() {
		s.cursor = 0
	}
	return &queuedRequest{addr: idx.Addr(g), npages: n}
}

// sendFailed decides what a failed send of pages means. A target that
// ends the session (ABORT after a double Ctrl-C, DONE, EXITED, FAIL) and
// closes with pushed pages still unread in its socket resets the
// connection (tcp(7): a close with unread data sends RST), so the send
// may fail before the reader took the frame that says why, though it
// arrived first and is still readable: let the reader finish (bounded),
// then the target's word wins over the broken connection.
func (s *Server) sendFailed(w *wire, cs *connState, readerDone <-chan struct{}, err error) connResult {
	s.mu.Lock()
	said := cs.abort != "" || cs.fail != "" || cs.done
	s.mu.Unlock()
	if !said && readerDone != nil {
		w.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		select {
		case <-readerDone:
		case <-time.After(2 * time.Second):
		}
	}
	s.mu.Lock()
	abort, fail, done := cs.abort, cs.fail, cs.done
	if done {
		s.res.Done = true
		s.res.DoneAt = time.Now()
	}
	s.mu.Unlock()
	switch {
	case abort != "":
		return s.targetAborted(abort)
	case fail != "":
		return s.restoreFailed(fail)
	case done:
		return connResult{done: true}
	}
	return connResult{err: err}
}

// targetAborted ends a connection on the target's ABORT.
func (s *Server) targetAborted(reason string) connResult {
	s.log.Warn().Str("reason", reason).Msg("target aborted: it killed its copy of the process")
	return connResult{err: fmt.Errorf("%w: %s", ErrTargetAborted, reason)}
}

// restoreFailed ends a connection on the target's FAIL.
func (s *Server) restoreFailed(reason string) connResult {
	s.log.Warn().Str("reason", reason).Msg("target reports the restore failed")
	return connResult{err: fmt.Errorf("%w: %s", ErrRestoreFailed, reason)}
}

// writeLoop sends what next picks, waiting for the reader when idle.
func (s *Server) writeLoop(ctx context.Context, w *wire, cs *connState, idx *lazyIndex, readerDone <-chan struct{}) connResult {
	buf := make([]byte, MaxFramePages*PageSize)
	for {
		wk, ok := s.next(cs, idx)
		if !ok {
			select {
			case <-cs.wake:
			case <-readerDone:
				// The reader stopped: its reason is in cs; look once more.
				cs.notify()
				readerDone = nil
			case <-ctx.Done():
				return connResult{err: ctx.Err()}
			}
			continue
		}
		for _, e := range wk.errs {
			s.log.Warn().Uint64("request", e.id).Msg("refuse request: " + e.msg)
			if err := w.writeFrame(TypeError, e.id, message(e.msg)); err != nil {
				return connResult{err: fmt.Errorf("send ERROR: %w", err)}
			}
		}
		if wk.images {
			if err := s.beforeImages(); err != nil {
				_ = w.writeFrame(TypeError, 0, message(err.Error()))
				return connResult{err: err}
			}
			if err := s.sendImages(w); err != nil {
				// The target may have refused the image files (FAIL,
				// e.g. more than it can hold) and closed while they were
				// being sent: its reason beats the broken pipe. The
				// reader ends on that FAIL or on the broken connection.
				w.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				if readerDone != nil {
					<-readerDone
				}
				s.mu.Lock()
				fail := cs.fail
				s.mu.Unlock()
				if fail != "" {
					return s.restoreFailed(fail)
				}
				return connResult{err: err}
			}
		}
		if wk.resumedOK {
			if err := w.writeFrame(TypeResumedOK, 0); err != nil {
				return connResult{err: fmt.Errorf("send RESUMED_OK: %w", err)}
			}
			s.mu.Lock()
			cs.direct = true
			s.mu.Unlock()
		}
		for runs := wk.absent; len(runs) > 0; {
			k := min(len(runs), MaxAbsentRuns)
			if err := w.writeFrame(TypeAbsent, 0, (&Absent{Runs: runs[:k]}).Append(nil, idx.ranges)); err != nil {
				return s.sendFailed(w, cs, readerDone, fmt.Errorf("send ABSENT: %w", err))
			}
			runs = runs[k:]
		}
		switch {
		case wk.abort != "":
			return s.targetAborted(wk.abort)
		case wk.fail != "":
			return s.restoreFailed(wk.fail)
		case wk.done:
			s.mu.Lock()
			s.res.Done = true
			s.res.DoneAt = time.Now()
			s.mu.Unlock()
			w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := w.writeFrame(TypeDone, 0); err != nil {
				s.log.Warn().Err(err).Msg("send DONE")
			}
			return connResult{done: true}
		case wk.readErr != nil:
			s.mu.Lock()
			resumed := s.resumed
			s.mu.Unlock()
			if !resumed && (errors.Is(wk.readErr, ErrProtocol) || errors.Is(wk.readErr, ErrOutOfRange)) {
				// The target sent what the source cannot take: it
				// hears why. (After RESUMED it reconnects instead.)
				w.conn.SetWriteDeadline(time.Now().Add(time.Second))
				_ = w.writeFrame(TypeError, 0, message(wk.readErr.Error()))
			}
			return connResult{err: wk.readErr}
		case wk.req != nil:
			if err := s.sendPages(w, idx, buf, wk.req); err != nil {
				return s.sendFailed(w, cs, readerDone, err)
			}
		case wk.push != nil:
			if err := s.sendPages(w, idx, buf, wk.push); err != nil {
				return s.sendFailed(w, cs, readerDone, err)
			}
		}
	}
}

// beforeImages runs ServerConfig.BeforeImages, the first time only.
func (s *Server) beforeImages() error {
	s.mu.Lock()
	f := s.cfg.BeforeImages
	s.cfg.BeforeImages = nil
	s.mu.Unlock()
	if f == nil {
		return nil
	}
	return f()
}

// manifest lists Files and Streams, sorted by name (a name in both is
// listed twice, which checkImages refuses).
func (s *Server) manifest() *Images {
	m := &Images{Files: make([]FileEntry, 0, len(s.cfg.Files)+len(s.cfg.Streams))}
	for name, b := range s.cfg.Files {
		m.Files = append(m.Files, FileEntry{Name: name, Size: uint64(len(b))})
	}
	for name, f := range s.cfg.Streams {
		m.Files = append(m.Files, FileEntry{Name: name, Size: f.Size()})
	}
	slices.SortStableFunc(m.Files, func(a, b FileEntry) int { return strings.Compare(a.Name, b.Name) })
	return m
}

// sendImages sends the IMAGES manifest and the files in CHUNK frames. A
// stream is read into one reused buffer, a chunk at a time; if it cannot be
// read, the target gets an ERROR saying why.
func (s *Server) sendImages(w *wire) error {
	m := s.manifest()
	if err := w.writeFrame(TypeImages, 0, m.Append(nil)); err != nil {
		return fmt.Errorf("send IMAGES: %w", err)
	}
	// CHUNK frames are cut from the concatenation; one frame may span files.
	var parts [][]byte
	var n int
	flush := func() error {
		if n == 0 {
			return nil
		}
		err := w.writeFrame(TypeChunk, 0, parts...)
		parts, n = parts[:0], 0
		return err
	}
	var sbuf []byte
	for _, f := range m.Files {
		if st, ok := s.cfg.Streams[f.Name]; ok {
			if err := flush(); err != nil {
				return fmt.Errorf("send image files: %w", err)
			}
			if sbuf == nil {
				sbuf = make([]byte, ChunkSize)
			}
			for off := uint64(0); off < f.Size; {
				k := min(f.Size-off, ChunkSize)
				if err := st.ReadAt(sbuf[:k], off); err != nil {
					err = fmt.Errorf("read image %s: %w", f.Name, err)
					_ = w.writeFrame(TypeError, 0, message(err.Error()))
					return err
				}
				if err := w.writeFrame(TypeChunk, 0, sbuf[:k]); err != nil {
					return fmt.Errorf("send image %s: %w", f.Name, err)
				}
				off += k
			}
			continue
		}
		b := s.cfg.Files[f.Name]
		for len(b) > 0 {
			k := min(len(b), ChunkSize-n)
			parts = append(parts, b[:k])
			n += k
			b = b[k:]
			if n == ChunkSize {
				if err := flush(); err != nil {
					return fmt.Errorf("send image %s: %w", f.Name, err)
				}
			}
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("send image files: %w", err)
	}
	s.log.Debug().Int("files", len(m.Files)).Uint64("bytes", m.Total()).Msg("sent image files")
	return nil
}

// sendPages reads a range (a request, id ≠ 0, or a push batch) from Memory
// and sends it, per lazy run and per MaxFramePages: each stretch of pages
// that read as all zero bytes as one ZERO frame, each other stretch as one
// PAGES frame, the frames of one read in one write.
func (s *Server) sendPages(w *wire, idx *lazyIndex, buf []byte, r *queuedRequest) error {
	addr, left := r.addr, r.npages
	var (
		heads []byte      // the frames' headers and heads
		parts []framePart // what goes out, in order
		bufs  net.Buffers
	)
	for left > 0 {
		g, _ := idx.Lookup(addr) // inside idx.ranges: checked by the caller
		n := min(left, idx.RunEnd(g)-g, MaxFramePages)
		data := buf[:n*PageSize]
		pid, a := wireAddr(idx.ranges.pids, addr)
		if err := s.cfg.Memory.ReadAt(data, addr); err != nil {
			msg := fmt.Sprintf("read pages %#x-%#x of pid %d from the source process: %v", a, a+n*PageSize, pid, err)
			w.writeFrame(TypeError, r.id, message(msg))
			return fmt.Errorf("read pages %#x-%#x of pid %d: %w", a, a+n*PageSize, pid, err)
		}
		heads, parts = heads[:0], parts[:0]
		var zero uint64
		for p := uint64(0); p < n; {
			z := isZeroPage(data[p*PageSize : (p+1)*PageSize])
			q := p + 1
			for q < n && isZeroPage(data[q*PageSize:(q+1)*PageSize]) == z {
				q++
			}
			at := addr + p*PageSize
			h := len(heads)
			if z {
				zero += q - p
				heads = Header{Type: TypeZero, Length: 16, ID: r.id}.Append(heads)
				heads = (&Zero{Addr: at, Npages: uint32(q - p)}).Append(heads, idx.ranges)
				parts = append(parts, framePart{head: [2]int{h, len(heads)}})
			} else {
				heads = Header{Type: TypePages, Length: uint32(pagesHead + (q-p)*PageSize), ID: r.id}.Append(heads)
				heads = AppendPagesHead(heads, at, idx.ranges)
				parts = append(parts, framePart{head: [2]int{h, len(heads)}, data: data[p*PageSize : q*PageSize]})
			}
			p = q
		}
		bufs = bufs[:0]
		for _, fp := range parts {
			bufs = append(bufs, heads[fp.head[0]:fp.head[1]])
			if len(fp.data) > 0 {
				bufs = append(bufs, fp.data)
			}
		}
		if err := w.writeBuffers(bufs); err != nil {
			return fmt.Errorf("send pages %#x-%#x of pid %d: %w", a, a+n*PageSize, pid, err)
		}
		s.mu.Lock()
		if r.id != 0 {
			s.res.RequestPages += n
			s.res.RequestBytes += (n - zero) * PageSize
		} else {
			s.res.PushPages += n
			s.res.PushBytes += (n - zero) * PageSize
		}
		s.res.ZeroPages += zero
		s.mu.Unlock()
		addr += n * PageSize
		left -= n
	}
	if r.id != 0 {
		s.mu.Lock()
		s.res.Requests++
		s.mu.Unlock()
	}
	return nil
}

// framePart is one frame of sendPages: its header and head in heads, and
// its page data (none for ZERO).
type framePart struct {
	head [2]int
	data []byte
}

// isZeroPage reports whether page b holds only zero bytes.
func isZeroPage(b []byte) bool { return bytes.Equal(b, zeroPage[:]) }

// zeroPage is a page of zeros to compare with.
var zeroPage [PageSize]byte
