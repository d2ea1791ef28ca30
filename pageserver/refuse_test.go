package pageserver

import (
	"context"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

// TestRefuseTellsTheTarget: a source that gives up before it serves (here
// Serve's own check of its image set) answers a connected target with
// ERROR naming why, not a reset connection; so does one interrupted before
// the process resumed.
func TestRefuseTellsTheTarget(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Streams: map[string]FileStream{"tree.img": &bytesStream{b: []byte("x")}}, Lazy: lazy, Memory: mem})
	_, err := Dial(context.Background(), l.Addr().String(), ClientConfig{Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), `refused by the page server: serve image files: page server protocol violation: image file "tree.img" listed twice`) {
		t.Errorf("Dial to a source whose Serve failed: %v, want its reason", err)
	}
	if r := wait(); r.err == nil || !strings.Contains(r.err.Error(), "listed twice") {
		t.Errorf("Serve: %v", r.err)
	}

	// Wrong token: only that.
	l = listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Refuse(l, ServerConfig{Token: []byte("secret"), Log: zerolog.Nop()}, "dump pid 7: refused", RefuseWait)
	}()
	_, err = Dial(context.Background(), l.Addr().String(), ClientConfig{Token: []byte("guess"), Log: zerolog.Nop()})
	if err == nil || !strings.Contains(err.Error(), "wrong token") || strings.Contains(err.Error(), "pid 7") {
		t.Errorf("Dial with a wrong token: %v, want only \"wrong token\"", err)
	}
	<-done

	// Interrupted before RESUMED.
	s := NewServer(ServerConfig{Files: files, Lazy: lazy, Memory: mem, Log: zerolog.Nop()})
	l = listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		_, err := s.Serve(ctx, l)
		served <- err
	}()
	c := dialClient(t, l.Addr().String(), ClientConfig{})
	cancel()
	if err := <-served; err == nil {
		t.Error("Serve after cancel: no error")
	}
	if _, err := c.Images(context.Background()); err == nil || !strings.Contains(err.Error(), "source says: the source stopped serving before the process resumed: context canceled") {
		t.Errorf("Images from an interrupted source: %v, want its reason", err)
	}
}

// TestProtocolErrorTellsTheTarget: a target that sends what the source
// cannot take before RESUMED hears why in an ERROR before the connection
// closes.
func TestProtocolErrorTellsTheTarget(t *testing.T) {
	mem, lazy, files := testSetup()
	_, l, wait := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: mem})
	w := rawDial(t, l.Addr().String())
	mustWelcome(t, w, 0)
	rawSend(t, w, TypeWelcome, 0, nil)
	_, p := rawExpect(t, w, TypeError)
	if !strings.Contains(string(p), "unexpected WELCOME from the target") {
		t.Errorf("ERROR %q, want the protocol violation", p)
	}
	if r := wait(); r.err == nil || !strings.Contains(r.err.Error(), "unexpected WELCOME") {
		t.Errorf("Serve: %v", r.err)
	}
}
