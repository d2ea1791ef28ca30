package pageserver

import (
	"context"
	"net"
	"sync"
	"time"
)

// RefuseWait is how long Refuse keeps accepting targets after the source
// gave up: a target started first retries a refused connection every 20 ms
// at most (Client.dial), so one waiting for this source connects within it
// and learns why, instead of seeing "connection refused".
const RefuseWait = 300 * time.Millisecond

// Refuse answers every target that connected to l, or connects within
// wait, with ERROR{reason} after its HELLO, and closes l: a source that
// fails before it serves (the dump refused the process, the skeleton could
// not be built) tells the waiting target why rather than resetting its
// connection. A target with a wrong token or version hears only that, as
// from Serve. cfg supplies Token, TLS and HandshakeTimeout.
func Refuse(l net.Listener, cfg ServerConfig, reason string, wait time.Duration) {
	defer l.Close()
	s := NewServer(cfg)
	s.cfg.HandshakeTimeout = min(s.cfg.HandshakeTimeout, 2*time.Second)
	stop := time.AfterFunc(wait, func() { l.Close() }) // ends Accept
	defer stop.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			return // l closed (wait is over)
		}
		wg.Go(func() {
			p, err := s.handshake(context.Background(), c)
			if err != nil {
				return // refused already (token, version)
			}
			s.log.Info().Str("peer", c.RemoteAddr().String()).Msg("tell the target why the source gave up: " + reason)
			refusePeer(p.w, reason)
		})
	}
}
