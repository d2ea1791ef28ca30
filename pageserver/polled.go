package pageserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lazycr/lazycr/uffd"
)

// A polled replies connection is read by the lazy-pages handler itself
// (uffd.PolledSource): its Run loop polls the socket together with the
// uffds and, when it is readable, reads and installs the answers at once.
// A fault's answer then reaches the faulting thread without a reader
// goroutine woken by the netpoller, a channel, the forwarding goroutine and
// an eventfd (each a wake-up that costs tens to hundreds of µs when the
// push keeps the CPUs busy).
//
// Only plain TCP connections are polled (TLS decrypts in its own reader);
// the client's readLoop serves every other replies connection, as before.

// polledReplies is one replies connection read by the handler.
type polledReplies struct {
	w    *wire
	rc   syscall.RawConn
	fd   int         // for poll(2) only; reads go through rc
	rd   replyReader // touched only by the ReadReplies caller
	dead chan struct{}
	once sync.Once
	err  error // why it ended, set before dead is closed
}

// end closes the connection for err (once) and tells serveConn.
func (pr *polledReplies) end(err error) {
	pr.once.Do(func() {
		pr.err = err
		pr.w.conn.Close()
		close(pr.dead)
	})
}

// PollReplies makes the replies connections opened from now on read by the
// caller through ReplyFD and ReadReplies (uffd.PolledSource); kick is
// called whenever ReplyFD changes. It reports true: a connection that
// cannot be polled (TLS) is still read by the client's own reader.
func (c *Client) PollReplies(kick func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pollKick = kick
	return true
}

// ReplyFD returns the socket of the polled replies connection, -1 if none
// is open. The number is for poll(2) only: the connection may be closed
// (and the number reused) at any time, which costs at most a spurious
// wake-up, after which the caller asks again.
func (c *Client) ReplyFD() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.prw == nil {
		return -1
	}
	return c.prw.fd
}

// polledConn turns rw into a polled replies connection if the caller asked
// for polling and rw can be polled; nil otherwise. Called with c.mu held.
func (c *Client) polledConn(rw *wire) *polledReplies {
	if c.pollKick == nil || rw.br.Buffered() > 0 {
		return nil
	}
	tc, ok := rw.conn.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return nil
	}
	return &polledReplies{w: rw, rc: rc, fd: fd, dead: make(chan struct{})}
}

// handlerError carries install's error out of ReadReplies' frame loop.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// ReadReplies reads what arrived on the polled replies connection without
// blocking and calls install for each answer (uffd.PolledSource). A
// failing connection is closed: serveConn then asks the pending requests
// again on the session's connection.
func (c *Client) ReadReplies(install func(uffd.PageData) error) error {
	c.mu.Lock()
	pr := c.prw
	c.mu.Unlock()
	if pr == nil {
		return nil
	}
	for {
		buf := pr.rd.space()
		var n int
		var rerr error
		err := pr.rc.Read(func(fd uintptr) bool {
			for {
				n, rerr = unix.Read(int(fd), buf)
				if !errors.Is(rerr, unix.EINTR) {
					return true // never wait: the caller polls
				}
			}
		})
		switch {
		case err != nil:
		case errors.Is(rerr, unix.EAGAIN):
			return nil
		case rerr != nil:
			err = os.NewSyscallError("read", rerr)
		case n == 0:
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			pr.end(fmt.Errorf("read from page server %s: %w", c.addr, err))
			return nil
		}
		pr.rd.n += n
		err = pr.rd.frames(func(h *Header, p []byte) error { return c.reply(h, p, install) })
		var he handlerError
		if errors.As(err, &he) {
			return he.err
		}
		if err != nil {
			pr.end(fmt.Errorf("read from page server %s: %w", c.addr, err))
			return nil
		}
		if n < len(buf) {
			return nil // drained: a short read leaves nothing behind
		}
	}
}

// reply handles one frame of a polled replies connection: PAGES and ZERO
// answers go to install, an ERROR with an id refuses one request; anything
// else ends the connection.
func (c *Client) reply(h *Header, p []byte, install func(uffd.PageData) error) error {
	if h.ID == 0 && h.Type != TypeError {
		return fmt.Errorf("%w: %s without a request id on the replies connection", ErrProtocol, h.Type)
	}
	var d uffd.PageData
	switch h.Type {
	case TypePages:
		addr, n, err := DecodePagesAddr(p[:pagesHead], h.Length, c.lazy)
		if err != nil {
			return err
		}
		d = uffd.PageData{Addr: addr, Data: p[pagesHead:]}
		c.received(h.ID, uint64(n), uint64(len(d.Data)))
	case TypeZero:
		z, err := DecodeZero(p, c.lazy)
		if err != nil {
			return err
		}
		d = uffd.PageData{Addr: z.Addr, Zero: int(z.Npages)}
		c.received(h.ID, uint64(z.Npages), 0)
		c.mu.Lock()
		c.stats.ZeroPages += uint64(z.Npages)
		c.mu.Unlock()
	case TypeError:
		msg, err := DecodeMessage(p)
		if err != nil {
			return err
		}
		if h.ID == 0 {
			return fmt.Errorf("page server %s: %w: %s", c.addr, ErrRefused, refusal(*msg))
		}
		c.mu.Lock()
		delete(c.pending, h.ID)
		c.stats.Refused++
		c.mu.Unlock()
		c.log.Error().Uint64("request", h.ID).Msg("page server refused a request: " + *msg)
		return nil
	default:
		return fmt.Errorf("%w: unexpected %s on the replies connection", ErrProtocol, h.Type)
	}
	if err := install(d); err != nil {
		return handlerError{err}
	}
	return nil
}

// replyReader cuts whole frames out of the bytes read from a connection:
// buf[off:n] holds bytes read and not yet handed out.
type replyReader struct {
	buf    []byte
	off, n int
}

// replyBuf is the replyReader's first buffer: many answers of a few pages.
const replyBuf = 256 << 10

// space returns where the next read goes: the rest of the buffer, after
// moving a partial frame to its start or growing it to hold a whole frame
// (at most HeaderSize+MaxPayload bytes: DecodeHeader refuses more).
func (r *replyReader) space() []byte {
	if r.buf == nil {
		r.buf = make([]byte, replyBuf)
	}
	if r.off == r.n {
		r.off, r.n = 0, 0
	}
	need := HeaderSize
	if r.n-r.off >= HeaderSize {
		if h, err := DecodeHeader(r.buf[r.off : r.off+HeaderSize]); err == nil {
			need += int(h.Length)
		}
	}
	if r.off+need > len(r.buf) || r.n == len(r.buf) {
		if size := max(need, r.n-r.off+HeaderSize); size > len(r.buf) {
			nb := make([]byte, max(size, 2*len(r.buf)))
			r.n = copy(nb, r.buf[r.off:r.n])
			r.buf = nb
		} else {
			r.n = copy(r.buf, r.buf[r.off:r.n])
		}
		r.off = 0
	}
	return r.buf[r.n:]
}

// frames calls fn for each whole frame in the buffer, in order, and
// consumes it; it stops at fn's first error or a header DecodeHeader
// refuses. The payload is valid only during fn.
func (r *replyReader) frames(fn func(h *Header, p []byte) error) error {
	for r.n-r.off >= HeaderSize {
		h, err := DecodeHeader(r.buf[r.off : r.off+HeaderSize])
		if err != nil {
			return err
		}
		end := r.off + HeaderSize + int(h.Length)
		if end > r.n {
			return nil
		}
		p := r.buf[r.off+HeaderSize : end]
		r.off = end
		if err := fn(h, p); err != nil {
			return err
		}
	}
	return nil
}
