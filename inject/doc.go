// Package inject is the ptrace remote-syscall engine: it freezes a process
// (or spawns a stub stopped at its execve), runs syscalls inside it, moves its
// memory and registers, and lets it go.
//
// All ptrace requests come from one OS thread owned by a [Tracer]; see
// ptrace(2), "Attaching and detaching". A live process is never patched: an
// existing `syscall` instruction (0f 05) is reused as the gadget and each
// injected call is stepped with PTRACE_SYSCALL between its syscall-entry and
// syscall-exit stops. A spawned stub gets a private gadget page
// (`syscall; int3`) mapped through a word poked over its entry point and put
// back at once. Inside a stub, [Process.CloneThread] and
// [Process.CloneProcess] inject clone3(2) (with set_tid to choose the id) to
// rebuild a process's threads and keep its pid.
//
// Signals that arrive while a process is frozen are suppressed at their
// signal-delivery-stop, kept with their siginfo, and queued again inside the
// process by [Process.Release], so the process sees each of them exactly once
// after it resumes.
package inject
