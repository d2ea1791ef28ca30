package dump

import (
	"errors"
	"fmt"
)

// Guard queues a SIGSTOP for the frozen process and every live member of
// its tree so that they stay stopped, untouched, if lazycr dies while they
// are frozen (see [inject.Process.Guard]): in a lazy migration each
// member's memory is served from its frozen original, which must never run
// on beside its copy. Release takes it back; Kill does not care.
func (cp *Checkpoint) Guard() error {
	if cp.done {
		return fmt.Errorf("guard pid %d: already released", cp.pid)
	}
	if err := cp.proc.Guard(); err != nil {
		return err
	}
	for _, m := range cp.members {
		if m.proc != nil {
			if err := m.proc.Guard(); err != nil {
				return fmt.Errorf("guard pid %d of the tree of pid %d: %w", m.pid, cp.pid, err)
			}
		}
	}
	return nil
}

// KeepStopped detaches from the process (and every live member of its
// tree) and leaves it stopped (state T, untraced), exactly as it was
// frozen: for a process whose post-copy target resumed it and that must
// therefore never run again here, but whose memory the target still needs
// (lazycr dump --lazy --adopt serves it again).
func (cp *Checkpoint) KeepStopped() error {
	if cp.done {
		return fmt.Errorf("keep pid %d stopped: already released", cp.pid)
	}
	cp.done = true
	var errs []error
	for i := len(cp.members) - 1; i >= 0; i-- {
		if m := cp.members[i]; m.proc != nil {
			if err := m.proc.DetachStopped(); err != nil {
				errs = append(errs, fmt.Errorf("keep pid %d of the tree of pid %d stopped: %w", m.pid, cp.pid, err))
			}
		}
	}
	if err := cp.proc.DetachStopped(); err != nil {
		errs = append(errs, fmt.Errorf("keep pid %d stopped: %w", cp.pid, err))
	}
	cp.tracer.Close()
	return errors.Join(errs...)
}

// RefreshGuard queues the guard again, for the process and every live
// member, if a SIGCONT discarded it (see [inject.Process.RefreshGuard]);
// it reports whether it had to.
func (cp *Checkpoint) RefreshGuard() (bool, error) {
	if cp.done {
		return false, fmt.Errorf("refresh the guard of pid %d: already released", cp.pid)
	}
	again, err := cp.proc.RefreshGuard()
	if err != nil {
		return again, err
	}
	for _, m := range cp.members {
		if m.proc == nil {
			continue
		}
		a, err := m.proc.RefreshGuard()
		again = again || a
		if err != nil {
			return again, fmt.Errorf("refresh the guard of pid %d of the tree of pid %d: %w", m.pid, cp.pid, err)
		}
	}
	return again, nil
}

// Stopped reports whether the process was in a job-control stop (state T)
// when it was frozen: Release then leaves it stopped, as it was.
func (cp *Checkpoint) Stopped() bool { return cp.proc.GroupStop() != 0 }

// HoldTCP keeps the TCP connections of the process and of every member
// of its tree locked after lazycr exits and silent when they die
// (files.TCPDump.Hold): for an original that is kept stopped because the
// target may run the process now.
func (cp *Checkpoint) HoldTCP() error { return cp.holdTCP() }

// UnholdTCP removes the held locks of the TCP connections of the process
// and of every member of its tree once their addresses are gone from this
// host (files.TCPDump.Unhold).
func (cp *Checkpoint) UnholdTCP() error {
	var errs []error
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if err := m.tcp.Unhold(); err != nil {
			errs = append(errs, fmt.Errorf("pid %d: %w", m.pid, err))
		}
	}
	return errors.Join(errs...)
}

// UnholdListeners ends the listener half of the held locks of the process
// and of every member of its tree (files.TCPDump.UnholdListeners): their
// connections stay held.
func (cp *Checkpoint) UnholdListeners() error {
	var errs []error
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if err := m.tcp.UnholdListeners(); err != nil {
			errs = append(errs, fmt.Errorf("pid %d: %w", m.pid, err))
		}
	}
	return errors.Join(errs...)
}
