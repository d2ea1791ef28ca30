package files

import (
	"fmt"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// A post-copy restore on the host the process was dumped on (same boot;
// the same network namespace, or any for a path name) finds the names of
// its unix sockets still taken:
// the source keeps the original frozen, holding them, until the target is
// done. Like a TCP listener (inet.go takeListener), a named unix socket
// is then handed over instead of rebuilt: pidfd_getfd(2) copies the
// original's fd, which shares its open file description, so the process
// gets the very same socket, exact in every respect (queued connections
// and bytes, SO_PEERCRED, options). A listener is taken with every socket
// of its group (its accepted connections and their clients, the clients
// waiting in its queue): their connections are to the very socket taken.
// The original keeps its own fds: if the migration is rolled back (only
// possible before the process here runs) it goes on with them; once it is
// killed the sockets live on here.

// takeUnix takes image fd f's socket over from the frozen original, if
// it can be: RestoreOptions.HandOver, the image from this boot, the
// dumped pid stopped by its tracer (the source's freeze) and holding at
// that fd the socket with the image's inode, in the network namespace of
// the process being built or, when name (its own, or its listener's for
// a socket of a listener's group) is a path, in any network namespace: a
// path name is found through the filesystem from every network
// namespace (unix(7): only abstract names belong to one), so the taken
// socket is reached by its name exactly as before. ok is false (and err
// nil) when any of that does not hold: the socket is then made afresh.
func (r *restorer) takeUnix(f *pb.Fd, name []byte) (fd uintptr, ok bool, err error) {
	s := f.GetUnixSocket()
	if !r.handOver {
		return 0, false, nil
	}
	if here, err := BootID(); err != nil || r.bootID == "" || here != r.bootID {
		return 0, false, nil
	}
	pid := int(r.imagePid)
	if ps, err := proc.ReadStatus(pid); err != nil || ps.State != 't' || ps.TracerPid == 0 {
		return 0, false, nil
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, false, nil
	}
	defer unix.Close(pidfd)
	local, err := unix.PidfdGetfd(pidfd, int(f.Fd), 0)
	if err != nil {
		return 0, false, nil
	}
	defer unix.Close(local)
	var st unix.Stat_t
	if err := unix.Fstat(local, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != s.Inode {
		return 0, false, nil
	}
	if err := sameNetns(local, r.pid); err != nil && (len(name) == 0 || name[0] == 0) {
		return 0, false, nil
	}
	if fd, err = r.receive(local, f.Fd); err != nil {
		return 0, false, err
	}
	r.log.Info().Int32("fd", f.Fd).Int("source_pid", pid).Uint64("socket", s.Inode).
		Msgf("fd %d: took unix socket:[%d] %s over from the frozen original pid %d", f.Fd, s.Inode, unixName(s.Name), pid)
	return fd, true, nil
}

// takeUnixGroup takes listener lf and every socket of its group over from
// the frozen original; ok is false when the listener cannot be taken.
// Once the listener is taken, a member that cannot be is an error: it
// is connected to the very socket taken.
func (r *restorer) takeUnixGroup(lf *pb.Fd) (ok bool, err error) {
	u := r.unixState()
	ls := lf.GetUnixSocket()
	fd, ok, err := r.takeUnix(lf, ls.Name)
	if err != nil || !ok {
		return false, err
	}
	u.made[ls.Inode], u.taken[ls.Inode] = fd, true
	for _, f := range u.byIno {
		s := f.GetUnixSocket()
		if s.Listener != ls.Inode || s.Inode == ls.Inode {
			continue
		}
		fd, ok, err := r.takeUnix(f, ls.Name)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("fd %d: unix socket:[%d] of listener fd %d (%s, taken over from the original) cannot be taken over too", f.Fd, s.Inode, lf.Fd, unixName(ls.Name))
		}
		u.made[s.Inode], u.taken[s.Inode] = fd, true
	}
	return true, nil
}
