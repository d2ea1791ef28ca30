package pageserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// bytesStream is a FileStream over b that fails at offset failAt (if > 0).
type bytesStream struct {
	b      []byte
	failAt uint64
	reads  int
}

func (s *bytesStream) Size() uint64 { return uint64(len(s.b)) }

func (s *bytesStream) ReadAt(b []byte, off uint64) error {
	s.reads++
	if s.failAt > 0 && off+uint64(len(b)) > s.failAt {
		return fmt.Errorf("read pages %#x of pid 42: %w", s.failAt, errors.New("no such process"))
	}
	copy(b, s.b[off:])
	return nil
}

// TestServeStreams: files given as ServerConfig.Streams arrive as the
// others do, read a chunk at a time; one that cannot be read gives the
// target an ERROR naming why, and ends Serve.
func TestServeStreams(t *testing.T) {
	mem, lazy, files := testSetup()
	big := files["pages-42.img"]
	delete(files, "pages-42.img")
	second := bytes.Repeat([]byte("pages of 43 "), 1000)
	st := &bytesStream{b: big}
	_, l, wait := startServer(t, ServerConfig{Files: files, Streams: map[string]FileStream{"pages-42.img": st, "pages-43.img": &bytesStream{b: second}}, Lazy: lazy, Memory: mem})
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	got, err := c.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(files)+2 || !bytes.Equal(got["pages-42.img"], big) || !bytes.Equal(got["pages-43.img"], second) {
		t.Fatalf("Images: %d files, pages-42.img %d bytes (want %d), pages-43.img %d (want %d)", len(got), len(got["pages-42.img"]), len(big), len(got["pages-43.img"]), len(second))
	}
	for name, b := range files {
		if !bytes.Equal(got[name], b) {
			t.Errorf("%s: %q, want %q", name, got[name], b)
		}
	}
	c.Fail("done with the test")
	wait() // the server is done with the stream: its count is final
	if want := (len(big) + ChunkSize - 1) / ChunkSize; st.reads != want {
		t.Errorf("stream read %d times, want %d (a chunk at a time)", st.reads, want)
	}

	_, l, wait = startServer(t, ServerConfig{Files: files, Streams: map[string]FileStream{"pages-42.img": &bytesStream{b: big, failAt: ChunkSize + 5}}, Lazy: lazy, Memory: mem})
	c = dialClient(t, l.Addr().String(), ClientConfig{})
	if _, err := c.Images(context.Background()); err == nil || !strings.Contains(err.Error(), "source says: read image pages-42.img: read pages 0x100005 of pid 42: no such process") {
		t.Errorf("Images from a failing stream: %v, want the source's reason", err)
	}
	if r := wait(); r.err == nil || !strings.Contains(r.err.Error(), "no such process") {
		t.Errorf("Serve: %v, want the stream's error", r.err)
	}

	// A name in both Files and Streams is refused.
	_, l, wait = startServer(t, ServerConfig{Files: files, Streams: map[string]FileStream{"tree.img": &bytesStream{b: big}}, Lazy: lazy, Memory: mem})
	if r := wait(); r.err == nil || !strings.Contains(r.err.Error(), "listed twice") {
		t.Errorf("Serve with tree.img twice: %v, want it refused", r.err)
	}
}
