package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
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

// A post-copy migration (restore --lazy-from) resumes the process on the
// target while the source keeps the original frozen, holding its locks,
// until the target says DONE; the locks must move to the target before it
// runs, exactly, and come back to the original on a rollback.
//
//   - flock and OFD locks belong to the open file description (flock(2);
//     fcntl(2), "Open file description locks (non-POSIX)"): on the host
//     the process was dumped on (same boot, the same file by device and
//     inode) the target takes the original's description itself with
//     pidfd_getfd(2) (takeLockedFile), and the locks move with it; there
//     is no moment when nobody holds them. The original keeps its fd: on
//     a rollback it runs on with the description and its locks (released
//     only on the description's last close), once killed they live on in
//     the target. Until then the original's reference keeps the
//     description open: a lock the process lets go by closing its last fd
//     (rather than LOCK_UN or F_UNLCK) is released only when the source
//     kills the original, at DONE (later, never earlier).
//   - POSIX (fcntl F_SETLK) locks belong to the process (fcntl(2),
//     "Record locking": they are associated with a process, not an open
//     file description), so they cannot be handed over: the source
//     releases the frozen original's by injected fcntl(F_SETLK, F_UNLCK)
//     when the target asks for the image set ([PosixLocks], [SetlkArg]), and
//     the target re-takes them as a plain restore does (takeLocks).
//   - On another host (another boot) the target's file is another file:
//     every lock is taken afresh by takeLocks, as a plain restore does.
//     A file shared between the hosts (NFS) whose lock the original still
//     holds fails takeLocks (held by another process): refused, the
//     source rolled back.

// FdLock is a lock of the image with the fd it was listed on.
type FdLock struct {
	Fd   int32
	Lock *pb.FileLock
}

// PosixLocks lists table's POSIX locks, each once: fdinfo lists a
// process's POSIX lock on every fd of its file (locks_show_fdinfo in
// fs/locks.c), any of which can release or take it.
func PosixLocks(table *pb.FdTable) []FdLock {
	type key struct {
		dev, ino   uint64
		start, end int64
		write      bool
	}
	seen := map[key]bool{}
	var out []FdLock
	for _, f := range table.GetFds() {
		id := f.GetFile().GetFile()
		for _, l := range f.Locks {
			if l.Kind != pb.FileLockKind_FILE_LOCK_KIND_POSIX || validLock(l) != nil {
				continue
			}
			k := key{id.GetDev(), id.GetInode(), l.Start, l.End, l.Write}
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, FdLock{Fd: f.Fd, Lock: l})
		}
	}
	return out
}

// DescribeLock says what fl is in words ("fd 3: POSIX (fcntl) WRITE lock
// on bytes 10-29").
func DescribeLock(fl FdLock) string {
	return fmt.Sprintf("fd %d: %s", fl.Fd, describeLock(fl.Lock))
}

// SetlkArg is the struct flock of fcntl(fd, F_SETLK, arg) that takes l
// again, or with unlock releases its range (F_UNLCK).
func SetlkArg(l *pb.FileLock, unlock bool) []byte {
	b := flockStruct(l)
	if unlock {
		binary.LittleEndian.PutUint16(b, unix.F_UNLCK)
	}
	return b
}

// takeLockedFile takes image fd f's open file description over from the
// frozen original when it holds flock or OFD locks that the original
// still holds (see above): RestoreOptions.HandOver, the image from this
// boot, the dumped pid stopped by its tracer (the source's freeze) and
// holding at that fd the image's file (device and inode). ok is false
// (and err nil) when any of that does not hold: the file is then opened
// afresh and takeLocks takes its locks, failing if the original still
// holds them.
func (r *restorer) takeLockedFile(f *pb.Fd) (fd uintptr, ok bool, err error) {
	id := f.GetFile().GetFile()
	if !r.handOver || id == nil || !slices.ContainsFunc(f.Locks, func(l *pb.FileLock) bool {
		return l.Kind == pb.FileLockKind_FILE_LOCK_KIND_FLOCK || l.Kind == pb.FileLockKind_FILE_LOCK_KIND_OFD
	}) {
		return 0, false, nil
	}
	pid := int(r.imagePid)
	local, st, err := r.fdOfFrozenOriginal(f.Fd)
	if err != nil {
		r.log.Debug().Err(err).Int32("fd", f.Fd).Msg("not taken over from the original")
		return 0, false, nil
	}
	defer unix.Close(local)
	if st.Ino != id.Inode || st.Dev != id.Dev {
		return 0, false, nil
	}
	if fd, err = r.receive(local, f.Fd); err != nil {
		return 0, false, err
	}
	r.log.Info().Int32("fd", f.Fd).Int("source_pid", pid).Str("path", id.Path).
		Msgf("fd %d: took %s over from the frozen original pid %d with its locks (%s)", f.Fd, id.Path, pid, strings.TrimSuffix(strings.TrimPrefix(showLocks(f), " (holds "), ")"))
	return fd, true, nil
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
