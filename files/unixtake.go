package files

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/lazycr/lazycr/image/pb"
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
	pid := int(r.imagePid)
	local, st, err := r.fdOfFrozenOriginal(f.Fd)
	if err != nil {
		r.log.Debug().Err(err).Int32("fd", f.Fd).Msg("not taken over from the original")
		return 0, false, nil
	}
	defer unix.Close(local)
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != s.Inode {
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
	var self []*pb.Fd // accepted ends of connections within the process
	for _, f := range u.byIno {
		s := f.GetUnixSocket()
		if s.Listener != ls.Inode || s.Inode == ls.Inode {
			continue
		}
		if isPathName(ls.Name) && selfConnected(u, s) {
			if s.Accepted {
				self = append(self, f)
			}
			continue
		}
		if s.Accepted && selfConnected(u, s) {
			// An abstract name cannot be bound a second time in this
			// network namespace for a rebuild: taken, as it is.
			r.log.Warn().Int32("fd", f.Fd).Int32("peer_fd", u.byIno[s.Peer].Fd).Uint32("original_pid", r.imagePid).
				Msgf("fds %d and %d: connection accepted from %s within the process, taken over: SO_PEERCRED of both ends still names the original pid %d", f.Fd, u.byIno[s.Peer].Fd, unixName(ls.Name), r.imagePid)
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
	if len(self) > 0 {
		what := fmt.Sprintf("fd %d: rebuild the connections accepted from %s within the process", lf.Fd, unixName(ls.Name))
		if err := r.rebuildSelfConnected(ls.Name, ls.Type, ls.PeerCred, self, what); err != nil {
			return false, err
		}
		r.log.Info().Int32("fd", lf.Fd).Int("connections", len(self)).
			Msgf("fd %d: rebuilt %d connections accepted from %s within the process (their SO_PEERCRED names it)", lf.Fd, len(self), unixName(ls.Name))
	}
	return true, nil
}

func isPathName(name []byte) bool { return len(name) > 0 && name[0] != 0 }

// selfConnected: s is an end of a connection accepted from its listener
// whose other end is in the image too (both ends in the process).
func selfConnected(u *unixRestore, s *pb.UnixSocket) bool {
	if s.Peer == 0 || s.External != nil {
		return false
	}
	p := u.byIno[s.Peer].GetUnixSocket()
	return p != nil && p.Peer == s.Inode && p.Listener == s.Listener && p.External == nil && p.Accepted != s.Accepted
}

// makeUnixSelfConnected makes the connection within the process that
// image fd f is an end of, whose listener is not in the image
// (SelfConnected, unixlisten.go selfConnected): as rebuildSelfConnected
// makes those of a listener taken over. The client end's SO_PEERCRED,
// the credentials listen(2) recorded, is the temporary listener's.
func (r *restorer) makeUnixSelfConnected(f *pb.Fd) error {
	u := r.unixState()
	s := f.GetUnixSocket()
	af, cf := f, u.byIno[s.Peer]
	if !s.Accepted {
		af, cf = cf, f
	}
	if af == nil || cf == nil {
		return fmt.Errorf("fd %d: unix socket:[%d]'s peer socket:[%d] is not in the image", f.Fd, s.Inode, s.Peer)
	}
	as, cs := af.GetUnixSocket(), cf.GetUnixSocket()
	if !as.Accepted || !as.SelfConnected || !cs.SelfConnected || cs.Accepted || as.Peer != cs.Inode || cs.Peer != as.Inode ||
		as.Type != cs.Type || !isPathName(as.Name) || as.Name[0] != '/' {
		return fmt.Errorf("fd %d: unix socket:[%d] and its peer socket:[%d] are not the two ends of a connection accepted from a path in the image", f.Fd, s.Inode, s.Peer)
	}
	what := fmt.Sprintf("fds %d and %d: rebuild their connection accepted from %s within the process", af.Fd, cf.Fd, unixName(as.Name))
	if err := r.rebuildSelfConnected(as.Name, as.Type, cs.PeerCred, []*pb.Fd{af}, what); err != nil {
		return err
	}
	r.log.Debug().Int32("fd", af.Fd).Int32("peer_fd", cf.Fd).
		Msgf("fds %d and %d: rebuilt their connection accepted from %s (its listener is not in the image) through a temporary listener", af.Fd, cf.Fd, unixName(as.Name))
	return nil
}

// rebuildSelfConnected makes the connections accepted from the path lname
// (of socket type typ) whose both ends are in the process (accepted, the
// image fds of their accepted ends; what names the step in errors). For
// a listener taken over from the frozen original they are made afresh
// instead of taking them over: SO_PEERCRED of such a socket names the
// process that listened or connected (unix(7); copied at connect(2), not
// changed later), which for a taken one is the original, killed once the
// migration is done, while a restore's is the process itself. They are
// made as makeUnixListener makes them, on a temporary listener bound to
// the very same name, so getsockname(2) of the accepted end and
// getpeername(2) of the client give it exactly: the process's root
// directory is moved, for the time it takes, to a fresh directory next
// to the socket file (chroot(2), the stub runs as root and alone), where
// the name leads to the temporary listener, then put back (the real
// listener, reached by the same name from everywhere else, never sees
// these connections). The temporary listener listens with listenCred,
// which SO_PEERCRED of each client end gives. A connection whose
// listener is not in the image at all (SelfConnected) is made the same
// way: nothing of the listener shows at its ends.
func (r *restorer) rebuildSelfConnected(lname []byte, typ int32, listenCred *pb.UnixCred, accepted []*pb.Fd, what string) (err error) {
	u := r.unixState()
	name := string(lname)
	return r.inTempRoot(name, what, func(int, int) error {
		lfd, err := r.newUnixSocket(accepted[0].Fd, typ)
		if err != nil {
			return err
		}
		defer r.closeRemote(lfd)
		sa, n, err := r.putSockaddrUnix(lname)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if _, err := r.rem.Syscall(unix.SYS_BIND, lfd, sa, n); err != nil {
			return fmt.Errorf("%s: bind a temporary listener: %w", what, err)
		}
		err = r.asCred(listenCred, func() error {
			_, err := r.rem.Syscall(unix.SYS_LISTEN, lfd, uintptr(len(accepted)))
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: listen: %w", what, err)
		}
		slices.SortFunc(accepted, func(a, b *pb.Fd) int { return int(a.Fd - b.Fd) })
		for _, af := range accepted {
			as := af.GetUnixSocket()
			cf := u.byIno[as.Peer]
			cs := cf.GetUnixSocket()
			cfd, err := r.newUnixSocket(cf.Fd, cs.Type)
			if err != nil {
				return err
			}
			u.made[cs.Inode] = cfd
			// SO_PEERCRED of the accepted end is the connector's.
			if err := r.asCred(as.PeerCred, func() error { return r.connectUnix(cfd, cf.Fd, lname) }); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			afd, err := r.rem.Syscall(unix.SYS_ACCEPT4, lfd, 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			if err != nil {
				return fmt.Errorf("%s: accept fd %d's connection from fd %d: %w", what, af.Fd, cf.Fd, err)
			}
			if afd, err = r.moveHigh(afd); err != nil {
				return fmt.Errorf("accept fd %d: %w", af.Fd, err)
			}
			u.made[as.Inode] = afd
			conn := fmt.Sprintf("unix connection of fds %d and %d (accepted from %s)", af.Fd, cf.Fd, name)
			if err := r.fillPair([2]*pb.Fd{af, cf}, [2]uintptr{afd, cfd}, conn); err != nil {
				return err
			}
		}
		return nil
	})
}

// inTempRoot runs fn with the process's root directory moved to a fresh
// directory top, made next to name's file, in which the directories of
// name are made: for fn, the stub's name leads into top, where nothing
// is yet (chroot(2): the stub runs as root and alone). fn gets lazycr's
// O_PATH fds of the process's real root and of top: /proc/PID/root leads
// to top meanwhile. The root and the current directory are put back and
// top removed after fn.
func (r *restorer) inTempRoot(name, what string, fn func(root, top int) error) (err error) {
	proot := fmt.Sprintf("/proc/%d/root", r.pid)
	top, err := os.MkdirTemp(proot+filepath.Dir(name), ".lazycr-self-")
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer os.RemoveAll(top)
	if err := os.MkdirAll(top+filepath.Dir(name), 0o700); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var dirs [2]int
	for i, d := range []string{proot, top} {
		if dirs[i], err = unix.Open(d, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			if i == 1 {
				unix.Close(dirs[0])
			}
			return fmt.Errorf("%s: %w", what, &os.PathError{Op: "open", Path: d, Err: err})
		}
	}
	defer unix.Close(dirs[0])
	defer unix.Close(dirs[1])
	rootFd, err := r.openAt("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("%s: open the root directory: %w", what, err)
	}
	defer r.closeRemote(rootFd)
	cwdFd, err := r.openAt(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("%s: open the current directory: %w", what, err)
	}
	defer r.closeRemote(cwdFd)
	addr, err := r.putString(scratchPath, strings.TrimPrefix(top, proot))
	if err != nil {
		return err
	}
	if _, err := r.rem.Syscall(unix.SYS_CHROOT, addr); err != nil {
		return fmt.Errorf("%s: chroot %s: %w", what, strings.TrimPrefix(top, proot), err)
	}
	defer func() {
		_, e1 := r.rem.Syscall(unix.SYS_FCHDIR, rootFd)
		var e2, e3 error
		if dot, perr := r.putString(scratchPath, "."); perr != nil {
			e2 = perr
		} else {
			_, e2 = r.rem.Syscall(unix.SYS_CHROOT, dot)
		}
		_, e3 = r.rem.Syscall(unix.SYS_FCHDIR, cwdFd)
		if perr := errors.Join(e1, e2, e3); perr != nil {
			err = errors.Join(err, fmt.Errorf("%s: put the root directory back: %w", what, perr))
		}
	}()
	return fn(dirs[0], dirs[1])
}
