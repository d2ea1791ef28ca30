// Package probe tries, one named probe at a time, each kernel feature lazycr
// relies on and reports what this machine offers; `lazycr check` prints
// their table.
//
// A probe never infers from the kernel version: it performs the operation
// (on a throwaway child, thread or mapping) and leaves nothing behind.
// Programs that call All must call RunChildIfRequested first thing in main
// (and tests in TestMain): the ptrace probes re-execute /proc/self/exe as
// their child.
package probe
