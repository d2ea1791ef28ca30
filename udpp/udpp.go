package udpp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Defaults of [ClientConfig].
const (
	DefaultLocalPort  = 38374
	DefaultInterval   = 200 * time.Millisecond
	DefaultStatsEvery = time.Second
	DefaultDrain      = time.Second
)

// AnyPort as [ClientConfig.LocalPort] lets the kernel choose the port.
const AnyPort = -1

const (
	pingPrefix = "This is ping packet "
	pongPrefix = "This is pong packet "
	maxDgram   = 1500
)

// ErrMalformed reports a datagram that is not "This is p?ng packet N".
var ErrMalformed = errors.New("malformed packet")

// parseSeq returns N from "<prefix>N" (a trailing NUL or newline is allowed,
// as C senders often include one).
func parseSeq(b []byte, prefix string) (uint64, error) {
	b = bytes.TrimRight(b, "\x00\n")
	rest, ok := bytes.CutPrefix(b, []byte(prefix))
	if !ok {
		return 0, ErrMalformed
	}
	n, err := strconv.ParseUint(string(rest), 10, 64)
	if err != nil || n == 0 {
		return 0, ErrMalformed
	}
	return n, nil
}

// lineWriter writes one line per Write and flushes writers that buffer.
type lineWriter struct{ w io.Writer }

func (l lineWriter) printf(format string, args ...any) error {
	if _, err := fmt.Fprintf(l.w, format+"\n", args...); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if f, ok := l.w.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("flush output: %w", err)
		}
	}
	return nil
}

// Server answers pings on one UDP socket.
type Server struct {
	conn *net.UDPConn
}

// Listen opens the server's socket on 0.0.0.0:port (port 0: any).
func Listen(port int) (*Server, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero, Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen on udp port %d: %w", port, err)
	}
	return &Server{conn: conn}, nil
}

// Addr is the server socket's local address.
func (s *Server) Addr() netip.AddrPort {
	return s.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close closes the socket; Serve returns.
func (s *Server) Close() error { return s.conn.Close() }

// Serve answers pings until ctx is done (then it returns ctx.Err()) or an
// error; it closes the socket on return.
func (s *Server) Serve(ctx context.Context, out io.Writer) error {
	defer s.conn.Close()
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	lw := lineWriter{out}
	buf := make([]byte, maxDgram)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("receive on %s: %w", s.Addr(), err)
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		data := buf[:n]
		if err := lw.printf("Received ping packet from %s", from); err != nil {
			return err
		}
		if err := lw.printf("Data: %s", bytes.TrimRight(data, "\x00\n")); err != nil {
			return err
		}
		seq, err := parseSeq(data, pingPrefix)
		if err != nil {
			if err := lw.printf("Ignoring malformed packet"); err != nil {
				return err
			}
			continue
		}
		if err := lw.printf("Sending pong packet %d", seq); err != nil {
			return err
		}
		if _, err := s.conn.WriteToUDPAddrPort([]byte(pongPrefix+strconv.FormatUint(seq, 10)), from); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The sender may be gone (ICMP errors); keep serving others.
			continue
		}
	}
}

// RunServer serves pings on 0.0.0.0:port until ctx is done.
func RunServer(ctx context.Context, port int, out io.Writer) error {
	s, err := Listen(port)
	if err != nil {
		return err
	}
	return s.Serve(ctx, out)
}

// ClientConfig configures a client. Zero fields take the defaults.
type ClientConfig struct {
	// Server is the server's host name or address; Port its port.
	Server string
	Port   int
	// LocalPort is the port the client binds on 0.0.0.0; default
	// [DefaultLocalPort], [AnyPort] for a kernel-chosen one.
	LocalPort int
	// Interval between pings; default [DefaultInterval].
	Interval time.Duration
	// NoConnect leaves the socket unconnected (sendto/recvfrom). By default
	// it is connect(2)ed to the server, so its local address is the
	// specific source address toward the server, and it only receives
	// from the server.
	NoConnect bool
	// Count is the number of pings to send; 0 is forever. With Count the
	// client stops when the pong for the last ping arrived, or Drain after
	// sending it, whichever is first.
	Count int
	// Drain is how long to wait for pongs after the last ping; default
	// [DefaultDrain].
	Drain time.Duration
	// StatsEvery is the period of stats lines; default [DefaultStatsEvery].
	StatsEvery time.Duration
	// StatsNow, when it delivers a value, prints a stats line at once (the
	// command feeds it SIGUSR1).
	StatsNow <-chan os.Signal
}

// Stats are the client's counters; see the package doc for definitions.
type Stats struct {
	Sent, Received, Lost, Duplicated, Reordered uint64
}

// String is the stats line, without newline.
func (s Stats) String() string {
	return fmt.Sprintf("stats sent=%d received=%d lost=%d duplicated=%d reordered=%d",
		s.Sent, s.Received, s.Lost, s.Duplicated, s.Reordered)
}

// tracker keeps the counters; it is pure logic, fed by the client loop.
type tracker struct {
	st      Stats
	got     []uint64 // bitset of N whose pong arrived; bit N-1
	highest uint64   // highest N whose pong arrived
}

func (t *tracker) sent() uint64 { t.st.Sent++; return t.st.Sent }

// pong accounts a pong for n; false if n was never sent.
func (t *tracker) pong(n uint64) bool {
	if n == 0 || n > t.st.Sent {
		return false
	}
	i, bit := (n-1)/64, uint64(1)<<((n-1)%64)
	for uint64(len(t.got)) <= i {
		t.got = append(t.got, 0)
	}
	if t.got[i]&bit != 0 {
		t.st.Duplicated++
		return true
	}
	t.got[i] |= bit
	t.st.Received++
	if n > t.highest {
		t.st.Lost += n - t.highest - 1
		t.highest = n
	} else {
		t.st.Lost--
		t.st.Reordered++
	}
	return true
}

// finish counts every ping without a pong as lost.
func (t *tracker) finish() {
	if t.st.Sent > t.highest {
		t.st.Lost += t.st.Sent - t.highest
		t.highest = t.st.Sent
	}
}

// Client pings a server from one UDP socket.
type Client struct {
	cfg    ClientConfig
	conn   *net.UDPConn
	server netip.AddrPort
}

// NewClient resolves the server and opens the socket (bound, and connected
// unless cfg.NoConnect). Run it, or Close it.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.LocalPort == 0 {
		cfg.LocalPort = DefaultLocalPort
	} else if cfg.LocalPort == AnyPort {
		cfg.LocalPort = 0
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.StatsEvery <= 0 {
		cfg.StatsEvery = DefaultStatsEvery
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	hostport := net.JoinHostPort(cfg.Server, strconv.Itoa(cfg.Port))
	raddr, err := net.ResolveUDPAddr("udp4", hostport)
	if err != nil {
		return nil, fmt.Errorf("resolve server %s: %w", hostport, err)
	}
	laddr := &net.UDPAddr{IP: net.IPv4zero, Port: cfg.LocalPort}
	var conn *net.UDPConn
	if cfg.NoConnect {
		conn, err = net.ListenUDP("udp4", laddr)
	} else {
		conn, err = net.DialUDP("udp4", laddr, raddr)
	}
	if err != nil {
		return nil, fmt.Errorf("open udp socket on port %d to %s: %w", cfg.LocalPort, raddr, err)
	}
	return &Client{cfg: cfg, conn: conn, server: raddr.AddrPort()}, nil
}

// LocalAddr is the socket's local address (with connect, the source
// address toward the server).
func (c *Client) LocalAddr() netip.AddrPort {
	return c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Close closes the socket.
func (c *Client) Close() error { return c.conn.Close() }

type pongMsg struct {
	seq  uint64
	from netip.AddrPort
}

// Run pings until Count pings are done (then it returns nil) or ctx is done
// (then ctx.Err()); either way it prints a last stats line and returns the
// counters. It closes the socket on return.
func (c *Client) Run(ctx context.Context, out io.Writer) (Stats, error) {
	lw := lineWriter{out}
	var t tracker
	pongs := make(chan pongMsg)
	errc := make(chan error, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(done)
		c.conn.Close()
		wg.Wait()
	}()
	wg.Go(func() { c.receive(pongs, errc, done) })

	send := func() error {
		n := t.sent()
		msg := []byte(pingPrefix + strconv.FormatUint(n, 10))
		var err error
		if c.cfg.NoConnect {
			_, err = c.conn.WriteToUDPAddrPort(msg, c.server)
		} else {
			_, err = c.conn.Write(msg)
		}
		if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("send ping %d to %s: %w", n, c.server, err)
		}
		return nil
	}
	finish := func(err error) (Stats, error) {
		t.finish()
		if perr := lw.printf("%s", t.st); err == nil {
			err = perr
		}
		return t.st, err
	}

	sendTick := time.NewTicker(c.cfg.Interval)
	defer sendTick.Stop()
	statsTick := time.NewTicker(c.cfg.StatsEvery)
	defer statsTick.Stop()
	var drain <-chan time.Time
	count := uint64(c.cfg.Count)
	sendOne := func() error {
		if err := send(); err != nil {
			return err
		}
		if count > 0 && t.st.Sent == count {
			sendTick.Stop()
			drain = time.After(c.cfg.Drain)
		}
		return nil
	}
	if err := sendOne(); err != nil {
		return finish(err)
	}
	for {
		select {
		case <-ctx.Done():
			return finish(ctx.Err())
		case <-sendTick.C:
			if err := sendOne(); err != nil {
				return finish(err)
			}
		case p := <-pongs:
			if err := lw.printf("pong %d from %s", p.seq, p.from); err != nil {
				return finish(err)
			}
			t.pong(p.seq)
			if count > 0 && t.highest == count {
				return finish(nil)
			}
		case <-statsTick.C:
			if err := lw.printf("%s", t.st); err != nil {
				return finish(err)
			}
		case <-c.cfg.StatsNow:
			if err := lw.printf("%s", t.st); err != nil {
				return finish(err)
			}
		case <-drain:
			return finish(nil)
		case err := <-errc:
			return finish(err)
		}
	}
}

// receive reads pongs until the socket is closed.
func (c *Client) receive(pongs chan<- pongMsg, errc chan<- error, done <-chan struct{}) {
	buf := make([]byte, maxDgram)
	for {
		n, from, err := c.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			// A connected UDP socket reports ICMP port unreachable as
			// ECONNREFUSED on the next receive (see udp(7)): the server
			// is not up yet or restarting; keep going.
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue
			}
			select {
			case <-done:
			default:
				errc <- fmt.Errorf("receive on %s: %w", c.LocalAddr(), err)
			}
			return
		}
		seq, err := parseSeq(buf[:n], pongPrefix)
		if err != nil {
			continue
		}
		select {
		case pongs <- pongMsg{seq, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())}:
		case <-done:
			return
		}
	}
}

// RunClient is NewClient followed by Run.
func RunClient(ctx context.Context, cfg ClientConfig, out io.Writer) (Stats, error) {
	c, err := NewClient(cfg)
	if err != nil {
		return Stats{}, err
	}
	return c.Run(ctx, out)
}
