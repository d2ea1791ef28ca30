package dump

import (
	"errors"
	"fmt"
	"time"

	"github.com/lazycr/lazycr/files"
	"github.com/lazycr/lazycr/image/pb"
	"golang.org/x/sys/unix"
)

// collectFds records every fd of the process: see [files.Dump].
func (cp *Checkpoint) collectFds() (*pb.FdTable, error) {
	// A live thread's /proc when the leader has exited (its files are gone).
	// Established TCP connections: locked from here until Release
	// (resumed) or Kill (held for the restore, closed in repair mode).
	cp.tcp = files.NewTCPDump(cp.opts.Log)
	opts := files.DumpOptions{Log: cp.opts.Log, TCP: cp.tcp, TreeSockets: cp.treeSockets, TreePids: cp.treePids,
		DropQueuedConnections: cp.opts.DropQueuedConnections, LazyListeners: cp.opts.Mode == ModeLazy && cp.opts.lastTry,
		ListenerHold: cp.opts.listenerHold}
	t, err := files.Dump(cp.proc.ProcPid(), opts)
	if err != nil {
		return nil, err
	}
	if cp.opts.Mode == ModeLazy {
		// File locks move to the target (files/lock.go): flock and OFD
		// locks with the open file description the target takes over,
		// POSIX locks released by the source (ReleaseLocks) when the
		// target asks for the image, and re-taken there.
		//
		// A lazy source's lock must outlive a crash of this lazycr: the
		// target may already run on the state read here, and the guard
		// keeps the original stopped, so its sockets must stay silent
		// and their peers' packets away until the migration is over (or
		// rolled back: Release removes it again).
		if err := cp.tcp.Hold(); err != nil {
			return nil, fmt.Errorf("dump pid %d: hold TCP connections: %w", cp.pid, err)
		}
	}
	t.Pid = uint32(cp.pid)
	return t, nil
}

// heldLock is a POSIX lock ReleaseLocks released in process cp.
type heldLock struct {
	cp *Checkpoint
	files.FdLock
}

// ReleaseLocks releases the POSIX (fcntl) locks of the frozen process and
// of every live member of its tree, by injected fcntl(F_SETLK, F_UNLCK),
// for a post-copy target to take: they belong to the process (fcntl(2),
// "Record locking"), so unlike flock and OFD locks they cannot move with
// an open file description (files/lock.go). The source calls it when the
// target asks for the image set: from here until the target's restore
// takes them (the image transfer and the build: 2.6-4.3 ms on one host
// here, 157 ms once under load) nobody holds them, and another process may take one (a
// waiter in F_SETLKW gets it at once); the target then finds it held and
// fails, and the rollback ([Checkpoint.RetakeLocks]) cannot give it back:
// the original is then kept stopped and the error says which lock it
// lacks. On failure the locks released so far are taken back.
func (cp *Checkpoint) ReleaseLocks() error {
	for _, m := range append([]*Checkpoint{cp}, cp.members...) {
		if m.proc == nil || cp.Set == nil {
			continue
		}
		for _, fl := range files.PosixLocks(cp.Set.Fds[uint32(m.pid)]) {
			if err := m.setlk(fl, true); err != nil {
				err = fmt.Errorf("release pid %d's %s for the target: %w", m.pid, files.DescribeLock(fl), err)
				return errors.Join(err, cp.RetakeLocks())
			}
			cp.released = append(cp.released, heldLock{m, fl})
		}
	}
	if len(cp.released) > 0 {
		cp.opts.Log.Info().Int("pid", cp.pid).Int("locks", len(cp.released)).Msg("POSIX locks released for the target to take")
	}
	return nil
}

// retakeWait bounds how long RetakeLocks waits for a lock held by
// someone else: the target's copy, killed on a failure, lets go of the
// locks it took only once it has exited.
const retakeWait = 2 * time.Second

// RetakeLocks gives the frozen process back the POSIX locks ReleaseLocks
// released, for a rollback (before [Checkpoint.Release] lets it run on, or
// when it is kept as the only copy). A lock someone else holds is waited
// for up to retakeWait, never blocking the process; one still held is an
// error naming it, and the process must not run: it would run without a
// lock it thinks it holds.
func (cp *Checkpoint) RetakeLocks() error {
	var errs []error
	deadline := time.Now().Add(retakeWait)
	for len(cp.released) > 0 {
		h := cp.released[len(cp.released)-1]
		err := h.cp.setlk(h.FdLock, false)
		// fcntl(2) F_SETLK: EACCES or EAGAIN when another process holds
		// a conflicting lock.
		if (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES)) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // poll interval
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("take pid %d's %s back: %w (another process took it while the migration held it released)", h.cp.pid, files.DescribeLock(h.FdLock), err))
		}
		cp.released = cp.released[:len(cp.released)-1]
	}
	return errors.Join(errs...)
}

// setlk runs fcntl(fl.Fd, F_SETLK, …) in the frozen process, taking the
// lock again or (unlock) releasing its range.
func (cp *Checkpoint) setlk(fl files.FdLock, unlock bool) error {
	scratch, err := cp.proc.Scratch()
	if err != nil {
		return err
	}
	if err := cp.proc.WriteMem(scratch, files.SetlkArg(fl.Lock, unlock)); err != nil {
		return err
	}
	_, err = cp.proc.Syscall(cp.proc.ProcPid(), unix.SYS_FCNTL, uintptr(fl.Fd), unix.F_SETLK, scratch)
	return err
}
