// Package restore builds a dumped process on this host from its image set:
// a stub started under ptrace is turned into the process by injected
// syscalls, then resumed.
package restore
