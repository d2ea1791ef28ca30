package pageserver

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/uffd"
)

// ClientConfig configures the target's page client.
type ClientConfig struct {
	Token []byte      // the source's shared secret, if it has one
	TLS   *tls.Config // see ClientTLS
	// ReconnectTimeout is how long the client redials a source whose
	// connection dropped after RESUMED. Zero means do not redial.
	ReconnectTimeout time.Duration
	// DialTimeout bounds one dial and handshake (default 10s).
	DialTimeout time.Duration
	// WaitSource is how long Dial keeps retrying a refused connection
	// (nobody listens yet: the target may be started before the source);
	// default DefaultWaitSource. The first refusal is logged at once.
	WaitSource time.Duration
	// DeadPeerTimeout is how long the source may stay silent while data
	// or a keepalive probe waits for its acknowledgement before the
	// connection is declared dead (a partition, a dead host) and
	// redialled: TCP_USER_TIMEOUT plus keepalive probes every second, see
	// tcp(7). Default: a third of ReconnectTimeout, between 2s and 10s.
	DeadPeerTimeout time.Duration
	Log             zerolog.Logger
}

// Stats counts what a Client received.
type Stats struct {
	// Pages received, and their bytes (ZERO frames carry none).
	RequestPages, RequestBytes uint64 // in answer to requests
	PushPages, PushBytes       uint64 // pushed
	ZeroPages                  uint64 // of those pages, received as ZERO: all zero bytes at the source
	AbsentPages                uint64 // lazy pages named in ABSENT: the source never had them
	Requests                   uint64 // REQUEST frames sent (resends included)
	Refused                    uint64 // requests the source refused
	AckedPages                 uint64
	Reconnects                 int
}

// Ack batching: an ACK frame is sent once this many bytes are acked, or
// after ackInterval.
const (
	ackBytes    = 1 << 20
	ackInterval = 50 * time.Millisecond
)

// Client is the target's side of a session. Images and Resumed are called
// in turn by the restore; after Resumed the client is a uffd.PageSource for
// the lazy-pages handler, running a reader and a writer goroutine and
// reconnecting when the connection drops.
type Client struct {
	addr    string
	cfg     ClientConfig
	log     zerolog.Logger
	lazy    *Ranges
	pages   chan uffd.PageData // pushed pages (and a final error)
	replies chan uffd.PageData // answers to requests, served first by the handler

	session uint64
	welcome *Welcome

	closed    chan struct{}
	closeOnce sync.Once
	doneCh    chan error // the run loop's end (nil = DONE acknowledged)
	wg        sync.WaitGroup

	// mu guards the fields below.
	mu sync.Mutex
	w  *wire // current connection, nil while redialling
	rw *wire // its replies connection, nil if none
	// prw is rw when the handler polls it (PollReplies), else nil;
	// pollKick, set by PollReplies, tells the handler it changed.
	prw      *polledReplies
	pollKick func()
	// early delivers the replies connection Resumed dialled (nil if that
	// failed), for the first connection's serveConn.
	early    chan *wire
	resumed  bool
	running  bool
	nextID   uint64
	pending  map[uint64]*pendingRequest
	queue    []uint64 // ids of requests to send
	acks     []uffd.Run
	ackBytes uint64
	// ackedAll is every run acked in this session (merged now and then),
	// announced again on a reconnect: a source that restarted and adopted
	// the session (dump --lazy --adopt) knows nothing of earlier acks and
	// would push those pages again.
	ackedAll  []uffd.Run
	ackedNorm int // len(ackedAll) after its last merge
	ackDue    bool
	credit    uint64 // pushed bytes released, not yet returned in a CREDIT
	conn      uint64 // connections so far: credit of an older one is not returned
	wantDone  bool
	sentDone  bool
	exited    string        // with wantDone: send EXITED with this text instead of DONE
	abort     string        // reason of an ABORT to send, "" if none
	aborted   chan struct{} // closed once ABORT was written
	sentAbrt  bool
	stats     Stats
	err       error // the session failed for good
	wake      chan struct{}
	lastRecv  time.Time // when a page (or zero, absent run) last arrived
}

type pendingRequest struct {
	addr      uint64
	npages    uint64
	remaining uint64
}

// DefaultWaitSource is how long Dial waits for a page server that refuses
// connections, unless ClientConfig.WaitSource says otherwise.
const DefaultWaitSource = 5 * time.Second

// Dial connects to the page server at addr and opens a new session.
func Dial(ctx context.Context, addr string, cfg ClientConfig) (*Client, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.WaitSource == 0 {
		cfg.WaitSource = DefaultWaitSource
	}
	if cfg.DeadPeerTimeout == 0 {
		cfg.DeadPeerTimeout = min(max(cfg.ReconnectTimeout/3, 2*time.Second), 10*time.Second)
	}
	c := &Client{
		addr: addr,
		cfg:  cfg,
		log:  cfg.Log,
		// The reader queues pushed frames on pages, which holds two push
		// windows (the one of the connection and what is left of a
		// dropped one), so the reader never blocks there and an answer
		// behind pushed data is read at once; the handler takes many
		// frames per wake-up, and its Release of each returns the frame's
		// bytes to the server as push credit.
		pages:   make(chan uffd.PageData, 2*PushWindow/PageSize+8),
		replies: make(chan uffd.PageData, 256),
		closed:  make(chan struct{}),
		doneCh:  make(chan error, 1),
		pending: make(map[uint64]*pendingRequest),
		wake:    make(chan struct{}, 1),
		aborted: make(chan struct{}),
	}
	w, welcome, err := c.dial(ctx, 0)
	if err != nil {
		return nil, err
	}
	c.lastRecv = time.Now() // the silence watch counts from here
	lazy, err := NewTreeRanges(welcome.Pids, welcome.Runs)
	if err != nil {
		w.conn.Close()
		return nil, fmt.Errorf("dial page server %s: %w", addr, err)
	}
	c.w, c.welcome, c.session, c.lazy = w, welcome, welcome.Session, lazy
	c.log.Info().Str("source", addr).Uint64("session", c.session).Uint64("lazy_pages", welcome.LazyPages).Msg("connected to the page server")
	return c, nil
}

// dialer is the dialer of every connection to the source.
func (c *Client) dialer() *net.Dialer {
	return &net.Dialer{
		// A silent peer (partition, host down) is noticed within
		// DeadPeerTimeout even when nothing is being sent: keepalive probes
		// every second, and TCP_USER_TIMEOUT bounds how long sent data or
		// probes may stay unacknowledged (it overrides the probe count).
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 127 /* MAX_TCP_KEEPCNT */},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(c.cfg.DeadPeerTimeout.Milliseconds()))
			})
			if err == nil && serr != nil {
				err = os.NewSyscallError("setsockopt TCP_USER_TIMEOUT", serr)
			}
			return err
		},
	}
}

// dial connects and runs HELLO/WELCOME for session (0 = new).
func (c *Client) dial(ctx context.Context, session uint64) (*wire, *Welcome, error) {
	d := c.dialer()
	dialOnce := func() (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		defer cancel()
		return d.DialContext(dctx, "tcp", c.addr)
	}
	conn, err := dialOnce()
	if session == 0 && errors.Is(err, syscall.ECONNREFUSED) {
		// The source may not listen yet (the target was started first):
		// say so at once, retry a refused connection for WaitSource,
		// every 20 ms: a refused connect costs a SYN and a RST, and the
		// time between the source starting to listen and the next attempt
		// is downtime of the process (the source froze it already).
		c.log.Info().Str("source", c.addr).Dur("wait", c.cfg.WaitSource).
			Msgf("waiting for the page server at %s (connection refused; giving up after %s, --wait-source to wait longer)", c.addr, c.cfg.WaitSource)
		wctx, cancel := context.WithTimeout(ctx, c.cfg.WaitSource)
		defer cancel()
		for wait := 5 * time.Millisecond; err != nil && errors.Is(err, syscall.ECONNREFUSED); wait = min(2*wait, 20*time.Millisecond) {
			t := time.NewTimer(wait)
			select {
			case <-wctx.Done():
				t.Stop()
				if ctx.Err() != nil {
					return nil, nil, fmt.Errorf("dial page server %s: %w", c.addr, ctx.Err())
				}
				return nil, nil, fmt.Errorf("dial page server %s: %w (nobody listened for %s; is lazycr dump --lazy running there? --wait-source waits longer)", c.addr, err, c.cfg.WaitSource)
			case <-t.C:
			}
			conn, err = dialOnce()
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("dial page server %s: %w", c.addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if c.cfg.TLS != nil {
		tc := tls.Client(conn, c.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("tls handshake with page server %s: %w", c.addr, c.silent(ctx, err))
		}
		conn = tc
	}
	w := newWire(conn)
	hello := &Hello{Version: ProtocolVersion, Session: session, Token: c.cfg.Token}
	err = w.writeFrame(TypeHello, 0, hello.Append(nil))
	var welcome *Welcome
	if err == nil {
		var h *Header
		var p []byte
		h, p, err = w.readFrame()
		switch {
		case err != nil:
		case h.Type == TypeError:
			msg, _ := DecodeMessage(p)
			if msg == nil {
				msg = new(string)
			}
			err = fmt.Errorf("%w: %s", ErrRefused, refusal(*msg))
		case h.Type != TypeWelcome:
			err = fmt.Errorf("%w: %s instead of WELCOME", ErrProtocol, h.Type)
		default:
			welcome, err = DecodeWelcome(p)
		}
	}
	if err == nil && welcome.Version != ProtocolVersion {
		err = fmt.Errorf("%w: the source speaks protocol %d, this lazycr %d: use the same lazycr version on both hosts", ErrVersion, welcome.Version, ProtocolVersion)
	}
	if err == nil && session != 0 && welcome.Session != session {
		err = fmt.Errorf("%w: resumed session %#x but the source answers %#x", ErrProtocol, session, welcome.Session)
	}
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("hello page server %s: %w", c.addr, c.silent(ctx, err))
	}
	return w, welcome, nil
}

// silent turns the error of a read or write that the handshake's deadline
// (ctx, DialTimeout) cut short — the context closed the connection, so err
// is "use of closed network connection" — into one that says what
// happened: whatever accepted the connection did not answer in time (a
// stopped source, or a port that is no lazycr page server).
func (c *Client) silent(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrRefused) && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrVersion) {
		return fmt.Errorf("no answer within %s (is this lazycr dump --lazy, and is it running?): %w", c.cfg.DialTimeout, context.DeadlineExceeded)
	}
	return err
}

// dialReplies opens the session's replies connection (HELLO_REPLIES,
// REPLIES_OK): requests written on it are answered on it, never behind the
// pushed pages queued on the session's connection.
func (c *Client) dialReplies(ended <-chan struct{}) (*wire, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DialTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ended:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := c.dialer().DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("dial page server %s for replies: %w", c.addr, err)
	}
	stopClose := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopClose()
	if c.cfg.TLS != nil {
		tc := tls.Client(conn, c.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake with page server %s for replies: %w", c.addr, err)
		}
		conn = tc
	}
	w := newWire(conn)
	hello := &Hello{Version: ProtocolVersion, Session: c.session, Token: c.cfg.Token}
	err = w.writeFrame(TypeHelloReplies, 0, hello.Append(nil))
	if err == nil {
		var h *Header
		var p []byte
		if h, p, err = w.readFrame(); err == nil {
			err = expect(h, p, TypeRepliesOK)
		}
	}
	if err == nil && !stopClose() {
		err = ctx.Err() // the AfterFunc closed conn
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("open the replies connection to page server %s: %w", c.addr, err)
	}
	return w, nil
}

// Welcome returns the session's WELCOME: session id and lazy runs.
func (c *Client) Welcome() *Welcome { return c.welcome }

// Images fetches the image files. Call it before Resumed.
func (c *Client) Images(ctx context.Context) (map[string][]byte, error) {
	c.mu.Lock()
	w, resumed := c.w, c.resumed
	c.mu.Unlock()
	if resumed || w == nil {
		return nil, fmt.Errorf("fetch images from %s: %w", c.addr, ErrClosed)
	}
	stop := context.AfterFunc(ctx, func() { w.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	files, err := c.images(w)
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("fetch images from %s: %w", c.addr, err)
	}
	return files, nil
}

func (c *Client) images(w *wire) (map[string][]byte, error) {
	if err := w.writeFrame(TypeGetImages, 0); err != nil {
		return nil, err
	}
	h, p, err := w.readFrame()
	if err != nil {
		return nil, err
	}
	if err := expect(h, p, TypeImages); err != nil {
		return nil, err
	}
	m, err := DecodeImages(p)
	if err != nil {
		return nil, err
	}
	if err := checkHold(m.Total()); err != nil {
		return nil, err
	}
	// Read the CHUNK frames straight into one buffer, then slice it.
	all := make([]byte, m.Total())
	for off := 0; off < len(all); {
		h, err := w.readHeader()
		if err != nil {
			return nil, unexpectedEOF(err)
		}
		if h.Type != TypeChunk {
			p, _ := w.readPayload(h)
			return nil, expect(h, p, TypeChunk)
		}
		if int(h.Length) > len(all)-off {
			return nil, fmt.Errorf("%w: CHUNK of %d bytes past the %d bytes of image files", ErrProtocol, h.Length, len(all))
		}
		if _, err := io.ReadFull(w.br, all[off:off+int(h.Length)]); err != nil {
			return nil, unexpectedEOF(err)
		}
		off += int(h.Length)
	}
	files := make(map[string][]byte, len(m.Files))
	var off uint64
	for _, f := range m.Files {
		files[f.Name] = all[off : off+f.Size : off+f.Size]
		off += f.Size
	}
	return files, nil
}

// expect turns an ERROR frame or an unexpected type into an error.
func expect(h *Header, p []byte, want Type) error {
	if h.Type == want {
		return nil
	}
	if h.Type == TypeError {
		if msg, err := DecodeMessage(p); err == nil {
			return fmt.Errorf("source says: %s", *msg)
		}
	}
	return fmt.Errorf("%w: %s instead of %s", ErrProtocol, h.Type, want)
}

// sendResumed sends RESUMED on w and waits for RESUMED_OK.
func (c *Client) sendResumed(w *wire) error {
	w.conn.SetDeadline(time.Now().Add(c.cfg.DialTimeout))
	defer w.conn.SetDeadline(time.Time{})
	if err := w.writeFrame(TypeResumed, 0); err != nil {
		return err
	}
	h, p, err := w.readFrame()
	if err != nil {
		return err
	}
	return expect(h, p, TypeResumedOK)
}

// Resumed tells the source the process runs on the target: from now on the
// source never releases it, and a lost connection is redialled. It waits
// for the source's RESUMED_OK, then starts serving Request, Pages and Ack.
func (c *Client) Resumed() error {
	c.mu.Lock()
	w, resumed := c.w, c.resumed
	c.mu.Unlock()
	if resumed || w == nil {
		return fmt.Errorf("report resume to %s: %w", c.addr, ErrClosed)
	}
	// The replies connection is dialled while RESUMED is on its way: the
	// process runs already, and its first faults should not ask on the
	// session's connection, behind the push that RESUMED_OK starts.
	early := make(chan *wire, 1)
	go func() {
		rw, err := c.dialReplies(nil)
		if err != nil {
			c.log.Debug().Err(err).Msg("replies connection not opened with RESUMED: dialled again after it")
		}
		early <- rw
	}()
	dropEarly := func() {
		go func() {
			if rw := <-early; rw != nil {
				rw.conn.Close()
			}
		}()
	}
	err := c.sendResumed(w)
	fresh := err == nil
	if err != nil {
		dropEarly() // it belongs to the connection that failed
		// The source may have heard RESUMED and lost only the answer: then
		// it waits for this session to come back. If it did not hear it, it
		// released the original and the session is gone: the caller must
		// then kill its copy (ErrLostBeforeResume).
		c.log.Warn().Err(err).Msg("report resume: connection lost, reconnecting")
		w.conn.Close()
		nw, rerr := c.reconnect(err, true)
		if rerr == nil {
			err = c.sendResumed(nw)
			w = nw
		} else {
			err = rerr
		}
		if err != nil {
			w.conn.Close()
			return fmt.Errorf("report resume to %s: %w: %w", c.addr, ErrLostBeforeResume, err)
		}
	}
	c.mu.Lock()
	c.w = w
	c.resumed, c.running = true, true
	if fresh {
		// Not reconnected: if it is open already, the handler polls it
		// from its first fault on; else the first connection's replies
		// reader waits for it.
		select {
		case rw := <-early:
			if rw != nil {
				c.rw, c.prw = rw, c.polledConn(rw)
			}
		default:
			c.early = early
		}
	}
	c.mu.Unlock()
	c.wg.Go(c.run)
	return nil
}

// Request queues a request for npages pages at addr; it never blocks. The
// range must lie inside the lazy runs.
func (c *Client) Request(addr uint64, npages int) error {
	if npages <= 0 || npages > MaxFramePages {
		return fmt.Errorf("request %d pages at %#x: %w: 1 to %d pages", npages, addr, ErrOutOfRange, MaxFramePages)
	}
	if err := c.lazy.Check(addr, uint64(npages)); err != nil {
		return fmt.Errorf("request pages: %w", err)
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return c.err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = &pendingRequest{addr: addr, npages: uint64(npages), remaining: uint64(npages)}
	w := c.rw
	if !c.running || w == nil || len(c.queue) > 0 {
		// Not serving yet, no replies connection, or behind queued
		// requests: the writer sends it on the session's connection.
		c.queue = append(c.queue, id)
		c.notify()
		c.mu.Unlock()
		return nil
	}
	c.stats.Requests++
	c.mu.Unlock()
	// Written at once on the replies connection from the caller (the
	// handler), not by waking the writer: a fault's request goes out
	// without a goroutine hand-off. Nothing else is written there and the
	// source reads each request as it answers the one before, so the
	// 32-byte write finds room in the socket: filling it would take tens
	// of thousands of unanswered requests, and the handler has one per
	// faulting thread. If the write fails, the replies connection is
	// closed: its reader notices and every pending request is asked again
	// on the session's connection.
	pid, a := wireAddr(c.lazy.pids, addr)
	var fb [HeaderSize + 16]byte
	frame := appendFrame(fb[:0], TypeRequest, id, (&Request{Pid: pid, Addr: a, Npages: uint32(npages)}).Append(nil))
	if err := w.writeRaw(frame); err != nil {
		c.log.Debug().Err(err).Uint64("request", id).Msg("write request on the replies connection: lost, asked again on the session's connection")
		w.conn.Close()
	}
	return nil
}

// Pages delivers the pushed pages; a PageData with Err set reports that the
// source is gone for good. The channel is closed when the client stops
// (Done, Close, or after that error). Answers to requests come on Replies.
// The consumer must call each pushed PageData's Release once it installed
// (or dropped) it: that returns push credit to the server, which stops
// pushing when a window of pushed pages is not released.
func (c *Client) Pages() <-chan uffd.PageData { return c.pages }

// Replies delivers the answers to requests (uffd.PrioritySource): the
// handler installs them before pushed pages, so a fault never waits behind
// the background push. The channel is never closed.
func (c *Client) Replies() <-chan uffd.PageData { return c.replies }

// Ack tells the source these pages are installed (or dropped) and need never
// be sent again; acks are batched.
func (c *Client) Ack(addr uint64, npages int) {
	if npages <= 0 || c.lazy.Check(addr, uint64(npages)) != nil {
		c.log.Debug().Uint64("addr", addr).Int("npages", npages).Msg("ack outside the lazy runs ignored")
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.acks); n > 0 && c.acks[n-1].End() == addr {
		c.acks[n-1].Npages += uint64(npages)
	} else {
		c.acks = append(c.acks, uffd.Run{Addr: addr, Npages: uint64(npages)})
	}
	if n := len(c.ackedAll); n > 0 && c.ackedAll[n-1].End() == addr {
		c.ackedAll[n-1].Npages += uint64(npages)
	} else {
		c.ackedAll = append(c.ackedAll, uffd.Run{Addr: addr, Npages: uint64(npages)})
		if len(c.ackedAll) > 2*c.ackedNorm+1024 {
			c.ackedAll = normalizeRuns(c.ackedAll)
			c.ackedNorm = len(c.ackedAll)
		}
	}
	c.stats.AckedPages += uint64(npages)
	c.ackBytes += uint64(npages) * PageSize
	if c.ackBytes >= ackBytes || len(c.acks) >= MaxRuns {
		c.ackDue = true
		c.notify()
	}
}

// Done flushes the acks, sends DONE and waits for the source's DONE: the
// source then ends the frozen original. If the connection drops first, DONE
// is sent again after a reconnect; a source that exited after DONE without
// its answer arriving makes Done fail after ReconnectTimeout.
func (c *Client) Done() error { return c.end("DONE", "") }

// Exited is Done for a process that exited before all its lazy pages were
// needed: it sends EXITED with why (for the source's log) instead of DONE;
// the source ends the original as on DONE.
func (c *Client) Exited(why string) error {
	if why == "" {
		why = "the process exited"
	}
	return c.end("EXITED", why)
}

func (c *Client) end(frame, exited string) error {
	c.mu.Lock()
	if !c.running {
		c.mu.Unlock()
		return fmt.Errorf("send %s to %s: %w", frame, c.addr, ErrClosed)
	}
	c.wantDone, c.ackDue, c.exited = true, true, exited
	c.notify()
	c.mu.Unlock()
	select {
	case err := <-c.doneCh:
		c.doneCh <- err
		if err != nil {
			return fmt.Errorf("send %s to %s: %w", frame, c.addr, err)
		}
		return nil
	case <-c.closed:
		return fmt.Errorf("send %s to %s: %w", frame, c.addr, ErrClosed)
	}
}

// Abort tells the source, after Resumed, that the target killed its copy on
// purpose (ABORT): the source must keep the original stopped. It waits up
// to timeout for the frame to be written (not for an answer: there is
// none), then closes the client. It reports whether the frame went out.
func (c *Client) Abort(reason string, timeout time.Duration) bool {
	c.mu.Lock()
	running := c.running
	if running && c.abort == "" {
		c.abort = reason
		c.notify()
	}
	c.mu.Unlock()
	sent := false
	if running {
		t := time.NewTimer(timeout)
		select {
		case <-c.aborted:
			sent = true
		case <-t.C:
		}
		t.Stop()
	}
	c.Close()
	return sent
}

// Fail tells the source the restore failed before resume, so it releases
// the frozen process, and closes the client.
func (c *Client) Fail(reason string) {
	c.mu.Lock()
	w := c.w
	c.mu.Unlock()
	if w != nil {
		w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := w.writeFrame(TypeFail, 0, message(reason)); err != nil {
			c.log.Warn().Err(err).Msg("send FAIL")
		}
	}
	c.Close()
}

// Close stops the client and closes its connection; Pages is closed.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.mu.Lock()
		w, running := c.w, c.running
		c.mu.Unlock()
		if w != nil {
			w.conn.Close()
		}
		c.wg.Wait()
		if !running {
			close(c.pages)
		}
	})
	return nil
}

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

func (c *Client) notify() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// bufPool recycles the buffers pushed frames are read into: fresh memory
// costs a page fault per page, the very thing the handler is racing.
var bufPool = sync.Pool{New: func() any { b := make([]byte, MaxPushBytes); return &b }}

// getBuf returns a buffer of n bytes and the function that gives it back
// (nil for a buffer too large for the pool).
func getBuf(n int) ([]byte, func()) {
	if n > MaxPushBytes {
		return make([]byte, n), nil
	}
	bp := bufPool.Get().(*[]byte)
	return (*bp)[:n], func() { bufPool.Put(bp) }
}

// creditBatch is how many pushed bytes are released before a CREDIT frame
// returns them to the server.
const creditBatch = PushWindow / 4

// errDone ends a connection after the source acknowledged DONE.
var errDone = errors.New("done")

// run serves connections until DONE, Close or a failed reconnect, then
// closes Pages.
func (c *Client) run() {
	// The reader, the only sender, is done whenever serveConn returns.
	defer close(c.pages)
	stopWatch := make(chan struct{})
	defer close(stopWatch)
	go c.watchSilence(stopWatch)
	// A source that accepts every reconnect and fails it at once (a read
	// of its process that keeps failing) must not be redialled in a
	// tight loop forever: connections that end within quickFail of being
	// made are redialled after a growing pause, and after
	// ReconnectTimeout of nothing but such connections the source counts
	// as lost, as one that refuses them would.
	upAt := time.Now() // when the current connection was made
	var quick int
	var stormSince time.Time
	for {
		c.mu.Lock()
		w := c.w
		c.mu.Unlock()
		err := c.serveConn(w)
		w.conn.Close()
		select {
		case <-c.closed:
			c.finish(ErrClosed)
			return
		default:
		}
		if errors.Is(err, errDone) {
			c.finish(nil)
			return
		}
		c.mu.Lock()
		c.w = nil
		c.mu.Unlock()
		if silentPeer(err) {
			c.log.Warn().Err(err).Str("source", c.addr).Dur("silent_for", c.cfg.DeadPeerTimeout).
				Msg("page server silent: dead peer or network partition; reconnecting")
		} else {
			c.log.Warn().Err(err).Str("source", c.addr).Msg("page server connection lost, reconnecting")
		}
		if time.Since(upAt) < quickFail {
			if quick == 0 {
				stormSince = time.Now()
			}
			quick++
		} else {
			quick = 0
		}
		var rerr error
		switch {
		case quick > 0 && time.Since(stormSince) >= c.cfg.ReconnectTimeout:
			rerr = fmt.Errorf("page server %s lost (every connection for %s failed within %s of being made: %w); the lazy pages not fetched are only in the original, which the source keeps stopped (lazycr dump --lazy --adopt serves them again)",
				c.addr, c.cfg.ReconnectTimeout, quickFail, err)
		case quick > 0:
			t := time.NewTimer(min(quickFail/64<<min(quick, 6), quickFail))
			select {
			case <-t.C:
			case <-c.closed:
				t.Stop()
			}
			fallthrough
		default:
			w, rerr = c.reconnect(err, false)
		}
		upAt = time.Now()
		if rerr != nil {
			c.mu.Lock()
			c.err = rerr
			c.mu.Unlock()
			c.log.Error().Err(rerr).Msg("page server lost")
			select {
			case c.pages <- uffd.PageData{Err: rerr}:
			case <-c.closed:
			}
			c.finish(rerr)
			return
		}
		c.mu.Lock()
		c.w = w
		c.stats.Reconnects++
		// Answers on the old connection may be lost: ask again.
		c.requeue()
		c.sentDone = false
		// Announce every ack again (idempotent for a source that kept
		// its state, essential for one that adopted the session).
		c.ackedAll = normalizeRuns(c.ackedAll)
		c.ackedNorm = len(c.ackedAll)
		c.acks = append(c.acks[:0], c.ackedAll...)
		c.ackDue = true
		c.credit = 0 // the new connection starts with a fresh window
		c.conn++
		c.mu.Unlock()
		select {
		case <-c.closed: // Close raced with the reconnect and missed w
			w.conn.Close()
		default:
		}
	}
}

// watchSilence warns, every DeadPeerTimeout at most, while requests wait
// and no page has arrived for DeadPeerTimeout: the connection is up, so
// TCP does not notice (a dead host or a partition is noticed and
// redialled), but the source lazycr answers nothing — stopped (SIGSTOP, a
// debugger), hung or starved. The process waits at its fault meanwhile;
// nothing is lost, but the user should hear why.
func (c *Client) watchSilence(stop <-chan struct{}) {
	t := time.NewTicker(c.cfg.DeadPeerTimeout)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		c.mu.Lock()
		waiting, since := len(c.pending), time.Since(c.lastRecv)
		c.mu.Unlock()
		if waiting > 0 && since >= c.cfg.DeadPeerTimeout {
			c.log.Warn().Str("source", c.addr).Int("requests_waiting", waiting).Dur("silent_for", since.Round(time.Millisecond)).
				Msgf("no page from the source for %s while %d requests wait: is lazycr dump on the source stopped or hung? (the process waits at its fault; nothing is lost)", since.Round(time.Second), waiting)
		}
	}
}

// quickFail: a connection that ends sooner than this after it was made
// failed at once (see run).
const quickFail = time.Second

// requeue queues every pending request again, whole: its answer may have
// been lost with a connection. Called with c.mu held.
func (c *Client) requeue() {
	c.queue = c.queue[:0]
	for id, p := range c.pending {
		p.remaining = p.npages
		c.queue = append(c.queue, id)
	}
	slices.Sort(c.queue)
}

func (c *Client) finish(err error) {
	select {
	case c.doneCh <- err:
	default:
	}
}

// silentPeer reports whether err ended a connection because the peer stopped
// answering: TCP_USER_TIMEOUT or keepalive expired, reported as ETIMEDOUT,
// or as the last soft error seen meanwhile (EHOSTUNREACH, ENETUNREACH once
// neighbour resolution failed); see tcp(7).
func silentPeer(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// reconnect redials the session with backoff for up to ReconnectTimeout.
// With refusedIsFinal, a refused connection ends the attempts: nobody
// listens, so the source is not waiting for this session.
func (c *Client) reconnect(cause error, refusedIsFinal bool) (*wire, error) {
	deadline := time.Now().Add(c.cfg.ReconnectTimeout)
	backoff := 20 * time.Millisecond
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	last := cause
	for ctx.Err() == nil {
		w, _, err := c.dial(ctx, c.session)
		if err == nil {
			c.log.Info().Str("source", c.addr).Uint64("session", c.session).Msg("reconnected to the page server")
			return w, nil
		}
		last = err
		if errors.Is(err, ErrRefused) || refusedIsFinal && errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, time.Second)
	}
	return nil, fmt.Errorf("page server %s lost (%w); the lazy pages not fetched are only in the original, which the source keeps stopped (lazycr dump --lazy --adopt serves them again)", c.addr, last)
}

// serveConn runs a reader and a writer on w, and a reader on its replies
// connection once it is open, until one of w's fails; errDone when the
// source acknowledged DONE. Until the replies connection is open (or if
// the source refuses it) requests and answers share w; if it fails, the
// requests not yet answered are asked again on w.
func (c *Client) serveConn(w *wire) error {
	ended := make(chan struct{})
	repliesDone := make(chan struct{})
	go func() {
		defer close(repliesDone)
		c.mu.Lock()
		// Resumed may have opened it for the first connection already
		// (rw set), or may still be dialling it (early).
		rw, pr, early, kick := c.rw, c.prw, c.early, c.pollKick
		c.early = nil
		c.mu.Unlock()
		var err error
		if rw == nil {
			if early != nil {
				select {
				case rw = <-early:
				case <-ended:
					go func() { // the dial ends by DialTimeout or Close
						if rw := <-early; rw != nil {
							rw.conn.Close()
						}
					}()
					return
				}
			}
			if rw == nil {
				rw, err = c.dialReplies(ended)
			}
			if err != nil {
				c.log.Debug().Err(err).Msg("no replies connection: answers come on the session's connection, behind pushed pages")
				return
			}
			c.mu.Lock()
			select {
			case <-ended:
				c.mu.Unlock()
				rw.conn.Close()
				return
			default:
			}
			c.rw = rw
			// The handler reads it itself if it asked to (and it can be
			// polled); else the reader here delivers on Replies.
			pr = c.polledConn(rw)
			c.prw = pr
			c.mu.Unlock()
		}
		if pr != nil {
			c.log.Debug().Int("fd", pr.fd).Msg("replies connection open, read by the lazy-pages handler's poll loop")
			kick()
			select {
			case <-pr.dead:
				err = pr.err
			case <-ended:
				err = ErrClosed
			}
		} else {
			err = c.readLoop(rw)
		}
		rw.conn.Close()
		c.mu.Lock()
		if c.rw == rw {
			c.rw, c.prw = nil, nil
			c.log.Debug().Err(err).Msg("replies connection lost: asking again on the session's connection")
			c.requeue()
			c.notify()
		}
		c.mu.Unlock()
		if pr != nil {
			kick()
		}
	}()
	var rerr error
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		rerr = c.readLoop(w)
	}()
	werr := c.writeLoop(w, readerDone)
	w.conn.Close()
	close(ended)
	c.mu.Lock()
	rw := c.rw
	c.rw, c.prw = nil, nil
	c.mu.Unlock()
	if rw != nil {
		rw.conn.Close()
	}
	<-readerDone
	<-repliesDone
	if errors.Is(rerr, errDone) {
		return errDone
	}
	if werr != nil {
		return werr
	}
	return rerr
}

// readLoop reads frames and delivers pages until an error.
func (c *Client) readLoop(w *wire) error {
	var ab [pagesHead]byte
	for {
		h, err := w.readHeader()
		if err != nil {
			// Even after DONE was written, only the source's DONE proves
			// it arrived: a close without it is a lost connection.
			return fmt.Errorf("read from page server %s: %w", c.addr, err)
		}
		switch h.Type {
		case TypePages:
			if _, err := io.ReadFull(w.br, ab[:]); err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, unexpectedEOF(err))
			}
			addr, n, err := DecodePagesAddr(ab[:], h.Length, c.lazy)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			data, release := getBuf(int(n * PageSize))
			if _, err := io.ReadFull(w.br, data); err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, unexpectedEOF(err))
			}
			c.received(h.ID, uint64(n), uint64(len(data)))
			if err := c.deliver(uffd.PageData{Addr: addr, Data: data, Pushed: h.ID == 0}, release); err != nil {
				return err
			}
		case TypeZero:
			p, err := w.readPayload(h)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			z, err := DecodeZero(p, c.lazy)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			c.received(h.ID, uint64(z.Npages), 0)
			c.mu.Lock()
			c.stats.ZeroPages += uint64(z.Npages)
			c.mu.Unlock()
			if err := c.deliver(uffd.PageData{Addr: z.Addr, Zero: int(z.Npages), Pushed: h.ID == 0}, nil); err != nil {
				return err
			}
		case TypeAbsent:
			p, err := w.readPayload(h)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			a, err := DecodeAbsent(p, c.lazy)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			for _, r := range a.Runs {
				c.mu.Lock()
				c.stats.AbsentPages += r.Npages
				c.mu.Unlock()
				// Pushed: behind the answers, and no push credit (the
				// source spent none on it).
				if err := c.deliver(uffd.PageData{Addr: r.Addr, Absent: r.Npages, Pushed: true}, nil); err != nil {
					return err
				}
			}
		case TypeError:
			p, err := w.readPayload(h)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			msg, err := DecodeMessage(p)
			if err != nil {
				return fmt.Errorf("read from page server %s: %w", c.addr, err)
			}
			if h.ID == 0 {
				return fmt.Errorf("page server %s: %w: %s", c.addr, ErrRefused, refusal(*msg))
			}
			c.mu.Lock()
			delete(c.pending, h.ID)
			c.stats.Refused++
			c.mu.Unlock()
			c.log.Error().Uint64("request", h.ID).Msg("page server refused a request: " + *msg)
		case TypeDone:
			return errDone
		default:
			return fmt.Errorf("read from page server %s: %w: unexpected %s", c.addr, ErrProtocol, h.Type)
		}
	}
}

// received counts n pages (and their bytes) that arrived for request id (0:
// pushed).
func (c *Client) received(id, n, bytes uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastRecv = time.Now()
	if id == 0 {
		c.stats.PushPages += n
		c.stats.PushBytes += bytes
		return
	}
	c.stats.RequestPages += n
	c.stats.RequestBytes += bytes
	if p := c.pending[id]; p != nil {
		p.remaining -= min(p.remaining, n)
		if p.remaining == 0 {
			delete(c.pending, id)
		}
	}
}

// deliver hands d on: answers to Replies, pushed pages to Pages. Its
// Release gives the buffer back (release) and, for pushed pages, returns
// their bytes to the server as push credit: the server pushes more once
// the handler installed what it had.
func (c *Client) deliver(d uffd.PageData, release func()) error {
	d.Release = release
	ch := c.replies
	if d.Pushed {
		ch = c.pages
		n := uint64(len(d.Data)) + uint64(d.Zero)*PageSize
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		d.Release = func() {
			if release != nil {
				release()
			}
			c.mu.Lock()
			if c.conn == conn {
				c.credit += n
			}
			due := c.credit >= creditBatch
			c.mu.Unlock()
			if due {
				c.notify()
			}
		}
	}
	select {
	case ch <- d:
		return nil
	case <-c.closed:
		return ErrClosed
	}
}

// writeLoop sends queued requests, batched acks and DONE.
func (c *Client) writeLoop(w *wire, readerDone <-chan struct{}) error {
	tick := time.NewTicker(ackInterval)
	defer tick.Stop()
	var buf []byte
	for {
		buf = buf[:0]
		c.mu.Lock()
		for _, id := range c.queue {
			p := c.pending[id]
			if p == nil {
				continue
			}
			pid, addr := wireAddr(c.lazy.pids, p.addr)
			buf = appendFrame(buf, TypeRequest, id, (&Request{Pid: pid, Addr: addr, Npages: uint32(p.npages)}).Append(nil))
			c.stats.Requests++
		}
		c.queue = c.queue[:0]
		if c.ackDue && len(c.acks) > 0 {
			for runs := normalizeRuns(c.acks); len(runs) > 0; {
				n := min(len(runs), maxAckRuns)
				buf = appendFrame(buf, TypeAck, 0, (&Ack{Runs: runs[:n]}).Append(nil, c.lazy))
				runs = runs[n:]
			}
			c.acks, c.ackBytes = c.acks[:0], 0
		}
		c.ackDue = false
		if c.credit > 0 && (c.credit >= creditBatch || len(buf) > 0) {
			buf = appendFrame(buf, TypeCredit, 0, AppendCredit(nil, c.credit))
			c.credit = 0
		}
		if c.wantDone && !c.sentDone {
			if c.exited != "" {
				buf = appendFrame(buf, TypeExited, 0, message(c.exited))
			} else {
				buf = appendFrame(buf, TypeDone, 0, nil)
			}
			c.sentDone = true
		}
		abort := c.abort != "" && !c.sentAbrt
		if abort {
			buf = appendFrame(buf, TypeAbort, 0, message(c.abort))
		}
		c.mu.Unlock()
		if len(buf) > 0 {
			if err := w.writeRaw(buf); err != nil {
				return fmt.Errorf("write to page server %s: %w", c.addr, err)
			}
		}
		if abort {
			c.mu.Lock()
			c.sentAbrt = true
			c.mu.Unlock()
			close(c.aborted)
		}
		select {
		case <-c.wake:
		case <-tick.C:
			c.mu.Lock()
			c.ackDue = true
			c.mu.Unlock()
		case <-readerDone:
			return nil
		case <-c.closed:
			return ErrClosed
		}
	}
}

// maxAckRuns is the most runs one ACK frame carries: MaxRuns, and no more
// than fit in MaxPayload (a count, then 16 bytes per run).
const maxAckRuns = min(MaxRuns, (MaxPayload-4)/runSize)

// normalizeRuns sorts runs in place and merges overlapping or adjacent ones.
func normalizeRuns(runs []uffd.Run) []uffd.Run {
	slices.SortFunc(runs, func(a, b uffd.Run) int { return cmp.Compare(a.Addr, b.Addr) })
	out := runs[:0]
	for _, r := range runs {
		if n := len(out); n > 0 && r.Addr <= out[n-1].End() {
			if r.End() > out[n-1].End() {
				out[n-1].Npages = (r.End() - out[n-1].Addr) / PageSize
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// refusal is the reason in a page server's ERROR message: the server sends
// its own error text, which may start with ErrRefused's words already, and
// the client wraps ErrRefused itself, so the prefix would read twice.
func refusal(msg string) string {
	return strings.TrimPrefix(msg, ErrRefused.Error()+": ")
}
