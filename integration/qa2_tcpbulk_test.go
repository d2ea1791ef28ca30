package integration

import (
	"bufio"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestQA2TCPBulkAcrossDumps: a Python receiver (testdata/progs/
// qa2_tcprecv.py) hashes a 256 MiB stream the test sends over loopback
// (the second half only after the restore) while it is checkpointed twice with --leave-running and then dumped
// (killed) and restored; at the end of the stream it answers the byte
// count and MD5 it saw, which must be the sender's: no byte lost,
// duplicated or reordered by the freezes, the TCP_REPAIR read of the
// queues or the restore.
func TestQA2TCPBulkAcrossDumps(t *testing.T) {
	t.Parallel()
	p, conn := startPyServer(t, "qa2_tcprecv.py")
	conn.SetDeadline(time.Now().Add(3 * lazycrTimeout))

	const blocks = 4096 // of 64 KiB: 256 MiB
	type result struct {
		n   int
		sum string
		err error
	}
	sent := make(chan result, 1)
	// The second half waits for the restore, so the receiver is always
	// in the middle of the stream when it is dumped.
	release := make(chan struct{})
	letGo := sync.OnceFunc(func() { close(release) })
	t.Cleanup(letGo) // a failed test must not leave the sender blocked
	go func() {
		h := md5.New()
		blk := make([]byte, 64<<10)
		n := 0
		for i := range blocks {
			if i == blocks/2 {
				<-release
			}
			for j := range blk {
				blk[j] = byte(i*31 + j + j>>9)
			}
			if _, err := conn.Write(blk); err != nil {
				sent <- result{err: fmt.Errorf("write block %d: %w", i, err)}
				return
			}
			h.Write(blk)
			n += len(blk)
		}
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			sent <- result{err: fmt.Errorf("shut down the write side: %w", err)}
			return
		}
		sent <- result{n: n, sum: hex.EncodeToString(h.Sum(nil))}
	}()

	dumpLeaveRunning(t, p.pid)
	dumpLeaveRunning(t, p.pid)
	rp := restoreFrom(t, p, dumpKill(t, p))
	letGo()

	s := <-sent
	if s.err != nil {
		t.Fatalf("sender: %v", s.err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read the receiver's answer (restored pid %d): %v", rp.pid, err)
	}
	if want := fmt.Sprintf("%d %s", s.n, s.sum); strings.TrimSpace(line) != want {
		t.Fatalf("receiver saw %q, the sender sent %q", strings.TrimSpace(line), want)
	}
}
