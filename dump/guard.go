package dump

import "fmt"

// Guard queues a SIGSTOP for the frozen process so that it stays stopped,
// untouched, if lazycr dies while it is frozen (see [inject.Process.Guard]).
// Release takes it back; Kill does not care.
func (cp *Checkpoint) Guard() error {
	if cp.done {
		return fmt.Errorf("guard pid %d: already released", cp.pid)
	}
	return cp.proc.Guard()
}

// KeepStopped detaches from the process and leaves it stopped (state T,
// untraced), exactly as it was frozen: for a process whose post-copy target
// resumed it and that must therefore never run again here, but whose memory
// the target still needs (lazycr dump --lazy --adopt serves it again).
func (cp *Checkpoint) KeepStopped() error {
	if cp.done {
		return fmt.Errorf("keep pid %d stopped: already released", cp.pid)
	}
	cp.done = true
	err := cp.proc.DetachStopped()
	cp.tracer.Close()
	if err != nil {
		return fmt.Errorf("keep pid %d stopped: %w", cp.pid, err)
	}
	return nil
}

// RefreshGuard queues the guard again if a SIGCONT discarded it (see
// [inject.Process.RefreshGuard]); it reports whether it had to.
func (cp *Checkpoint) RefreshGuard() (bool, error) {
	if cp.done {
		return false, fmt.Errorf("refresh the guard of pid %d: already released", cp.pid)
	}
	return cp.proc.RefreshGuard()
}

// Stopped reports whether the process was in a job-control stop (state T)
// when it was frozen: Release then leaves it stopped, as it was.
func (cp *Checkpoint) Stopped() bool { return cp.proc.GroupStop() != 0 }

// HoldTCP keeps the process's TCP connections locked after lazycr exits
// and silent when the process dies (files.TCPDump.Hold): for an original
// that is kept stopped because the target may run the process now.
func (cp *Checkpoint) HoldTCP() error { return cp.tcp.Hold() }

// UnholdTCP removes the held lock of the process's TCP connections once
// their addresses are gone from this host (files.TCPDump.Unhold).
func (cp *Checkpoint) UnholdTCP() error { return cp.tcp.Unhold() }
