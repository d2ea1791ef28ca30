package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
)

// ErrSignalArrived: a signal arrived for a frozen process after its
// pending signals were read into the image. Killing the process then would
// lose it (the image does not have it), so a plain dump fails instead and
// releases the process, which takes the signal (a SIGTERM during a
// checkpoint is obeyed); dumping again records it or runs after it.
var ErrSignalArrived = errors.New("a signal arrived while the process was frozen")

// checkNoNewSignals refuses, before a plain dump kills the process tree,
// when any member has more signals sent by a process pending (in the
// kernel's queues, or taken by an injected syscall and kept for release)
// than its image records. Only what someone sent counts — kill(2),
// sigqueue(3), tgkill(2): si_code SI_USER, SI_QUEUE, SI_TKILL
// (sigaction(2)) — not what the kernel raises by itself while the process
// is frozen (a timer's expiry, SIGIO, SIGCHLD), which restored timers and
// files raise again. Standard signals already pending merge with a new
// one of the same number (signal(7)): such an arrival is not counted.
func (cp *Checkpoint) checkNoNewSignals() error {
	for _, c := range append([]*Checkpoint{cp}, cp.members...) {
		if c.zombie || c.proc == nil { // a zombie member takes no signal
			continue
		}
		var img int
		found := false
		for _, p := range cp.Set.Tree.GetProcesses() {
			if p.Pid != uint32(c.pid) {
				continue
			}
			found = true
			img = countSent(p.SharedPending)
			for _, t := range p.Threads {
				img += countSent(t.Pending)
			}
		}
		if !found {
			continue
		}
		shared, err := c.proc.PendingSignals(c.live(), true)
		if err != nil {
			return fmt.Errorf("dump pid %d: read pending signals again: %w", c.pid, err)
		}
		now := countSentRaw(shared)
		for _, tid := range c.proc.Threads() {
			pend, err := c.proc.PendingSignals(tid, false)
			if err != nil {
				return fmt.Errorf("dump pid %d: read pending signals of tid %d again: %w", c.pid, tid, err)
			}
			now += countSentRaw(pend)
		}
		if now > img {
			return fmt.Errorf("dump pid %d: %w (%d pending, the image has %d): it is released and takes it; dump again", c.pid, ErrSignalArrived, now, img)
		}
	}
	return nil
}

// sentByProcess reports whether si_code says a process sent the signal.
func sentByProcess(code int32) bool {
	const siUser, siQueue, siTkill = 0, -1, -6 // include/uapi/asm-generic/siginfo.h
	return code == siUser || code == siQueue || code == siTkill
}

func countSent(infos []*pb.Siginfo) int {
	n := 0
	for _, i := range infos {
		if sentByProcess(i.Code) {
			n++
		}
	}
	return n
}

func countSentRaw(infos [][]byte) int {
	n := 0
	for _, b := range infos {
		if len(b) >= 12 && sentByProcess(int32(binary.LittleEndian.Uint32(b[8:]))) {
			n++
		}
	}
	return n
}
