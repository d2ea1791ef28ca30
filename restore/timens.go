package restore

import (
	"fmt"
	"os"
	"time"

	"github.com/lazycr/lazycr/inject"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// timeNamespace makes parent create its next child in a new time
// namespace with the offsets the image recorded (dump/process.go
// timeOffsets), so that the process reads CLOCK_MONOTONIC and
// CLOCK_BOOTTIME as before: on the boot it was dumped on exactly, on
// another boot shifted by the two hosts' difference, as any process's
// clocks are. Nothing for a process that was in lazycr's time namespace.
//
// time_namespaces(7): unshare(CLONE_NEWTIME) leaves the caller in its
// namespace and puts its later children in the new one
// (time_for_children); the offsets can be written to
// /proc/PID/timens_offsets only until a process enters it (EACCES after),
// so they are written between the unshare and the clone.
func (r *Process) timeNamespace(parent *inject.Process) error {
	o := r.img.GetNamespaces().GetTimeOffsets()
	if o == nil {
		return nil
	}
	offsets := proc.TimeOffsets{Monotonic: time.Duration(o.MonotonicNs), Boottime: time.Duration(o.BoottimeNs)}
	if _, err := parent.Syscall(parent.Pid, unix.SYS_UNSHARE, unix.CLONE_NEWTIME); err != nil {
		return fmt.Errorf("restore: injected unshare(CLONE_NEWTIME) in pid %d for the process's time namespace: %w", parent.Pid, err)
	}
	path := fmt.Sprintf("/proc/%d/timens_offsets", parent.Pid)
	if err := os.WriteFile(path, []byte(offsets.String()), 0); err != nil {
		return fmt.Errorf("restore: set the time namespace's offsets (monotonic %v, boottime %v): %w", offsets.Monotonic, offsets.Boottime, err)
	}
	r.opts.Log.Info().Uint32("image_pid", r.img.Pid).Dur("monotonic_offset", offsets.Monotonic).Dur("boottime_offset", offsets.Boottime).
		Msgf("the process gets a time namespace of its own again (monotonic offset %v, boottime offset %v)", offsets.Monotonic, offsets.Boottime)
	return nil
}
