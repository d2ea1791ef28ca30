package pageserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestDialRefused: nobody listens. Dial says at once that it waits for the
// page server, names the address, and gives up after WaitSource with an
// error wrapping ECONNREFUSED.
func TestDialRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a port nobody listens on (refused)
	var logs bytes.Buffer
	_, err = Dial(context.Background(), addr, ClientConfig{WaitSource: 200 * time.Millisecond, Log: zerolog.New(&logs)})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Dial = %v, want ECONNREFUSED", err)
	}
	if !strings.Contains(err.Error(), "--wait-source") {
		t.Errorf("error %q does not say how to wait longer", err)
	}
	if !strings.Contains(logs.String(), "waiting for the page server at "+addr) {
		t.Errorf("no waiting message naming %s in the log:\n%s", addr, logs.String())
	}
}

// TestDialWaitsForSource: the source starts listening while Dial waits;
// Dial connects (the HELLO is answered by whoever listens).
func TestDialWaitsForSource(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		_, err := Dial(context.Background(), addr, ClientConfig{WaitSource: time.Minute, Log: zerolog.New(&logs)})
		done <- err
	}()
	// Listen once the client said it waits: the wait is then under way.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(logs.String(), "waiting for the page server") {
		if time.Now().After(deadline) {
			t.Fatal("no waiting message")
		}
		time.Sleep(time.Millisecond) // poll interval
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s taken meanwhile: %v", addr, err)
	}
	defer ln2.Close()
	c, err := ln2.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // no WELCOME: Dial fails, but past the connect
	err = <-done
	if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Dial = %v, want a handshake error after connecting", err)
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDialSilentPeer (qa6 G5): whatever listens accepts the connection and
// never answers HELLO (a stopped source, a port that is no page server).
// Dial gives up after DialTimeout with an error saying so, not with the
// "use of closed network connection" of the read the deadline cut short.
func TestDialSilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	_, err = Dial(context.Background(), ln.Addr().String(), ClientConfig{DialTimeout: 200 * time.Millisecond, Log: zerolog.Nop()})
	select {
	case c := <-accepted:
		c.Close()
	default:
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 200ms") || strings.Contains(err.Error(), "closed network connection") {
		t.Fatalf("Dial = %v, want no answer within 200ms (context.DeadlineExceeded)", err)
	}
}

// failingMemory fails every read, as a source process that cannot be read
// for a reason the server does not know to be final.
type failingMemory struct{}

func (failingMemory) ReadAt(b []byte, addr uint64) error {
	return fmt.Errorf("read %#x: %w", addr, syscall.EIO)
}

// TestReconnectStormGivesUp (qa6 G13): a source that accepts every
// reconnect and fails it at once. The client pauses between such
// connections and gives up after ReconnectTimeout of nothing else, as for
// a source that refuses; it used to redial in a tight loop forever.
func TestReconnectStormGivesUp(t *testing.T) {
	_, lazy, files := testSetup()
	_, l, _ := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: failingMemory{}, ReconnectTimeout: time.Hour})
	c := dialClient(t, l.Addr().String(), ClientConfig{ReconnectTimeout: 300 * time.Millisecond})
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second) // a hang fails the test, never a threshold
	for {
		select {
		case pd, ok := <-c.Pages():
			if !ok {
				t.Fatal("pages closed without an error")
			}
			if pd.Err != nil {
				if !strings.Contains(pd.Err.Error(), "failed within") {
					t.Errorf("gave up with %v, want the quick failures named", pd.Err)
				}
				return
			}
		case <-deadline:
			t.Fatal("the client still reconnects after 30 s of connections that fail at once")
		}
	}
}

// TestSilentSourceWarned (qa6 G4): the source answers nothing (stopped,
// hung) while the connection stays up, so TCP notices nothing. The client
// warns, naming the waiting requests, instead of waiting without a word.
func TestSilentSourceWarned(t *testing.T) {
	mem, lazy, files := testSetup()
	gate := &gatedMemory{fakeMemory: mem, from: testBase, gate: make(chan struct{})}
	_, l, _ := startServer(t, ServerConfig{Files: files, Lazy: lazy, Memory: gate, ReconnectTimeout: time.Minute})
	var logs syncBuffer
	c, err := Dial(context.Background(), l.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute, DeadPeerTimeout: 50 * time.Millisecond, Log: zerolog.New(&logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Images(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	if err := c.Request(testBase, 1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "requests wait") {
		if time.Now().After(deadline) {
			close(gate.gate)
			t.Fatalf("no warning while the source is silent:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	close(gate.gate)
}
