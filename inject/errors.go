package inject

import "errors"

var (
	// ErrNoProcess reports that the process (or the thread) does not exist
	// or exited while it was being traced.
	ErrNoProcess = errors.New("no such process")
	// ErrZombie reports that the process has exited and waits to be reaped.
	ErrZombie = errors.New("process is a zombie")
	// ErrTraced reports that another tracer (a debugger, strace, another
	// lazycr) is already attached to the process; see TracerPid in proc(5).
	ErrTraced = errors.New("process is already traced")
	// ErrClosed reports a request to a [Tracer] that was closed.
	ErrClosed = errors.New("tracer closed")
	// ErrReleased reports a request on a [Process] that was already released,
	// detached or killed.
	ErrReleased = errors.New("process already released")
	// ErrNoGadget reports that no `syscall` instruction was found in the
	// executable mappings of a live process.
	ErrNoGadget = errors.New("no syscall instruction found")
	// ErrNotSpawned reports a request that only a process started by
	// [Tracer.Spawn] (or made by [Process.CloneProcess]) accepts.
	ErrNotSpawned = errors.New("process was not spawned")
)
