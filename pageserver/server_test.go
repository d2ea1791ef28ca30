package pageserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lazycr/lazycr/uffd"
)

func TestServeImagesRequestsPushDone(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	if w := c.Welcome(); w.LazyPages != 46 || len(w.Runs) != 3 {
		t.Fatalf("WELCOME %+v: want 46 pages in 3 merged runs", w)
	}
	got, err := c.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(got, files, bytes.Equal) {
		t.Fatalf("images differ: got %d files", len(got))
	}
	// A request before resume is queued and answered after it; one spanning
	// two adjacent runs is answered in two frames.
	span := testBase + 6*PageSize
	if err := c.Request(span, 4); err != nil {
		t.Fatal(err)
	}
	if err := c.Request(testBase+12*PageSize, 1); err == nil || !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Request outside the lazy runs: %v, want ErrOutOfRange", err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	counts := collect(t, c, mem, lazyPages(lazy), nil)
	for c.Stats().RequestPages < 4 { // the answer may come after the push
		var pd PageData
		select {
		case pd = <-c.Pages():
		case pd = <-c.Replies():
		}
		if pd.Err != nil {
			t.Fatal(pd.Err)
		}
		if pd.Release != nil {
			pd.Release()
		}
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.err != nil || !r.res.Done {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
	st := c.Stats()
	if st.RequestPages != 4 || r.res.RequestPages != 4 || r.res.Requests != 1 {
		t.Errorf("request pages: client %+v, server %+v; want 4", st, r.res)
	}
	// The push may have sent the requested pages before the request came:
	// each page at least once, at most twice.
	for a, n := range counts {
		if n > 2 {
			t.Errorf("page %#x arrived %d times on an unbroken connection", a, n)
		}
	}
	if r.res.PushPages+r.res.RequestPages < 46 || r.res.AckedPages != 46 {
		t.Errorf("server result %+v: want 46 pages sent and acked", r.res)
	}
	drain(t, c)
}

// TestAckedNeverPushed acks pages before RESUMED: the push then sends
// exactly the others.
func TestAckedNeverPushed(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	acked := []uffd.Run{{Addr: testBase + 2*PageSize, Npages: 8}, {Addr: testBase + 25*PageSize, Npages: 15}, {Addr: testBase + 63*PageSize, Npages: 1}}
	rawSend(t, w, TypeAck, 0, (&Ack{Runs: acked}).Append(nil, mustRanges(t, lazy)))
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	want := lazyPages(lazy)
	for a := range lazyPages(acked) {
		delete(want, a)
	}
	got := map[uint64]bool{}
	for len(got) < len(want) {
		h, p := rawExpect(t, w, TypePages)
		if h.ID != 0 {
			t.Fatalf("pushed PAGES with id %d", h.ID)
		}
		m, err := DecodePages(p, nil)
		if err == nil || !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("DecodePages with no ranges: %v", err)
		}
		addr := binary.LittleEndian.Uint64(p[4:])
		for i := 0; i < (len(p)-pagesHead)/PageSize; i++ {
			a := addr + uint64(i)*PageSize
			if !want[a] || got[a] {
				t.Fatalf("pushed page %#x: acked or sent twice", a)
			}
			if !bytes.Equal(p[pagesHead+i*PageSize:pagesHead+(i+1)*PageSize], mem.page(a)) {
				t.Fatalf("page %#x has the wrong contents", a)
			}
			got[a] = true
		}
		_ = m
	}
	rawSend(t, w, TypeDone, 0, nil)
	rawExpect(t, w, TypeDone) // nothing else was pushed before it
	if r := wait(); r.err != nil || r.res.PushPages != uint64(len(want)) {
		t.Fatalf("Serve: %+v, %v; want %d pushed", r.res, r.err, len(want))
	}
}

// TestZeroPagesSentAsZero: pages that read as all zero bytes go out as
// ZERO frames, pushed or answering a request (with its id), and only
// they: every other page comes as PAGES with its bytes.
func TestZeroPagesSentAsZero(t *testing.T) {
	mem, lazy, files := testSetup()
	isZero := map[uint64]bool{}
	for _, k := range []uint64{0, 1, 2, 9, 55, 57, 63} {
		isZero[testBase+k*PageSize] = true
	}
	for k := uint64(20); k < 40; k++ { // a whole run
		isZero[testBase+k*PageSize] = true
	}
	for a := range isZero {
		clear(mem.page(a))
	}
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	ranges := mustRanges(t, lazy)
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	rawSend(t, w, TypeRequest, 7, (&Request{Addr: testBase + 54*PageSize, Npages: 5}).Append(nil))
	want := lazyPages(lazy)
	got := map[uint64]bool{}
	var answered, zeroSent uint64
	for len(got) < len(want) || answered < 5 {
		h, p, err := w.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		addr, n, data := frameRun(t, h, p, ranges)
		if h.Type == TypeZero {
			zeroSent += uint64(n)
		}
		for i := range len(data) / PageSize {
			if a := addr + uint64(i)*PageSize; !bytes.Equal(data[i*PageSize:(i+1)*PageSize], mem.page(a)) {
				t.Fatalf("page %#x has the wrong contents", a)
			}
		}
		for i := range n {
			a := addr + uint64(i)*PageSize
			if isZero[a] != (h.Type == TypeZero) {
				t.Errorf("page %#x (all zeros: %v) came in a %s frame", a, isZero[a], h.Type)
			}
			got[a] = true
		}
		if h.ID == 7 {
			answered += uint64(n)
		} else if h.ID != 0 {
			t.Fatalf("%s with id %d", h.Type, h.ID)
		}
	}
	rawSend(t, w, TypeDone, 0, nil)
	rawExpect(t, w, TypeDone)
	r := wait()
	if r.err != nil || r.res.ZeroPages != zeroSent || zeroSent < uint64(len(isZero)) {
		t.Fatalf("Serve: %+v, %v; want %d zero pages (%d sent)", r.res, r.err, len(isZero), zeroSent)
	}
	if sent := r.res.PushPages + r.res.RequestPages; r.res.PushBytes+r.res.RequestBytes != (sent-zeroSent)*PageSize {
		t.Errorf("Serve: %+v: bytes are not those of the %d pages sent with data", r.res, sent-zeroSent)
	}
}

func TestRequestOutsideLazyRuns(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	bad := testBase + 11*PageSize // 11 is lazy, 12 is not
	rawSend(t, w, TypeRequest, 7, (&Request{Addr: bad, Npages: 2}).Append(nil))
	h, p := rawExpect(t, w, TypeError)
	if h.ID != 7 || !strings.Contains(string(p), "0x7f000000b000-0x7f000000d000") {
		t.Fatalf("ERROR id %d %q: want id 7 naming the range", h.ID, p)
	}
	good := testBase + 30*PageSize
	rawSend(t, w, TypeRequest, 8, (&Request{Addr: good, Npages: 3}).Append(nil))
	h, p = rawExpect(t, w, TypePages)
	ranges, _ := NewRanges(lazy)
	m, err := DecodePages(p, ranges)
	if err != nil || h.ID != 8 || m.Addr != good || !bytes.Equal(m.Data, mem.data[30*PageSize:33*PageSize]) {
		t.Fatalf("answer to request 8: id %d, %v", h.ID, err)
	}
	rawSend(t, w, TypeDone, 0, nil)
	rawExpect(t, w, TypeDone)
	if r := wait(); r.err != nil || r.res.Refused != 1 || r.res.Requests != 1 {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
}

// TestMalformedFrameEndsConnection: a frame that lies about its length
// ends the connection (before resume: Serve fails, nothing crashes).
func TestMalformedFrameEndsConnection(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	hb := Header{Type: TypeAck, Length: MaxPayload + 1}.Append(nil)
	if err := w.writeRaw(hb); err != nil {
		t.Fatal(err)
	}
	h, p, err := w.readFrame()
	if err == nil {
		// Before RESUMED the source first says why.
		if h.Type != TypeError || !strings.Contains(string(p), "exceeds") {
			t.Fatalf("got %s %q after an oversized frame, want ERROR naming it", h.Type, p)
		}
		_, _, err = w.readFrame()
	}
	if err == nil {
		t.Fatal("connection still open after an oversized frame")
	}
	if r := wait(); !errors.Is(r.err, ErrLostBeforeResume) || !errors.Is(r.err, ErrProtocol) {
		t.Fatalf("Serve: %v, want ErrLostBeforeResume and ErrProtocol", r.err)
	}
}

func TestTokenRefused(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, Token: []byte("s3cret")})
	w := rawDial(t, l.Addr().String())
	if err := w.writeFrame(TypeHello, 0, (&Hello{Version: ProtocolVersion, Token: []byte("guess")}).Append(nil)); err != nil {
		t.Fatal(err)
	}
	w.writeFrame(TypeGetImages, 0) // may fail: the server closes
	h, p := rawExpect(t, w, TypeError)
	if h.ID != 0 || !strings.Contains(string(p), "token") {
		t.Fatalf("ERROR %q: want one about the token", p)
	}
	if rest, err := io.ReadAll(w.br); len(rest) != 0 {
		t.Fatalf("%d more bytes after the refusal (%v)", len(rest), err)
	}
	_, err := Dial(context.Background(), l.Addr().String(), ClientConfig{Token: []byte("nope")})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("Dial with a wrong token: %v, want ErrRefused", err)
	}
	if n := strings.Count(err.Error(), ErrRefused.Error()); n != 1 {
		t.Fatalf("Dial with a wrong token: %q says %q %d times, want once", err, ErrRefused, n)
	}
	c := dialClient(t, l.Addr().String(), ClientConfig{Token: []byte("s3cret")})
	got, err := c.Images(context.Background())
	if err != nil || len(got) != len(files) {
		t.Fatalf("Images: %d files, %v", len(got), err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	collect(t, c, mem, lazyPages(lazy), nil)
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.err != nil || !r.res.Done {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
}

func TestCutAfterResumedReconnects(t *testing.T) {
	mem, lazy, files := testSetup()
	// The last run is only served once the connection is cut.
	gate := &gatedMemory{fakeMemory: mem, from: testBase + 50*PageSize, gate: make(chan struct{})}
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: gate, ReconnectTimeout: time.Minute})
	c := dialClient(t, l.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute})
	first := <-l.conns
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	counts := collect(t, c, mem, lazyPages(lazy), func() {
		first.Close() // cut under the server's feet
		close(gate.gate)
		// A request while the connection is down is sent again after
		// the reconnect.
		if err := c.Request(testBase+60*PageSize, 2); err != nil {
			t.Error(err)
		}
	})
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.err != nil || !r.res.Done || r.res.Reconnects != 1 {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
	if st := c.Stats(); st.Reconnects != 1 {
		t.Errorf("client stats %+v: want 1 reconnect", st)
	}
	if counts[testBase+60*PageSize] == 0 {
		t.Error("page 60 never arrived")
	}
}

type gatedMemory struct {
	*fakeMemory
	from uint64
	gate chan struct{}
}

func (m *gatedMemory) ReadAt(b []byte, addr uint64) error {
	if addr >= m.from {
		<-m.gate
	}
	return m.fakeMemory.ReadAt(b, addr)
}

func TestStrangerRefusedWhileSessionWaits(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, ReconnectTimeout: time.Minute})
	w := rawDial(t, l.Addr().String())
	welcome := mustWelcome(t, w, 0)
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	w.conn.Close()
	for _, session := range []uint64{0, welcome.Session + 1} {
		s := rawDial(t, l.Addr().String())
		if h, p := rawHello(t, s, session, nil); h.Type != TypeError {
			t.Fatalf("stranger with session %#x got %s", session, h.Type)
		} else {
			t.Logf("stranger refused: %s", p)
		}
	}
	back := rawDial(t, l.Addr().String())
	if got := mustWelcome(t, back, welcome.Session); got.Session != welcome.Session {
		t.Fatalf("reconnected to session %#x, want %#x", got.Session, welcome.Session)
	}
	rawSend(t, back, TypeDone, 0, nil)
	for {
		h, _, err := back.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == TypeDone {
			break
		}
	}
	if r := wait(); r.err != nil || r.res.Reconnects != 1 {
		t.Fatalf("Serve: %+v, %v", r.res, r.err)
	}
}

func TestCutBeforeResumed(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, ReconnectTimeout: time.Minute})
	c := dialClient(t, l.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute})
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	(<-l.conns).Close()
	if r := wait(); !errors.Is(r.err, ErrLostBeforeResume) {
		t.Fatalf("Serve: %v, want ErrLostBeforeResume", r.err)
	}
	if err := c.Resumed(); err == nil {
		t.Fatal("Resumed succeeded on a cut connection")
	}
}

func TestFailBeforeResumed(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	c.Fail("restore of pid 42: no such file")
	r := wait()
	if !errors.Is(r.err, ErrRestoreFailed) || !strings.Contains(r.err.Error(), "no such file") {
		t.Fatalf("Serve: %v, want ErrRestoreFailed with the reason", r.err)
	}
}

func TestGaveUp(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, ReconnectTimeout: 50 * time.Millisecond})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	acked := []uffd.Run{{Addr: testBase + 4*PageSize, Npages: 6}, {Addr: testBase + 20*PageSize, Npages: 20}}
	rawSend(t, w, TypeAck, 0, (&Ack{Runs: acked}).Append(nil, mustRanges(t, lazy)))
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	w.conn.Close()
	r := wait()
	if !errors.Is(r.err, ErrGaveUp) || r.res.AckedPages != 26 {
		t.Fatalf("Serve: %+v, %v; want ErrGaveUp with 26 acked pages", r.res, r.err)
	}
}

// TestAdoptedContinuesSession: a second server, Adopted with the session
// of a first one that gave up, accepts only that session's reconnect,
// pushes at once without a new RESUMED, and ends on DONE.
func TestAdoptedContinuesSession(t *testing.T) {
	mem, lazy, files := testSetup()
	const session = 0x1234_5678_9abc
	first, l1, wait1 := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, Session: session, ReconnectTimeout: 50 * time.Millisecond})
	c := dialClient(t, l1.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute})
	conn1 := <-l1.conns
	if c.Welcome().Session != session {
		t.Fatalf("WELCOME session %#x, want the configured %#x", c.Welcome().Session, uint64(session))
	}
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	if !first.Resumed() {
		t.Fatal("first server did not hear RESUMED")
	}
	// The first server dies: the client redials the same address until the
	// adopter listens there.
	addr := l1.Addr().String()
	l1.Close()
	conn1.Close()
	if r := wait1(); !errors.Is(r.err, ErrGaveUp) {
		t.Fatalf("first server: %+v, %v; want ErrGaveUp", r.res, r.err)
	}
	var l2 net.Listener
	for deadline := time.Now().Add(10 * time.Second); ; {
		var err error
		if l2, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen again on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	cfg := ServerConfig{Files: files, Lazy: lazy, Memory: mem, Session: session, Adopted: true, ReconnectTimeout: time.Minute, Log: zerolog.Nop()}
	second := NewServer(cfg)
	ch := make(chan served, 1)
	go func() {
		res, err := second.Serve(context.Background(), l2)
		ch <- served{res, err}
	}()
	// A stranger's new session is refused.
	w := rawDial(t, addr)
	if h, p := rawHello(t, w, 0, nil); h.Type != TypeError {
		t.Fatalf("adopted server answered a new session with %s %q, want ERROR", h.Type, p)
	}
	collect(t, c, mem, lazyPages(lazy), nil)
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	var r served
	select {
	case r = <-ch:
	case <-time.After(20 * time.Second):
		t.Fatal("adopted Serve did not return after DONE")
	}
	if r.err != nil || !r.res.Done || r.res.Reconnects != 1 {
		t.Fatalf("adopted Serve: %+v, %v; want DONE after 1 reconnect", r.res, r.err)
	}
	drain(t, c)
}

// TestAdoptedGivesUp: an adopted server whose target never comes back
// gives up after ReconnectTimeout.
func TestAdoptedGivesUp(t *testing.T) {
	mem, lazy, files := testSetup()
	_, _, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, Session: 7, Adopted: true, ReconnectTimeout: 20 * time.Millisecond})
	if r := wait(); !errors.Is(r.err, ErrGaveUp) {
		t.Fatalf("Serve: %v, want ErrGaveUp", r.err)
	}
}

// flakyListener fails its first Accept calls with EMFILE.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	fail := l.fails > 0
	if fail {
		l.fails--
	}
	l.mu.Unlock()
	if fail {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptRetriesTemporaryErrors: EMFILE from Accept does not end the
// accept loop.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	mem, lazy, files := testSetup()
	l := &flakyListener{Listener: listen(t), fails: 3}
	s := NewServer(ServerConfig{Files: files, Lazy: lazy, Memory: mem, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := make(chan error, 1)
	go func() {
		_, err := s.Serve(ctx, l)
		ch <- err
	}()
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	rawSend(t, w, TypeFail, 0, message("test over"))
	if err := <-ch; !errors.Is(err, ErrRestoreFailed) {
		t.Fatalf("Serve: %v, want ErrRestoreFailed", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fails != 0 {
		t.Fatalf("%d EMFILE errors left unseen", l.fails)
	}
}

func TestBadConfig(t *testing.T) {
	mem, _, _ := testSetup()
	for name, cfg := range map[string]ServerConfig{
		"overlap":   {Memory: mem, Lazy: []uffd.Run{{Addr: testBase, Npages: 4}, {Addr: testBase + PageSize, Npages: 1}}},
		"unaligned": {Memory: mem, Lazy: []uffd.Run{{Addr: testBase + 1, Npages: 4}}},
		"file name": {Memory: mem, Files: map[string][]byte{"../x": nil}},
		"no memory": {Lazy: []uffd.Run{{Addr: testBase, Npages: 4}}},
	} {
		l := listen(t)
		if _, err := NewServer(cfg).Serve(context.Background(), l); err == nil {
			t.Errorf("%s: Serve accepted a bad configuration", name)
		}
	}
}

// TestAbortAfterResumed: ABORT ends Serve at once with ErrTargetAborted
// (no wait for a reconnect: the target killed its copy).
func TestAbortAfterResumed(t *testing.T) {
	mem, lazy, files := testSetup()
	s, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, ReconnectTimeout: time.Hour})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	rawSend(t, w, TypeAbort, 0, message("user pressed Ctrl-C twice"))
	r := wait()
	if !errors.Is(r.err, ErrTargetAborted) || !strings.Contains(r.err.Error(), "Ctrl-C") {
		t.Fatalf("Serve: %v, want ErrTargetAborted with the reason", r.err)
	}
	if !s.Resumed() {
		t.Error("Resumed() false after RESUMED")
	}
}

// TestServeInterruptedBeforeTarget: an interrupt before any target came
// says so, with no "session 0x0" that means nothing to a user.
func TestServeInterruptedBeforeTarget(t *testing.T) {
	mem, lazy, files := testSetup()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = NewServer(ServerConfig{Files: files, Lazy: lazy, Memory: mem, Log: zerolog.Nop()}).Serve(ctx, l)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Serve with a cancelled context: %v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "0x0") || !strings.Contains(err.Error(), "target") {
		t.Fatalf("Serve interrupted before a target: %q, want it to say no target came, without a session id", err)
	}
}

// TestPushCreditOnRelease: the server pushes at most PushWindow bytes that
// the consumer has not released (installed); releasing them lets the push
// go on to the end.
func TestPushCreditOnRelease(t *testing.T) {
	const pages = 3 * PushWindow / PageSize
	mem := &fakeMemory{base: testBase, data: bytes.Repeat([]byte{0x5a}, pages*PageSize)}
	lazy := []uffd.Run{{Addr: testBase, Npages: pages}}
	srv, l, wait := startServer(t, ServerConfig{Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	var held []PageData
	got := 0
	timeout := time.After(20 * time.Second)
	for got < PushWindow {
		select {
		case pd := <-c.Pages():
			if pd.Err != nil {
				t.Fatal(pd.Err)
			}
			got += len(pd.Data) + pd.Zero*PageSize
			held = append(held, pd)
		case <-timeout:
			t.Fatalf("%d bytes pushed, want the %d of the window", got, PushWindow)
		}
	}
	// The server counts a frame after its write returns, which may be
	// after the client read it: wait for the count (bounded).
	var pushed int64
	for deadline := time.Now().Add(20 * time.Second); ; {
		srv.mu.Lock()
		pushed = int64(srv.res.PushBytes)
		srv.mu.Unlock()
		if pushed >= PushWindow || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	if got != PushWindow || pushed != PushWindow {
		t.Fatalf("with nothing released: %d bytes received, %d pushed; want the window, %d", got, pushed, PushWindow)
	}
	for _, pd := range held {
		c.Ack(pd.Addr, len(pd.Data)/PageSize)
		pd.Release()
	}
	want := lazyPages(lazy)
	for a := range want {
		if a < testBase+PushWindow {
			delete(want, a)
		}
	}
	collect(t, c, mem, want, nil)
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.err != nil || r.res.PushBytes != pages*PageSize {
		t.Fatalf("Serve: %+v, %v; want every page pushed once", r.res, r.err)
	}
}

// TestRepliesConnection: after RESUMED the client opens the replies
// connection and requests are answered on it; when it is cut, the client
// asks again on the session's connection and the session goes on to DONE.
func TestRepliesConnection(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute})
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	<-l.conns // the session's connection
	var replies net.Conn
	select {
	case replies = <-l.conns:
	case <-time.After(20 * time.Second):
		t.Fatal("no replies connection")
	}
	deadline := time.Now().Add(20 * time.Second)
	rw := func() *wire { c.mu.Lock(); defer c.mu.Unlock(); return c.rw }
	for rw() == nil {
		if time.Now().After(deadline) {
			t.Fatal("the client does not use the replies connection")
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	reply := func(addr uint64) {
		t.Helper()
		if err := c.Request(addr, 1); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(20 * time.Second)
		for {
			select {
			case pd := <-c.Replies():
				if pd.Addr == addr {
					if !bytes.Equal(pd.Data, mem.page(addr)) {
						t.Fatalf("reply for %#x has the wrong contents", addr)
					}
					return
				}
			case <-timeout:
				t.Fatalf("no reply for %#x", addr)
			}
		}
	}
	reply(testBase + 50*PageSize)
	replies.Close()
	for rw() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the client keeps the replies connection after it was cut")
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	reply(testBase + 60*PageSize)
	collect(t, c, mem, lazyPages(lazy), nil)
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.err != nil || r.res.Requests < 2 || r.res.Reconnects != 0 {
		t.Fatalf("Serve: %+v, %v; want 2 requests answered, no reconnect", r.res, r.err)
	}
}

// TestExitedAfterResumed: a client's Exited (the process exited on the
// target before its last lazy pages were needed) ends the session like
// DONE, and the source gets the target's text.
func TestExitedAfterResumed(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, ReconnectTimeout: time.Hour})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	why := "pid 42 exited (status 0) before its last 46 pages were needed"
	if err := c.Exited(why); err != nil {
		t.Fatal(err)
	}
	r := wait()
	if r.err != nil || !r.res.Done || r.res.Exited != why {
		t.Fatalf("Serve: %+v, %v; want done with Exited %q", r.res, r.err, why)
	}
}

// TestBeforeImages: ServerConfig.BeforeImages runs once, when the target
// asks for the image set and before it is sent (the source releases the
// frozen process's POSIX locks there); its error reaches the target as
// ERROR and ends Serve.
func TestBeforeImages(t *testing.T) {
	mem, lazy, files := testSetup()
	var calls atomic.Int32
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, BeforeImages: func() error { calls.Add(1); return nil }})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	if n := calls.Load(); n != 0 {
		t.Fatalf("BeforeImages ran %d times before the images were asked for", n)
	}
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("BeforeImages ran %d times, want 1", n)
	}
	c.Fail("done with the test")
	wait()

	boom := errors.New("release pid 7's lock: boom")
	_, l, wait = startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, BeforeImages: func() error { return boom }})
	c = dialClient(t, l.Addr().String(), ClientConfig{})
	if _, err := c.Images(context.Background()); err == nil || !strings.Contains(err.Error(), "source says: release pid 7's lock: boom") {
		t.Errorf("Images with a failing BeforeImages: %v, want the source's error", err)
	}
	if r := wait(); !errors.Is(r.err, boom) {
		t.Errorf("Serve: %v, want the BeforeImages error", r.err)
	}
}

// TestAbsentNeverPushed: the runs ServerConfig.Absent names (one crossing
// two adjacent lazy runs) go out as ABSENT after RESUMED_OK, before any
// pushed page, and are never pushed; a request for one is still answered.
func TestAbsentNeverPushed(t *testing.T) {
	mem, lazy, files := testSetup()
	absent := []uffd.Run{
		{Addr: testBase + 22*PageSize, Npages: 8},
		{Addr: testBase + 2*PageSize, Npages: 4},
		{Addr: testBase + 6*PageSize, Npages: 4}, // 2 pages of each adjacent run
	}
	called := make(chan struct{})
	cfg := ServerConfig{Files: files, Lazy: lazy, Memory: mem, Absent: func() ([]uffd.Run, error) {
		close(called)
		return slices.Clone(absent), nil
	}}
	_, l, wait := startServer(t, cfg)
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	select {
	case <-called:
		t.Fatal("Absent called before RESUMED")
	default:
	}
	ranges := mustRanges(t, lazy)
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	isAbsent := lazyPages(absent)
	want := lazyPages(lazy)
	got := map[uint64]bool{}
	sawAbsent := false
	for len(got) < len(want) {
		h, p, err := w.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == TypeAbsent {
			a, err := DecodeAbsent(p, ranges)
			if err != nil {
				t.Fatal(err)
			}
			sawAbsent = true
			for _, r := range a.Runs {
				for k := range r.Npages {
					if !isAbsent[r.Addr+k*PageSize] {
						t.Errorf("ABSENT names page %#x, which is not absent", r.Addr+k*PageSize)
					}
					got[r.Addr+k*PageSize] = true
				}
			}
			// A request for an absent page is answered all the same.
			rawSend(t, w, TypeRequest, 9, (&Request{Addr: testBase + 23*PageSize, Npages: 1}).Append(nil))
			continue
		}
		addr, n, _ := frameRun(t, h, p, ranges)
		if !sawAbsent {
			t.Fatalf("%s (id %d) at %#x before ABSENT", h.Type, h.ID, addr)
		}
		for i := range n {
			a := addr + uint64(i)*PageSize
			if isAbsent[a] && h.ID == 0 {
				t.Errorf("absent page %#x was pushed", a)
			}
			got[a] = true
		}
	}
	rawSend(t, w, TypeDone, 0, nil)
	for {
		h, _, err := w.readFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == TypeDone {
			break
		}
	}
	r := wait()
	if r.err != nil || r.res.AbsentPages != uint64(len(isAbsent)) {
		t.Fatalf("Serve: %+v, %v; want %d absent pages", r.res, r.err, len(isAbsent))
	}
}

// goneMemory is a frozen process killed on the source: every read fails
// the way it does then.
type goneMemory struct{}

func (goneMemory) ReadAt(b []byte, addr uint64) error {
	return fmt.Errorf("read %#x: open memory of pid 42: %w: %w", addr, syscall.ESRCH, ErrMemoryGone)
}

// TestMemoryGoneEndsSession (qa6 G13): the frozen original is killed on
// the source after the target resumed. Serve ends the session with
// ErrMemoryGone at once; it used to take each failed read for a lost
// connection, accept the target's reconnect and fail again, a loop of
// 138,000 connections in 10 minutes with the copy waiting forever.
func TestMemoryGoneEndsSession(t *testing.T) {
	_, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: goneMemory{}, ReconnectTimeout: time.Hour})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	rawSend(t, w, TypeResumed, 0, nil)
	rawExpect(t, w, TypeResumedOK)
	if r := wait(); !errors.Is(r.err, ErrMemoryGone) {
		t.Fatalf("Serve: %v, want ErrMemoryGone at once (not a wait for a reconnect)", r.err)
	}
}

// TestNoTokenSaysSo (qa6 G12): a target that presents no secret to a
// source that has one hears "no token", not "wrong token".
func TestNoTokenSaysSo(t *testing.T) {
	mem, lazy, files := testSetup()
	startServerNoWait := func() string {
		_, l, _ := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem, Token: []byte("s3cret-s3cret-16")})
		return l.Addr().String()
	}
	addr := startServerNoWait()
	_, err := Dial(context.Background(), addr, ClientConfig{Log: zerolog.Nop()})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "no token") {
		t.Errorf("Dial without a token: %v, want ErrRefused saying no token", err)
	}
}
