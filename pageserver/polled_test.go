package pageserver

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPolledReplies: after PollReplies the answers come through ReplyFD
// and ReadReplies, not on Replies; once the polled connection is cut,
// the pending requests are asked again on the session's connection and
// their answers come on Replies, with no reconnect of the session.
func TestPolledReplies(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute})
	kicks := make(chan struct{}, 1)
	if !c.PollReplies(func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}) {
		t.Fatal("PollReplies refused a plain TCP client")
	}
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
	// The kick says the fd is there.
	fd := -1
	for timeout := time.After(20 * time.Second); fd < 0; {
		select {
		case <-kicks:
			fd = c.ReplyFD()
		case <-timeout:
			t.Fatal("no kick with a replies fd")
		}
	}
	addr := testBase + 50*PageSize
	if err := c.Request(addr, 3); err != nil {
		t.Fatal(err)
	}
	got := make(map[uint64][]byte)
	for deadline := time.Now().Add(20 * time.Second); len(got) < 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 3 answered pages read", len(got))
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 1000); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		err := c.ReadReplies(func(d PageData) error {
			if d.Pushed || d.Zero != 0 || d.Release != nil {
				t.Errorf("answer %+v: want unpushed page data without Release", d)
			}
			for i := range len(d.Data) / PageSize {
				got[d.Addr+uint64(i)*PageSize] = bytes.Clone(d.Data[i*PageSize : (i+1)*PageSize])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range uint64(3) {
		a := addr + i*PageSize
		if !bytes.Equal(got[a], mem.page(a)) {
			t.Fatalf("answered page %#x has the wrong contents", a)
		}
	}
	select {
	case d := <-c.Replies():
		t.Fatalf("answer %#x came on Replies while polled", d.Addr)
	default:
	}
	if s := c.Stats(); s.RequestPages != 3 {
		t.Fatalf("stats %+v: want 3 request pages", s)
	}
	// Cut: the next read sees it, the connection is dropped and a new
	// request goes on the session's connection.
	replies.Close()
	for deadline := time.Now().Add(20 * time.Second); c.ReplyFD() >= 0; {
		if time.Now().After(deadline) {
			t.Fatal("the client keeps the polled replies connection after it was cut")
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		unix.Poll(pfd, 100)
		if err := c.ReadReplies(func(d PageData) error { t.Errorf("answer %#x after the cut", d.Addr); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	next := testBase + 60*PageSize
	if err := c.Request(next, 1); err != nil {
		t.Fatal(err)
	}
	for timeout := time.After(20 * time.Second); ; {
		select {
		case d := <-c.Replies():
			if d.Addr != next {
				continue
			}
			if !bytes.Equal(d.Data, mem.page(next)) {
				t.Fatalf("answer for %#x has the wrong contents", next)
			}
		case <-timeout:
			t.Fatalf("no answer for %#x on Replies after the cut", next)
		}
		break
	}
	// The rest comes pushed (the answered pages may come again).
	got[next] = mem.page(next)
	lazyPages := lazyPages(lazy)
	for timeout := time.After(20 * time.Second); len(got) < len(lazyPages); {
		var d PageData
		select {
		case d = <-c.Pages():
		case d = <-c.Replies():
		case <-timeout:
			t.Fatalf("%d pages missing", len(lazyPages)-len(got))
		}
		if d.Err != nil {
			t.Fatal(d.Err)
		}
		for i := range len(d.Data)/PageSize + d.Zero {
			a := d.Addr + uint64(i)*PageSize
			page := zeroPage[:]
			if d.Zero == 0 {
				page = d.Data[i*PageSize : (i+1)*PageSize]
			}
			if !lazyPages[a] || !bytes.Equal(page, mem.page(a)) {
				t.Fatalf("page %#x: not lazy or wrong contents", a)
			}
			got[a] = nil
		}
		c.Ack(d.Addr, len(d.Data)/PageSize+d.Zero)
		if d.Release != nil {
			d.Release()
		}
	}
	if err := c.Done(); err != nil {
		t.Fatal(err)
	}
	if r := wait(); r.err != nil || r.res.Requests < 2 || r.res.Reconnects != 0 {
		t.Fatalf("Serve: %+v, %v; want 2 requests answered, no reconnect", r.res, r.err)
	}
}

// TestReplyReaderSplits: frames come out whole and in order however the
// bytes are split between reads, a frame larger than the first buffer
// included.
func TestReplyReaderSplits(t *testing.T) {
	var stream []byte
	stream = appendFrame(stream, TypeZero, 1, (&Zero{Addr: 0x10000, Npages: 2}).Append(nil, fuzzRanges))
	big := bytes.Repeat([]byte{7}, 2*replyBuf)
	stream = Header{Type: TypePages, Length: uint32(pagesHead + len(big)), ID: 2}.Append(stream)
	stream = AppendPagesHead(stream, 0x10000, fuzzRanges)
	stream = append(stream, big...)
	stream = appendFrame(stream, TypeError, 3, message("no"))
	want := readerFrames(t, stream, len(stream))
	if len(want) != 3 || want[1].n != pagesHead+len(big) {
		t.Fatalf("whole stream: frames %+v", want)
	}
	for _, step := range []int{1, 7, HeaderSize, 4095, replyBuf - 1, replyBuf + 3} {
		got := readerFrames(t, stream, step)
		if len(got) != len(want) {
			t.Fatalf("reads of %d bytes: %d frames, want %d", step, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("reads of %d bytes: frame %d is %+v, want %+v", step, i, got[i], want[i])
			}
		}
	}
}

type readerFrame struct {
	typ    Type
	id     uint64
	n      int
	first  byte
	errStr string
}

// readerFrames feeds stream to a replyReader at most step bytes a read.
func readerFrames(t *testing.T, stream []byte, step int) []readerFrame {
	t.Helper()
	var r replyReader
	var out []readerFrame
	for off := 0; off < len(stream); {
		sp := r.space()
		if len(sp) == 0 {
			t.Fatalf("no space to read into at offset %d", off)
		}
		n := copy(sp[:min(len(sp), step)], stream[off:])
		off += n
		r.n += n
		err := r.frames(func(h *Header, p []byte) error {
			f := readerFrame{typ: h.Type, id: h.ID, n: len(p)}
			if len(p) > 0 {
				f.first = p[len(p)-1]
			}
			out = append(out, f)
			return nil
		})
		if err != nil {
			out = append(out, readerFrame{errStr: err.Error()})
			return out
		}
	}
	return out
}

// FuzzReplyReader: whatever the bytes, a replyReader never panics, and
// cutting them into reads of any size gives the same frames (or the same
// error) as one read of everything.
func FuzzReplyReader(f *testing.F) {
	var seed []byte
	seed = appendFrame(seed, TypeZero, 1, (&Zero{Addr: 0x10000, Npages: 2}).Append(nil, fuzzRanges))
	seed = Header{Type: TypePages, Length: pagesHead + PageSize, ID: 2}.Append(seed)
	seed = AppendPagesHead(seed, 0x10000, fuzzRanges)
	seed = append(seed, make([]byte, PageSize)...)
	f.Add(seed, uint16(5))
	f.Add([]byte("LZ\x01\x02garbage"), uint16(1))
	f.Fuzz(func(t *testing.T, stream []byte, step uint16) {
		want := readerFrames(t, stream, len(stream)+1)
		got := readerFrames(t, stream, int(step)+1)
		if len(got) != len(want) {
			t.Fatalf("reads of %d bytes: %d frames, want %d", int(step)+1, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("reads of %d bytes: frame %d is %+v, want %+v", int(step)+1, i, got[i], want[i])
			}
		}
	})
}
