package files

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// File locks: flock(2), POSIX (fcntl(2) F_SETLK) and OFD (F_OFD_SETLK)
// advisory locks, both halves.
//
// Dump reads them from the "lock:" lines of /proc/PID/fdinfo/FD
// (proc(5); locks_show_fdinfo in fs/locks.c): each fd lists the flock and
// OFD locks of its open file description and the POSIX locks the process
// took through it. A POSIX lock cannot outlive the process's last fd on
// the file: closing any fd of the inode drops all of the process's POSIX
// locks on it (fcntl(2), "the lock is lost when… any file descriptor
// referring to the file is closed"), so every lock the process holds is
// on some fd in the image. /proc/locks is not read at dump: it shows OFD
// locks with pid -1 and takes a system-wide lock.
//
// Restore re-takes each lock, never blocking (LOCK_NB, F_SETLK,
// F_OFD_SETLK), by syscalls injected into the process once its fds have
// their final numbers, before it runs and before its credentials are
// dropped. A lock someone else took since the dump fails the restore,
// naming the lock and its holder: the process must not run without the
// lock it thinks it holds.

// LockRefusal says why l (a lock line of the process's fdinfo) cannot be
// restored exactly, or returns nil. Restored are advisory flock, POSIX
// and OFD locks a process holds; refused are leases and delegations
// (their break protocol involves the other opener), mandatory locks,
// locks without an inode and waiters ("->": a request blocked behind
// the lock listed before it).
func LockRefusal(l *proc.Lock) error {
	switch {
	case l.Blocked:
		return fmt.Errorf("%w: a waiter for a %s", ErrUnsupported, l.Describe())
	case l.Class != "FLOCK" && l.Class != "POSIX" && l.Class != "OFDLCK":
		return fmt.Errorf("%w: %s", ErrUnsupported, l.Describe())
	case l.Sub != "ADVISORY":
		return fmt.Errorf("%w: %s %s", ErrUnsupported, strings.ToLower(l.Sub), l.Describe())
	case l.NoInode:
		return fmt.Errorf("%w: %s on no inode", ErrUnsupported, l.Describe())
	case l.Type != "READ" && l.Type != "WRITE":
		return fmt.Errorf("%w: %s", ErrUnsupported, l.Describe())
	}
	return nil
}

// dumpLocks records the locks held through l's open file description
// into out.Locks. Locks are restored on regular files reopened by path
// only: on any other kind the restored fd would be another file.
func (d *dumper) dumpLocks(l *liveFd, out *pb.Fd) error {
	for i := range l.info.Locks {
		pl := &l.info.Locks[i]
		if err := LockRefusal(pl); err != nil {
			return err
		}
		if out.GetFile() == nil {
			return fmt.Errorf("%w: %s on an fd of kind %s (locks are restored on regular files only)", ErrUnsupported, pl.Describe(), kindName(out))
		}
		// The line is in this fd's fdinfo, so the lock is on its file
		// (flc_file is the fd's open file description); its dev:ino is not
		// compared with fstat's, which differ on btrfs subvolumes and
		// overlayfs (st_dev is not the superblock's s_dev there).
		fl := &pb.FileLock{Write: pl.Type == "WRITE", Start: pl.Start, End: pl.End}
		switch pl.Class {
		case "FLOCK":
			fl.Kind = pb.FileLockKind_FILE_LOCK_KIND_FLOCK
		case "POSIX":
			fl.Kind = pb.FileLockKind_FILE_LOCK_KIND_POSIX
			if pl.Pid != d.pid && pl.Pid != d.tgid() {
				return fmt.Errorf("%w: %s owned by pid %d, not the process", ErrUnsupported, pl.Describe(), pl.Pid)
			}
		case "OFDLCK":
			fl.Kind = pb.FileLockKind_FILE_LOCK_KIND_OFD
		}
		out.Locks = append(out.Locks, fl)
	}
	return nil
}

// tgid is the process id of d.pid, which is a thread's id when the
// leader has exited (see [Dump]); a POSIX lock's pid is the process's.
func (d *dumper) tgid() int {
	st, err := proc.ReadStatus(d.pid)
	if err != nil {
		return d.pid
	}
	return st.Tgid
}

// kindName is the name of f's kind for messages.
func kindName(f *pb.Fd) string {
	if k := kindOfImage(f); k != nil {
		return k.name()
	}
	return "unknown"
}

// HeldLocks describes the locks of table, one string per lock ("fd 3:
// POSIX (fcntl) WRITE lock on bytes 10-29"), for a caller that refuses
// them (a lazy dump).
func HeldLocks(table *pb.FdTable) []string {
	var out []string
	for _, f := range table.GetFds() {
		for _, l := range f.Locks {
			out = append(out, fmt.Sprintf("fd %d: %s", f.Fd, describeLock(l)))
		}
	}
	return out
}

// describeLock says what l is in words, as [proc.Lock.Describe] does.
func describeLock(l *pb.FileLock) string {
	typ := "READ"
	if l.Write {
		typ = "WRITE"
	}
	var what string
	switch l.Kind {
	case pb.FileLockKind_FILE_LOCK_KIND_FLOCK:
		return "flock " + typ + " lock"
	case pb.FileLockKind_FILE_LOCK_KIND_POSIX:
		what = "POSIX (fcntl) " + typ + " lock"
	case pb.FileLockKind_FILE_LOCK_KIND_OFD:
		what = "OFD (open file description) " + typ + " lock"
	default:
		what = fmt.Sprintf("lock of kind %d", l.Kind)
	}
	if l.End < 0 {
		return fmt.Sprintf("%s on bytes %d to EOF", what, l.Start)
	}
	return fmt.Sprintf("%s on bytes %d-%d", what, l.Start, l.End)
}

// showLocks is the locks part of an fd's `lazycr show` line.
func showLocks(f *pb.Fd) string {
	if len(f.Locks) == 0 {
		return ""
	}
	s := make([]string, len(f.Locks))
	for i, l := range f.Locks {
		s[i] = describeLock(l)
	}
	return " (holds " + strings.Join(s, ", ") + ")"
}

// validLock checks an image lock before it is turned into syscall
// arguments.
func validLock(l *pb.FileLock) error {
	switch {
	case l.Kind < pb.FileLockKind_FILE_LOCK_KIND_FLOCK || l.Kind > pb.FileLockKind_FILE_LOCK_KIND_OFD:
		return fmt.Errorf("lock kind %d", l.Kind)
	case l.Start < 0 || l.End < -1 || l.End >= 0 && (l.End < l.Start || l.End-l.Start == math.MaxInt64):
		return fmt.Errorf("lock range %d-%d", l.Start, l.End)
	case l.Kind == pb.FileLockKind_FILE_LOCK_KIND_FLOCK && (l.Start != 0 || l.End != -1):
		return fmt.Errorf("flock range %d-%d (flock locks the whole file)", l.Start, l.End)
	}
	return nil
}

// takeLocks re-takes the image's locks through their fds, which have
// their final numbers. No call blocks: a lock held by someone else
// fails the restore, naming it and its holder.
func (r *restorer) takeLocks(fds []*pb.Fd) error {
	for _, f := range fds {
		for _, l := range f.Locks {
			if err := validLock(l); err != nil {
				return fmt.Errorf("fd %d: bad lock in the image: %s", f.Fd, err)
			}
			if err := r.takeLock(f, l); err != nil {
				return err
			}
		}
		if len(f.Locks) > 0 {
			if err := r.checkUnwritten(f); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkUnwritten refuses a locked file that was written while nobody held
// its locks (between the dump, which released them, and takeLocks): what
// the locks protected may have changed under the process (another sqlite3
// writer committed). The check comes after the locks are taken, so
// nothing that honours them can write it any more. Size and mtime are
// compared with the dump's (stat(2)); a file whose recorded mtime is
// unknown (0) is not checked.
func (r *restorer) checkUnwritten(f *pb.Fd) error {
	id := f.GetFile().GetFile()
	if id == nil || id.MtimeUnixNano == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", r.pid, f.Fd), &st); err != nil {
		return fmt.Errorf("fd %d (%s): stat: %w", f.Fd, id.Path, os.NewSyscallError("stat", err))
	}
	if uint64(st.Size) != id.Size || st.Mtim.Nano() != id.MtimeUnixNano {
		return fmt.Errorf("fd %d (%s): %w: it was written while its locks were released (size %d, mtime %s; the dump had size %d, mtime %s)",
			f.Fd, id.Path, ErrFileChanged, st.Size, time.Unix(0, st.Mtim.Nano()).UTC().Format(time.RFC3339Nano), id.Size, time.Unix(0, id.MtimeUnixNano).UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// takeLock takes one lock through image fd f at its final number.
func (r *restorer) takeLock(f *pb.Fd, l *pb.FileLock) error {
	fd := uintptr(f.Fd)
	var err error
	if l.Kind == pb.FileLockKind_FILE_LOCK_KIND_FLOCK {
		how := uintptr(unix.LOCK_SH | unix.LOCK_NB)
		if l.Write {
			how = unix.LOCK_EX | unix.LOCK_NB
		}
		_, err = r.rem.Syscall(unix.SYS_FLOCK, fd, how)
	} else {
		cmd := uintptr(unix.F_SETLK)
		if l.Kind == pb.FileLockKind_FILE_LOCK_KIND_OFD {
			cmd = unix.F_OFD_SETLK
		}
		var addr uintptr
		if addr, err = r.rem.Put(scratchArgs, flockStruct(l)); err != nil {
			return fmt.Errorf("fd %d: take %s: %w", f.Fd, describeLock(l), err)
		}
		_, err = r.rem.Syscall(unix.SYS_FCNTL, fd, cmd, addr)
	}
	if err == nil {
		return nil
	}
	// flock(2): EWOULDBLOCK; fcntl(2) F_SETLK: EACCES or EAGAIN.
	if errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("fd %d (%s): take %s: %w: held by %s", f.Fd, f.GetFile().GetFile().GetPath(), describeLock(l), ErrLockHeld, r.lockHolders(f, l))
	}
	return fmt.Errorf("fd %d: take %s: %w", f.Fd, describeLock(l), err)
}

// ErrLockHeld: a file lock of the image is held by another process now
// (taken between the dump, which released it, and the restore).
var ErrLockHeld = errors.New("lock held by another process")

// flockStruct encodes struct flock (x86-64: l_type, l_whence as shorts,
// padding, l_start, l_len as 64-bit, l_pid, padding; 32 bytes). l_len 0
// locks to the end of the file, however long (fcntl(2)); l_pid must be 0
// for OFD locks.
func flockStruct(l *pb.FileLock) []byte {
	typ := int16(unix.F_RDLCK)
	if l.Write {
		typ = unix.F_WRLCK
	}
	length := int64(0)
	if l.End >= 0 {
		length = l.End - l.Start + 1
	}
	return le(typ, int16(unix.SEEK_SET), int32(0), l.Start, length, int32(0), int32(0))
}

// lockHolders names the processes whose locks on f's file conflict with
// l, from /proc/locks (OFD locks show pid -1 there: they belong to an
// open file description, not a process).
func (r *restorer) lockHolders(f *pb.Fd, l *pb.FileLock) string {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", r.pid, f.Fd), &st); err != nil {
		return fmt.Sprintf("an unknown process (stat fd %d: %v)", f.Fd, err)
	}
	all, err := proc.ReadLocks()
	if err != nil {
		return fmt.Sprintf("an unknown process (%v)", err)
	}
	var names []string
	for i := range all {
		h := &all[i]
		// By inode number only: /proc/locks prints the superblock's
		// device, which is not stat's st_dev on btrfs subvolumes and
		// overlayfs. A lock of another file system's inode of the same
		// number may be named too; this is an error message.
		if h.Blocked || h.NoInode || h.Ino != st.Ino || h.Pid == r.pid {
			continue
		}
		flock := h.Class == "FLOCK"
		if flock != (l.Kind == pb.FileLockKind_FILE_LOCK_KIND_FLOCK) || !l.Write && h.Type != "WRITE" {
			continue
		}
		if !flock && (h.End >= 0 && h.End < l.Start || l.End >= 0 && l.End < h.Start) {
			continue
		}
		who := fmt.Sprintf("pid %d", h.Pid)
		if h.Pid < 0 {
			who = "an open file description (OFD lock, no pid)"
		}
		names = append(names, who+": "+h.Describe())
	}
	if len(names) == 0 {
		return "another process (it is gone from /proc/locks)"
	}
	return strings.Join(names, "; ")
}
