package dump

import (
	"errors"
	"fmt"
)

// ErrSignalArrived: a signal arrived for a frozen process after its
// pending signals were read into the image. Killing the process then would
// lose it (the image does not have it), so a plain dump fails instead and
// releases the process, which takes the signal (a SIGTERM during a
// checkpoint is obeyed); dumping again records it or runs after it.
var ErrSignalArrived = errors.New("a signal arrived while the process was frozen")

// checkNoNewSignals refuses, before a plain dump kills the process tree,
// when any member has more signals pending (in the kernel's queues, or
// taken by an injected syscall and kept for release) than its image
// records. Standard signals already pending merge with a new one of the
// same number (signal(7)): such an arrival changes nothing and is not
// counted.
func (cp *Checkpoint) checkNoNewSignals() error {
	for _, c := range append([]*Checkpoint{cp}, cp.members...) {
		var img int
		found := false
		for _, p := range cp.Set.Tree.GetProcesses() {
			if p.Pid != uint32(c.pid) {
				continue
			}
			found = true
			img = len(p.SharedPending)
			for _, t := range p.Threads {
				img += len(t.Pending)
			}
		}
		if !found {
			continue
		}
		shared, err := c.proc.PendingSignals(c.live(), true)
		if err != nil {
			return fmt.Errorf("dump pid %d: read pending signals again: %w", c.pid, err)
		}
		now := len(shared)
		for _, tid := range c.proc.Threads() {
			pend, err := c.proc.PendingSignals(tid, false)
			if err != nil {
				return fmt.Errorf("dump pid %d: read pending signals of tid %d again: %w", c.pid, tid, err)
			}
			now += len(pend)
		}
		if now > img {
			return fmt.Errorf("dump pid %d: %w (%d pending, the image has %d): it is released and takes it; dump again", c.pid, ErrSignalArrived, now, img)
		}
	}
	return nil
}
