package inject

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// Tracer owns one OS thread locked with [runtime.LockOSThread]; every ptrace
// request, and the start of any traced child, happens on it: the kernel
// answers ptrace requests from any other thread with ESRCH (ptrace(2):
// "a tracee is attached to a thread, not a process").
//
// The methods of [Process] hop to this thread by themselves; [Tracer.Do]
// groups several of them in one hop.
type Tracer struct {
	reqs chan func()
	done chan struct{} // closed by Close
	exit chan struct{} // closed when the thread's goroutine returns
	tid  int           // the locked OS thread
	once sync.Once
}

// NewTracer starts the tracer thread.
func NewTracer() (*Tracer, error) {
	t := &Tracer{
		reqs: make(chan func()),
		done: make(chan struct{}),
		exit: make(chan struct{}),
	}
	ready := make(chan int)
	go t.loop(ready)
	t.tid = <-ready
	return t, nil
}

func (t *Tracer) loop(ready chan<- int) {
	defer close(t.exit)
	// Never unlocked: when the goroutine returns the thread exits with it, and
	// the kernel detaches (or, with PTRACE_O_EXITKILL, kills) any tracee still
	// attached to it.
	runtime.LockOSThread()
	ready <- unix.Gettid()
	for {
		select {
		case f := <-t.reqs:
			f()
		case <-t.done:
			return
		}
	}
}

// Close ends the tracer thread. Processes still attached are detached by the
// kernel as they are (registers not restored) and spawned stubs are killed
// (PTRACE_O_EXITKILL): call [Process.Release], [Process.Detach] or
// [Process.Kill] first.
func (t *Tracer) Close() error {
	t.once.Do(func() { close(t.done) })
	<-t.exit
	return nil
}

// Do runs f on the tracer thread and returns its error. Calls from f itself
// (or from methods of [Process] called inside f) run directly.
//
// The hop to a locked thread is costly (measured here: an injected getpid
// takes ~40 µs inside Do, ~150-240 µs when each call hops on its own), so
// callers making many requests should make them inside one Do.
func (t *Tracer) Do(f func() error) error {
	if unix.Gettid() == t.tid {
		// Only the tracer goroutine can run on its locked thread.
		return f()
	}
	errc := make(chan error, 1)
	select {
	case t.reqs <- func() { errc <- f() }:
	case <-t.done:
		return ErrClosed
	}
	return <-errc
}
