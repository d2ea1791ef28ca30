package pageserver

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/lazycr/lazycr/uffd"
)

// TestReconnectAnnouncesAcks: after a reconnect the client acks again every
// page it acked before, so a source that restarted and adopted the session
// (and so knows nothing of the earlier acks) does not push them again.
// The source here is a fake speaking the frames by hand: the first
// connection is cut once an ACK arrived, the second must bring the same
// pages in an ACK.
var errNoReplies = errors.New("a replies connection")

func TestReconnectAnnouncesAcks(t *testing.T) {
	run := uffd.Run{Addr: testBase, Npages: 64}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		acked []uffd.Run
		err   error
	}
	results := make(chan result, 2)
	lazy, _ := NewRanges([]uffd.Run{run})
	go func() {
		for conn := 1; conn <= 2; conn++ {
			c, err := ln.Accept()
			if err != nil {
				results <- result{err: err}
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second)) // fail, not hang, without the ACK
			w := newWire(c)
			var acked []uffd.Run
			err = func() error {
				h, _, err := w.readFrame() // HELLO
				if errors.Is(err, io.EOF) {
					// A dial the client gave up (a replies connection
					// cancelled with the connection it belonged to).
					conn--
					return errNoReplies
				}
				if err != nil {
					return err
				}
				if h.Type == TypeHelloReplies { // this fake has no replies connection
					conn--
					return errNoReplies
				}
				wel := &Welcome{Version: ProtocolVersion, Pids: []uint32{0}, Session: 7, LazyPages: run.Npages, LazyBytes: run.Npages * PageSize, Runs: []uffd.Run{run}}
				if err := w.writeFrame(TypeWelcome, 0, wel.Append(nil)); err != nil {
					return err
				}
				for {
					h, p, err := w.readFrame()
					if err != nil {
						return err
					}
					switch h.Type {
					case TypeResumed:
						if err := w.writeFrame(TypeResumedOK, 0); err != nil {
							return err
						}
					case TypeAck:
						a, err := DecodeAck(p, lazy)
						if err != nil {
							return err
						}
						acked = append(acked, a.Runs...)
						return nil
					}
				}
			}()
			if errors.Is(err, errNoReplies) {
				w.writeFrame(TypeError, 0, []byte("no replies connection"))
				c.Close()
				continue
			}
			c.Close()
			results <- result{acked: acked, err: err}
		}
	}()
	c, err := Dial(context.Background(), ln.Addr().String(), ClientConfig{ReconnectTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Resumed(); err != nil {
		t.Fatal(err)
	}
	c.Ack(testBase, 10)
	c.Ack(testBase+20*PageSize, 5)
	first := <-results
	if first.err != nil {
		t.Fatalf("connection 1: %v", first.err)
	}
	second := <-results
	if second.err != nil {
		t.Fatalf("connection 2: %v", second.err)
	}
	want := []uffd.Run{{Addr: testBase, Npages: 10}, {Addr: testBase + 20*PageSize, Npages: 5}}
	if len(second.acked) != len(want) || second.acked[0] != want[0] || second.acked[1] != want[1] {
		t.Errorf("after the reconnect the client acked %v, want %v (first connection got %v)", second.acked, want, first.acked)
	}
}
