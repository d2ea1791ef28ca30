package pageserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lazycr/lazycr/uffd"
)

// fakeMemory is a process image: data at base.
type fakeMemory struct {
	base uint64
	data []byte
}

func (m *fakeMemory) ReadAt(b []byte, addr uint64) error {
	if addr < m.base || addr-m.base+uint64(len(b)) > uint64(len(m.data)) {
		return fmt.Errorf("read %#x (%d bytes): outside the fake memory", addr, len(b))
	}
	copy(b, m.data[addr-m.base:])
	return nil
}

func (m *fakeMemory) page(addr uint64) []byte {
	return m.data[addr-m.base : addr-m.base+PageSize]
}

const testBase uint64 = 0x7f0000000000

// testSetup is a fake process of 64 pages with lazy runs (two of them
// adjacent) and a small image set.
func testSetup() (*fakeMemory, []uffd.Run, map[string][]byte) {
	r := rand.New(rand.NewPCG(1, 2))
	mem := &fakeMemory{base: testBase, data: make([]byte, 64*PageSize)}
	for i := range mem.data {
		mem.data[i] = byte(r.Uint32())
	}
	lazy := []uffd.Run{
		{Addr: testBase + 20*PageSize, Npages: 20},
		{Addr: testBase, Npages: 8},
		{Addr: testBase + 8*PageSize, Npages: 4},
		{Addr: testBase + 50*PageSize, Npages: 14},
	}
	big := make([]byte, 3*ChunkSize+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	files := map[string][]byte{
		"inventory.img": []byte("inventory"),
		"tree.img":      []byte("tree"),
		"mm-42.img":     []byte("mm"),
		"fds-42.img":    {},
		"pages-42.img":  big,
	}
	return mem, lazy, files
}

// frameRun decodes a PAGES or ZERO frame into the pages it covers; data
// holds them for PAGES and is nil for ZERO. Any other frame fails t.
func frameRun(t testing.TB, h *Header, p []byte, ranges *Ranges) (addr uint64, n int, data []byte) {
	t.Helper()
	switch h.Type {
	case TypeZero:
		z, err := DecodeZero(p, ranges)
		if err != nil {
			t.Fatal(err)
		}
		return z.Addr, int(z.Npages), nil
	case TypePages:
		m, err := DecodePages(p, ranges)
		if err != nil {
			t.Fatal(err)
		}
		return m.Addr, m.Npages(), m.Data
	}
	t.Fatalf("got %s, want PAGES or ZERO", h.Type)
	return 0, 0, nil
}

// lazyPages returns the set of pages of runs.
func lazyPages(lazy []uffd.Run) map[uint64]bool {
	m := make(map[uint64]bool)
	for _, r := range lazy {
		for i := uint64(0); i < r.Npages; i++ {
			m[r.Addr+i*PageSize] = true
		}
	}
	return m
}

// cutListener records the server side of every accepted connection.
type cutListener struct {
	net.Listener
	conns chan net.Conn
}

func (l *cutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.conns <- c:
		default:
		}
	}
	return c, err
}

func listen(t testing.TB) *cutListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &cutListener{Listener: l, conns: make(chan net.Conn, 16)}
}

type served struct {
	res Result
	err error
}

// startServer runs Serve in the background; the returned function waits
// for its result.
func startServer(t testing.TB, cfg ServerConfig) (*Server, *cutListener, func() served) {
	t.Helper()
	cfg.Log = zerolog.Nop()
	s := NewServer(cfg)
	l := listen(t)
	ch := make(chan served, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		res, err := s.Serve(ctx, l)
		ch <- served{res, err}
	}()
	var once sync.Once
	var out served
	wait := func() served {
		once.Do(func() {
			select {
			case out = <-ch:
			case <-time.After(20 * time.Second):
				cancel()
				out = <-ch
				t.Errorf("Serve did not return: %v", out.err)
			}
			cancel()
		})
		return out
	}
	t.Cleanup(func() { cancel(); wait() })
	return s, l, wait
}

// rawDial opens a protocol-level connection.
func rawDial(t testing.TB, addr string) *wire {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	return newWire(c)
}

func rawHello(t testing.TB, w *wire, session uint64, token []byte) (*Header, []byte) {
	t.Helper()
	if err := w.writeFrame(TypeHello, 0, (&Hello{Version: ProtocolVersion, Session: session, Token: token}).Append(nil)); err != nil {
		t.Fatal(err)
	}
	h, p, err := w.readFrame()
	if err != nil {
		t.Fatalf("read answer to HELLO: %v", err)
	}
	return h, p
}

func mustWelcome(t testing.TB, w *wire, session uint64) *Welcome {
	t.Helper()
	h, p := rawHello(t, w, session, nil)
	if h.Type != TypeWelcome {
		t.Fatalf("got %s %q, want WELCOME", h.Type, p)
	}
	m, err := DecodeWelcome(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func rawSend(t testing.TB, w *wire, typ Type, id uint64, payload []byte) {
	t.Helper()
	if err := w.writeFrame(typ, id, payload); err != nil {
		t.Fatalf("send %s: %v", typ, err)
	}
}

func rawExpect(t testing.TB, w *wire, typ Type) (*Header, []byte) {
	t.Helper()
	h, p, err := w.readFrame()
	if err != nil {
		t.Fatalf("read %s: %v", typ, err)
	}
	if h.Type != typ {
		t.Fatalf("got %s %q, want %s", h.Type, p[:min(len(p), 200)], typ)
	}
	return h, p
}

func dialClient(t testing.TB, addr string, cfg ClientConfig) *Client {
	t.Helper()
	cfg.Log = zerolog.Nop()
	c, err := Dial(context.Background(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// collect reads Pages until every lazy page arrived (checking contents),
// acking each; it returns how often each page came.
func collect(t testing.TB, c *Client, mem *fakeMemory, want map[uint64]bool, onFirst func()) map[uint64]int {
	t.Helper()
	got := make(map[uint64]int)
	timeout := time.After(20 * time.Second)
	for missing := len(want); missing > 0; {
		var pd PageData
		var ok bool
		select {
		case pd, ok = <-c.Pages():
		case pd, ok = <-c.Replies():
		case <-timeout:
			t.Fatalf("%d pages missing", missing)
		}
		{
			if !ok {
				t.Fatal("Pages closed early")
			}
			if pd.Err != nil {
				t.Fatalf("page source failed: %v", pd.Err)
			}
			n := len(pd.Data)/PageSize + pd.Zero
			for i := range n {
				a := pd.Addr + uint64(i)*PageSize
				if !want[a] {
					t.Fatalf("page %#x is not lazy", a)
				}
				page := zeroPage[:]
				if pd.Zero == 0 {
					page = pd.Data[i*PageSize : (i+1)*PageSize]
				}
				if !bytes.Equal(page, mem.page(a)) {
					t.Fatalf("page %#x has the wrong contents (sent as zeros: %v)", a, pd.Zero > 0)
				}
				if got[a] == 0 {
					missing--
				}
				got[a]++
			}
			c.Ack(pd.Addr, n)
			if pd.Release != nil {
				pd.Release()
			}
			if onFirst != nil {
				onFirst()
				onFirst = nil
			}
		}
	}
	return got
}

// PageData is uffd.PageData.
type PageData = uffd.PageData

func isErr(err, target error) bool { return errors.Is(err, target) }

func readFile(dir, name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }

// drain reads Pages until it is closed.
func drain(t testing.TB, c *Client) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case pd, ok := <-c.Pages():
			if !ok {
				return
			}
			if pd.Release != nil {
				pd.Release()
			}
		case <-timeout:
			t.Fatal("Pages not closed")
		}
	}
}

func mustRanges(t testing.TB, runs []uffd.Run) *Ranges {
	t.Helper()
	r, err := NewRanges(runs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
