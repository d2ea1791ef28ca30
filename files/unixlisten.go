package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/lazycr/lazycr/image/pb"
	"github.com/lazycr/lazycr/proc"
	"golang.org/x/sys/unix"
)

// Named unix sockets (unix(7)): listeners (stream and seqpacket) bound to
// a path or an abstract name, with their backlog; the connections
// accepted from such a listener whose both ends are in the dump; the
// connections waiting in its queue whose connecting end is in the dump;
// and bound or unconnected sockets (a bound datagram socket, one
// connected to a bound one).
//
// Restore makes a listener with socket, bind and listen injected into the
// process (the name resolves in its mount namespace, and listen(2)
// records the caller as SO_PEERCRED), then rebuilds its connections in
// the process: for each accepted one a new socket connects to it and the
// listener accepts it at once (the accepted end gets the listener's name
// back, as unix_stream_connect gives it); then, in queue order, one
// connect for each connection that was waiting. A path's socket file left
// by the killed original is replaced only if it is the file the dump saw
// and no socket is bound to it any more; anything else at the path is
// refused, naming it.

// dumpUnixListener records a listening socket: its name (and file), its
// backlog and its queue of pending connections, whose connecting ends must
// be in the dump with nothing sent yet (their bytes wait in a socket that
// has no fd, which lazycr cannot read without accepting it).
func (d *dumper) dumpUnixListener(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	if !diag.named {
		return refuseUnix("listening socket:[%d] has no name", l.ino)
	}
	s.Listening, s.Backlog, s.Peer = true, diag.wqueue, 0
	if err := d.unixPathOf(l, diag, s); err != nil {
		return err
	}
	for _, c := range diag.icons {
		what := fmt.Sprintf("listener socket:[%d] on %s has a connection waiting to be accepted", l.ino, unixName(s.Name))
		if c == 0 {
			return fmt.Errorf("%w: %w: fd kind unix socket: %s whose connecting socket is closed", ErrUnsupported, ErrTransient, what)
		}
		if d.otherMember(c) {
			return refuseUnix("%s from socket:[%d], which another member of the tree holds (a listener's connections split across members are not restored yet)", what, c)
		}
		if !d.holdsSocket(c) {
			if err := d.pendingFromOutside(l, c, s, what); err != nil {
				return err
			}
			continue
		}
		if cd := d.unixDiag[c]; cd.wqueue > 0 {
			return fmt.Errorf("%w: %w: fd kind unix socket: %s from socket:[%d] with data already sent", ErrUnsupported, ErrTransient, what, c)
		}
	}
	for _, c := range diag.icons {
		if d.holdsSocket(c) {
			s.Pending = append(s.Pending, c)
		}
	}
	return nil
}

// dumpUnixPending records the connecting end of a connection that waits
// in a listener's queue (connected, but its peer is the not yet accepted
// socket, which has no inode): the listener must be the dump's.
func (d *dumper) dumpUnixPending(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	var ln uint64
	for ino, u := range d.unixDiag {
		if u.listening() && slices.Contains(u.icons, l.ino) {
			ln = ino
			break
		}
	}
	if ln == 0 {
		// Its peer is gone: unix_release_sock leaves the pointer
		// to a socket without an inode.
		return d.dumpUnixOrphan(l, diag, s)
	}
	if diag.named {
		return refuseUnix("socket:[%d] is bound to %s and waits in the queue of socket:[%d] (a bound client)", l.ino, unixName(s.Name), ln)
	}
	if d.otherMember(ln) {
		return refuseUnix("socket:[%d] waits to be accepted by listener socket:[%d], which another member of the tree holds (a listener's connections split across members are not restored yet)", l.ino, ln)
	}
	if !d.holdsSocket(ln) {
		return d.dumpUnixPendingExternal(l, diag, s, ln) // unixext.go
	}
	if diag.wqueue > 0 {
		return fmt.Errorf("%w: %w: fd kind unix socket: socket:[%d] waits to be accepted by socket:[%d] with data already sent", ErrUnsupported, ErrTransient, l.ino, ln)
	}
	s.Listener = ln
	return nil
}

// dumpUnixOrphan records a connection whose peer has closed: an accepted
// socket whose client went away (the server has not read the end yet),
// rebuilt by connecting a client to its listener, accepting, writing the
// bytes still waiting and closing the client, which leaves it exactly so
// (its name, the client's, the bytes, then EOF). Its listener must be the
// dump's. Any other socket whose peer has closed (a client whose server
// went away: getpeername(2) still names the server) is refused.
func (d *dumper) dumpUnixOrphan(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	if _, accepted := d.unixListenerIn(diag); !diag.named || !accepted {
		return d.dumpUnixDeadPeer(l, diag, s) // unixdead.go
	}
	ln, err := d.unixListenerOf(l.ino, diag)
	if err != nil {
		return err
	}
	s.Listener, s.Accepted = ln, true
	return nil
}

// dumpUnixUnconnected records a socket that is neither listening nor
// connected: bound to a name or not.
func (d *dumper) dumpUnixUnconnected(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	return d.unixPathOf(l, diag, s)
}

// unixListenerOf finds the listener the socket ino (named as diag says)
// was accepted from: the dump's listener with the same name and, for a
// path, the same file.
func (d *dumper) unixListenerOf(ino uint64, diag unixDiag) (uint64, error) {
	for ln, u := range d.unixDiag {
		if !u.listening() || u.name != diag.name || u.vfsIno != diag.vfsIno || u.vfsDev != diag.vfsDev {
			continue
		}
		if d.otherMember(ln) {
			return 0, refuseUnix("socket:[%d] was accepted from listener socket:[%d] on %s, which another member of the tree holds (a listener's connections split across members are not restored yet)",
				ino, ln, unixName([]byte(diag.name)))
		}
		if !d.holdsSocket(ln) {
			return 0, refuseUnix("socket:[%d] was accepted from listener socket:[%d] on %s%s, which is not the process's",
				ino, ln, unixName([]byte(diag.name)), heldBy(ln, d.pid))
		}
		return ln, nil
	}
	return 0, refuseUnix("socket:[%d] was accepted on %s from a listener that is closed (or it is a bound client)", ino, unixName([]byte(diag.name)))
}

// selfConnected reports whether the connection whose accepted end,
// socket:[accepted], is named as diag says and whose client end is
// socket:[client] is one within the process (both ends its own, not
// another tree member's) whose listener the dump does not have: no listener
// with that name and socket file is listed (it was closed, or, after a
// lazy migration on one host, the connection was rebuilt through a
// temporary listener of the same name: unixtake.go) and the name is an
// absolute path. Such a connection
// is rebuilt as the lazy migration rebuilds it: its ends show nothing
// of the listener they came from (getsockname(2) of the accepted end
// and getpeername(2) of the client give the name, SO_PEERCRED the
// credentials of the listen and the connect).
func (d *dumper) selfConnected(diag unixDiag, accepted, client uint64) bool {
	if !strings.HasPrefix(diag.name, "/") || !d.holdsSocket(accepted) || !d.holdsSocket(client) {
		return false
	}
	for _, u := range d.unixDiag {
		if u.listening() && u.name == diag.name && u.vfsIno == diag.vfsIno && u.vfsDev == diag.vfsDev {
			return false
		}
	}
	return true
}

// otherMember reports whether socket:[ino] is held by another member of
// the tree being dumped and not by this process: restore makes a
// listener's whole group in one process (makeUnixListener).
func (d *dumper) otherMember(ino uint64) bool {
	return d.opts.TreeSockets[ino] && !d.holdsSocket(ino)
}

// unixPathOf records the file of a socket bound to a path, as the
// process sees it (through /proc/PID/root): it must still be the
// socket's (sock_diag's UNIX_DIAG_VFS). A relative path (resolved against
// the directory the process was in when it bound) and a file unlinked or
// replaced since are refused. An abstract name has no file.
func (d *dumper) unixPathOf(l *liveFd, diag unixDiag, s *pb.UnixSocket) error {
	if len(s.Name) == 0 || s.Name[0] == 0 {
		return nil
	}
	name := string(s.Name)
	if name[0] != '/' {
		return refuseUnix("socket:[%d] is bound to the relative path %q", l.ino, name)
	}
	var st unix.Stat_t
	full := fmt.Sprintf("/proc/%d/root%s", d.pid, name)
	err := unix.Lstat(full, &st)
	if err == nil && (st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != diag.vfsIno || !sameKernelDev(st.Dev, diag.vfsDev)) {
		err = fmt.Errorf("it names inode %d (mode %#o), the socket's file is inode %d", st.Ino, st.Mode, diag.vfsIno)
	}
	if err != nil {
		return refuseUnix("socket:[%d] is bound to %s, which no longer names its file (unlinked or replaced: %v)", l.ino, name, err)
	}
	s.Path = &pb.UnixPath{Dev: st.Dev, Inode: st.Ino, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid}
	return nil
}

// unixPathDiff says how the file st at a socket's path differs from the
// socket file p the dump saw: its type, device and inode, naming an inode
// number that is the same (a new file can get the number of a removed one).
func unixPathDiff(st *unix.Stat_t, p *pb.UnixPath) string {
	here := fmt.Sprintf("%s (mode %#o) on device %d:%d, inode %d", fileTypeName(st.Mode), st.Mode&0o7777, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if p == nil {
		return "the dump recorded no socket file; the path is now " + here
	}
	var d []string
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		d = append(d, fmt.Sprintf("it is %s (mode %#o), not a socket", fileTypeName(st.Mode), st.Mode&0o7777))
	}
	if st.Dev != p.Dev {
		d = append(d, fmt.Sprintf("it is on device %d:%d, the dump saw %d:%d", unix.Major(st.Dev), unix.Minor(st.Dev), unix.Major(p.Dev), unix.Minor(p.Dev)))
	}
	switch {
	case st.Ino != p.Inode:
		d = append(d, fmt.Sprintf("it is inode %d, the dump saw inode %d", st.Ino, p.Inode))
	case len(d) > 0:
		d = append(d, fmt.Sprintf("only its inode number %d is the same (reused after the socket file was removed)", st.Ino))
	}
	if len(d) == 0 {
		return "the path is now " + here
	}
	return strings.Join(d, "; ")
}

// fileTypeName names the file type in mode (st_mode), as stat(1) does.
func fileTypeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFIFO:
		return "a fifo"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("a file of type %#o", mode&unix.S_IFMT)
}

// sameKernelDev compares stat(2)'s st_dev with a kernel dev_t (major in
// the top 12 bits, minor in the low 20: include/linux/kdev_t.h), which is
// what UNIX_DIAG_VFS reports.
func sameKernelDev(stDev uint64, kdev uint32) bool {
	return unix.Major(stDev) == kdev>>20 && unix.Minor(stDev) == kdev&(1<<20-1)
}

// heldBy names the processes other than skip that hold socket:[ino]
// (", held by pid 12 (redis-cli)"), or says nobody does.
func heldBy(ino uint64, skip int) string { return holdersText(socketHolders(ino, skip)) }

// holdersText is heldBy's text for pids.
func holdersText(pids []int32) string {
	if len(pids) == 0 {
		return " (held by no process lazycr can see)"
	}
	out := " (held by"
	for i, pid := range pids {
		if i > 0 {
			out += ","
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		out += fmt.Sprintf(" pid %d (%s)", pid, trimNL(comm))
	}
	return out + ")"
}

func trimNL(b []byte) string {
	for len(b) > 0 && b[len(b)-1] == '\n' {
		b = b[:len(b)-1]
	}
	return string(b)
}

// socketHolders returns the pids (up to maxHolders) other than skip and
// lazycr that have socket:[ino] among their fds, from /proc/*/fd: a
// snapshot, to name a peer in a refusal.
func socketHolders(ino uint64, skip int) []int32 {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	target := fmt.Sprintf("socket:[%d]", ino)
	var out []int32
	for _, e := range procs {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == skip || pid == os.Getpid() || fmt.Sprint(pid) != e.Name() {
			continue
		}
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, f := range ents {
			if link, err := os.Readlink(dir + "/" + f.Name()); err == nil && link == target {
				out = append(out, int32(pid))
				break
			}
		}
		if len(out) >= maxHolders {
			break
		}
	}
	return out
}

// putSockaddrUnix writes a sockaddr_un for name at scratchArgs and returns
// its address and length: a path gets its NUL, an abstract name is its
// bytes exactly (their length is part of the name, unix(7)).
func (r *restorer) putSockaddrUnix(name []byte) (uintptr, uintptr, error) {
	if len(name) == 0 || len(name) > 107 {
		return 0, 0, fmt.Errorf("unix socket name of %d bytes", len(name))
	}
	sa := binary.LittleEndian.AppendUint16(nil, unix.AF_UNIX)
	sa = append(sa, name...)
	if name[0] != 0 {
		sa = append(sa, 0)
	}
	addr, err := r.rem.Put(scratchArgs, sa)
	return addr, uintptr(len(sa)), err
}

// newUnixSocket makes a socket of type typ in the process at a temporary
// number (non-blocking: the generic flag step gives it its own flags).
func (r *restorer) newUnixSocket(num int32, typ int32) (uintptr, error) {
	fd, err := r.rem.Syscall(unix.SYS_SOCKET, unix.AF_UNIX, uintptr(typ)|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return 0, fmt.Errorf("create unix socket fd %d (type %d): %w", num, typ, err)
	}
	if fd, err = r.moveHigh(fd); err != nil {
		return 0, fmt.Errorf("create unix socket fd %d: %w", num, err)
	}
	return fd, nil
}

// connectUnix connects the process's socket fd to name, from the process
// (SO_PEERCRED of the accepted end names it).
func (r *restorer) connectUnix(fd uintptr, num int32, name []byte) error {
	addr, n, err := r.putSockaddrUnix(name)
	if err != nil {
		return fmt.Errorf("connect fd %d: %w", num, err)
	}
	if _, err := r.rem.Syscall(unix.SYS_CONNECT, fd, addr, n); err != nil {
		return fmt.Errorf("connect fd %d to %s: %w", num, unixName(name), err)
	}
	return nil
}

// bindUnix binds the process's socket fd (image fd f) to its recorded
// name, from the process. A path's file gets its recorded mode and owner.
func (r *restorer) bindUnix(fd uintptr, f *pb.Fd) error {
	s := f.GetUnixSocket()
	path := len(s.Name) > 0 && s.Name[0] != 0
	var full string
	if path {
		full = fmt.Sprintf("/proc/%d/root%s", r.pid, s.Name)
		if err := r.clearUnixPath(f, full); err != nil {
			return err
		}
	}
	addr, n, err := r.putSockaddrUnix(s.Name)
	if err != nil {
		return fmt.Errorf("bind fd %d: %w", f.Fd, err)
	}
	if _, err := r.rem.Syscall(unix.SYS_BIND, fd, addr, n); err != nil {
		return fmt.Errorf("bind fd %d to %s: %w", f.Fd, unixName(s.Name), err)
	}
	if !path {
		return nil
	}
	return r.boundFile(f, full)
}

// boundFile records the socket file full (lazycr's path) just bound for
// image fd f and gives it its recorded mode and owner.
func (r *restorer) boundFile(f *pb.Fd, full string) error {
	s := f.GetUnixSocket()
	r.ubinds.add(r.pid, string(s.Name))
	if s.Path == nil {
		return nil
	}
	if err := unix.Chmod(full, s.Path.Mode&0o7777); err != nil {
		return fmt.Errorf("give the socket file %s of fd %d mode %#o: %w", s.Name, f.Fd, s.Path.Mode&0o7777, &os.PathError{Op: "chmod", Path: full, Err: err})
	}
	if err := unix.Lchown(full, int(s.Path.Uid), int(s.Path.Gid)); err != nil {
		return fmt.Errorf("give the socket file %s of fd %d owner %d:%d: %w", s.Name, f.Fd, s.Path.Uid, s.Path.Gid, &os.PathError{Op: "lchown", Path: full, Err: err})
	}
	return nil
}

// clearUnixPath makes room at a path socket's name: a file there is
// removed only if it is the socket file the dump saw (the killed
// original's, which the kernel leaves behind) and no socket of the
// process's network namespace is bound to it any more.
func (r *restorer) clearUnixPath(f *pb.Fd, full string) error {
	s := f.GetUnixSocket()
	var st unix.Stat_t
	err := unix.Lstat(full, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bind fd %d to %s: %w", f.Fd, s.Name, &os.PathError{Op: "lstat", Path: full, Err: err})
	}
	if s.Path == nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Dev != s.Path.Dev || st.Ino != s.Path.Inode {
		return fmt.Errorf("bind fd %d to %s: the path exists and is not the socket file the dump saw: %s; remove it if it is stale",
			f.Fd, s.Name, unixPathDiff(&st, s.Path))
	}
	// Still bound: the dumped socket is alive (held by the original left
	// running, or frozen by a lazy source, in any network namespace:
	// /proc), or another socket of this namespace is bound to the file
	// (sock_diag).
	if pids := socketHolders(s.Inode, r.pid); len(pids) > 0 {
		return fmt.Errorf("bind fd %d to %s: the dumped socket:[%d] is still bound to it%s", f.Fd, s.Name, s.Inode, holdersText(pids))
	}
	live, err := unixSockets(r.pid)
	if err != nil {
		return fmt.Errorf("bind fd %d to %s: %w", f.Fd, s.Name, err)
	}
	for ino, u := range live {
		if u.vfsIno == st.Ino && sameKernelDev(st.Dev, u.vfsDev) {
			return fmt.Errorf("bind fd %d to %s: socket:[%d]%s is still bound to it", f.Fd, s.Name, ino, heldBy(ino, r.pid))
		}
	}
	if err := unix.Unlink(full); err != nil {
		return fmt.Errorf("bind fd %d to %s: remove the dumped process's socket file: %w", f.Fd, s.Name, &os.PathError{Op: "unlink", Path: full, Err: err})
	}
	r.log.Info().Int32("fd", f.Fd).Str("path", string(s.Name)).Uint64("inode", st.Ino).Msg("removed the socket file the dumped process left")
	return nil
}

// makeUnixListener makes listener ln of the image with its connections:
// the accepted ones (connected and accepted at once, then their data and
// shutdown states), then the waiting ones in queue order.
func (r *restorer) makeUnixListener(ln uint64) error {
	u := r.unixState()
	lf := u.byIno[ln]
	if lf == nil || !lf.GetUnixSocket().Listening {
		return fmt.Errorf("unix listener socket:[%d] is not in the image", ln)
	}
	if _, ok := u.made[ln]; ok {
		return nil
	}
	ls := lf.GetUnixSocket()
	if took, err := r.takeUnixGroup(lf); took || err != nil { // unixtake.go (its queue as it is)
		return err
	}
	if err := r.dropPendingExternal(lf); err != nil { // unixext.go
		return err
	}
	lfd, err := r.newUnixSocket(lf.Fd, ls.Type)
	if err != nil {
		return err
	}
	u.made[ln] = lfd
	if err := r.bindUnix(lfd, lf); err != nil {
		return err
	}
	if err := r.unixOpts(lfd, lf); err != nil {
		return err
	}
	err = r.asCred(ls.PeerCred, func() error {
		_, err := r.rem.Syscall(unix.SYS_LISTEN, lfd, uintptr(ls.Backlog))
		return err
	})
	if err != nil {
		return fmt.Errorf("listen on fd %d (%s, backlog %d): %w", lf.Fd, unixName(ls.Name), ls.Backlog, err)
	}
	var accepted []*pb.Fd
	for _, f := range u.byIno {
		if s := f.GetUnixSocket(); s.Accepted && s.Listener == ln && s.External == nil {
			accepted = append(accepted, f)
		}
	}
	slices.SortFunc(accepted, func(a, b *pb.Fd) int { return int(a.Fd - b.Fd) })
	for _, af := range accepted {
		as := af.GetUnixSocket()
		if as.Peer == 0 {
			if err := r.makeUnixOrphan(lf, lfd, af); err != nil {
				return err
			}
			continue
		}
		cf := u.byIno[as.Peer]
		if cf == nil || cf.GetUnixSocket().Listener != ln || cf.GetUnixSocket().Peer != as.Inode {
			return fmt.Errorf("fd %d: unix socket:[%d] accepted from fd %d has its peer socket:[%d] missing from the image", af.Fd, as.Inode, lf.Fd, as.Peer)
		}
		cs := cf.GetUnixSocket()
		cfd, err := r.newUnixSocket(cf.Fd, cs.Type)
		if err != nil {
			return err
		}
		u.made[cs.Inode] = cfd
		// SO_PEERCRED of the accepted end is the connector's.
		if err := r.asCred(as.PeerCred, func() error { return r.connectUnix(cfd, cf.Fd, ls.Name) }); err != nil {
			return err
		}
		afd, err := r.rem.Syscall(unix.SYS_ACCEPT4, lfd, 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return fmt.Errorf("accept fd %d's connection from fd %d on fd %d: %w", af.Fd, cf.Fd, lf.Fd, err)
		}
		if afd, err = r.moveHigh(afd); err != nil {
			return fmt.Errorf("accept fd %d: %w", af.Fd, err)
		}
		u.made[as.Inode] = afd
		what := fmt.Sprintf("unix connection of fds %d and %d (accepted from fd %d)", af.Fd, cf.Fd, lf.Fd)
		if err := r.fillPair([2]*pb.Fd{af, cf}, [2]uintptr{afd, cfd}, what); err != nil {
			return err
		}
	}
	for _, c := range ls.Pending {
		cf := u.byIno[c]
		if cf == nil || cf.GetUnixSocket().Listener != ln || cf.GetUnixSocket().Peer != 0 {
			return fmt.Errorf("fd %d: the connection from socket:[%d] waiting on listener socket:[%d] has its connecting socket missing from the image", lf.Fd, c, ln)
		}
		cs := cf.GetUnixSocket()
		cfd, err := r.newUnixSocket(cf.Fd, cs.Type)
		if err != nil {
			return err
		}
		u.made[c] = cfd
		if err := r.connectUnix(cfd, cf.Fd, ls.Name); err != nil {
			return err
		}
		if err := r.unixOpts(cfd, cf); err != nil {
			return err
		}
	}
	return nil
}

// asCred runs op (an injected listen or connect) with the effective user
// and group ids of c, so that SO_PEERCRED (which listen(2) and connect(2)
// record from the caller's credentials, unix(7)) gives them, then puts the
// stub's back. The stub runs as root here (the process's credentials are
// set last): it may take any effective id and take 0 back (its real and
// saved ids stay 0; setresuid(2)). Nil c, or ids equal to the stub's: op
// alone.
func (r *restorer) asCred(c *pb.UnixCred, op func() error) error {
	if c == nil {
		return op()
	}
	euid, err := r.rem.Syscall(unix.SYS_GETEUID)
	if err != nil {
		return fmt.Errorf("read the effective uid: %w", err)
	}
	egid, err := r.rem.Syscall(unix.SYS_GETEGID)
	if err != nil {
		return fmt.Errorf("read the effective gid: %w", err)
	}
	if uint32(euid) == c.Uid && uint32(egid) == c.Gid {
		return op()
	}
	const keep = ^uintptr(0) // -1: unchanged
	if _, err := r.rem.Syscall(unix.SYS_SETRESGID, keep, uintptr(c.Gid), keep); err != nil {
		return fmt.Errorf("take effective gid %d for SO_PEERCRED: %w", c.Gid, err)
	}
	if _, err := r.rem.Syscall(unix.SYS_SETRESUID, keep, uintptr(c.Uid), keep); err != nil {
		_, _ = r.rem.Syscall(unix.SYS_SETRESGID, keep, egid, keep)
		return fmt.Errorf("take effective uid %d for SO_PEERCRED: %w", c.Uid, err)
	}
	opErr := op()
	_, uerr := r.rem.Syscall(unix.SYS_SETRESUID, keep, euid, keep)
	_, gerr := r.rem.Syscall(unix.SYS_SETRESGID, keep, egid, keep)
	if uerr != nil || gerr != nil {
		return errors.Join(opErr, fmt.Errorf("take effective ids %d:%d back: %w", euid, egid, errors.Join(uerr, gerr)))
	}
	return opErr
}

// makeUnixOrphan rebuilds af, accepted from listener lf (at lfd) and
// closed by its client since: a client made for the purpose connects,
// is accepted, sends the bytes or messages that were waiting, and is
// closed.
func (r *restorer) makeUnixOrphan(lf *pb.Fd, lfd uintptr, af *pb.Fd) error {
	as := af.GetUnixSocket()
	cfd, err := r.newUnixSocket(af.Fd, as.Type)
	if err != nil {
		return err
	}
	defer r.closeRemote(cfd) // the client goes away, as it had
	if err := r.asCred(as.PeerCred, func() error { return r.connectUnix(cfd, af.Fd, lf.GetUnixSocket().Name) }); err != nil {
		return err
	}
	afd, err := r.rem.Syscall(unix.SYS_ACCEPT4, lfd, 0, 0, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		return fmt.Errorf("accept fd %d (its client closed) on fd %d: %w", af.Fd, lf.Fd, err)
	}
	if afd, err = r.moveHigh(afd); err != nil {
		return fmt.Errorf("accept fd %d: %w", af.Fd, err)
	}
	r.unixState().made[as.Inode] = afd
	client, err := r.getfd(cfd)
	if err != nil {
		return fmt.Errorf("unix socket fd %d: %w", af.Fd, err)
	}
	defer unix.Close(client)
	if err := r.unixOpts(afd, &pb.Fd{Fd: af.Fd, Kind: &pb.Fd_UnixSocket{UnixSocket: &pb.UnixSocket{Sndbuf: as.Sndbuf, Rcvbuf: as.Rcvbuf, Passcred: as.Passcred,
		RcvtimeoUs: as.RcvtimeoUs, SndtimeoUs: as.SndtimeoUs}}}); err != nil {
		return err
	}
	if err := writeStream(client, as.Data, fmt.Sprintf("fd %d", af.Fd)); err != nil {
		return err
	}
	return sendUnixMessages(client, nil, as.Messages, af.Fd)
}

// unixOpts gives the process's socket fd (image fd f) its options and
// shutdown state, through a pidfd_getfd copy.
func (r *restorer) unixOpts(fd uintptr, f *pb.Fd) error {
	local, err := r.getfd(fd)
	if err != nil {
		return fmt.Errorf("unix socket fd %d: %w", f.Fd, err)
	}
	defer unix.Close(local)
	if err := setUnixOpts(local, f.Fd, f.GetUnixSocket()); err != nil {
		return err
	}
	return shutdownUnix(local, f.Fd, f.GetUnixSocket())
}

// makeUnixSingle makes a socket that is made alone: unconnected (bound or
// not) or a datagram socket connected to a bound one (connected once
// every socket has its number: finish).
func (r *restorer) makeUnixSingle(f *pb.Fd) (uintptr, error) {
	s := f.GetUnixSocket()
	if s.Peer != 0 && s.Type != unix.SOCK_DGRAM {
		return 0, fmt.Errorf("fd %d: unix socket:[%d] is connected to socket:[%d], which the image does not pair with it", f.Fd, s.Inode, s.Peer)
	}
	if len(s.Name) > 0 {
		// Its name may still be the frozen original's (unixtake.go).
		if fd, took, err := r.takeUnix(f, s.Name); took || err != nil {
			if took {
				r.unixState().made[s.Inode] = fd
				r.unixState().taken[s.Inode] = true
			}
			return fd, err
		}
	}
	fd, err := r.newUnixSocket(f.Fd, s.Type)
	if err != nil {
		return 0, err
	}
	r.unixState().made[s.Inode] = fd
	switch {
	case isPathName(s.Name) && len(s.Messages) > 0:
		if err := r.bindUnixQueued(fd, f); err != nil { // unixmsg.go
			return 0, err
		}
	case len(s.Name) > 0:
		if err := r.bindUnix(fd, f); err != nil {
			return 0, err
		}
		if err := r.sendToBound(f); err != nil { // unixmsg.go
			return 0, err
		}
	}
	if s.Peer != 0 {
		// shutdown(2) of a connected datagram socket also marks its peer:
		// after the connect (finish).
		local, err := r.getfd(fd)
		if err != nil {
			return 0, fmt.Errorf("unix socket fd %d: %w", f.Fd, err)
		}
		defer unix.Close(local)
		return fd, setUnixOpts(local, f.Fd, s)
	}
	return fd, r.unixOpts(fd, f)
}

// finish connects a datagram socket to its bound peer, at its final
// number, then gives it its shutdown state.
func (unixSocket) finish(r *restorer, f *pb.Fd) error {
	s := f.GetUnixSocket()
	if s.Type != unix.SOCK_DGRAM || s.Peer == 0 || s.External != nil || r.isDgramPair(s) || r.unixState().taken[s.Inode] {
		return nil
	}
	pf := r.unixState().byIno[s.Peer]
	if pf == nil || len(pf.GetUnixSocket().Name) == 0 {
		return fmt.Errorf("fd %d: unix socket:[%d] is connected to socket:[%d], which is not a named socket of the image", f.Fd, s.Inode, s.Peer)
	}
	if err := r.connectUnix(uintptr(f.Fd), f.Fd, pf.GetUnixSocket().Name); err != nil {
		return err
	}
	if s.Shutdown == 0 {
		return nil
	}
	local, err := r.getfd(uintptr(f.Fd))
	if err != nil {
		return fmt.Errorf("unix socket fd %d: %w", f.Fd, err)
	}
	defer unix.Close(local)
	return shutdownUnix(local, f.Fd, s)
}

// UnixBinds are the socket files a restore made by binding unix sockets
// to paths, so that a restore that fails (at any later step) removes them
// again (Abort): a file left behind would be bound to nothing and would
// not be the file the dump saw, so the next restore would refuse the
// path. Only files made in lazycr's own mount namespace are recorded (the
// stub's path after it is killed is not reachable otherwise). Safe for
// concurrent use; a nil *UnixBinds records nothing.
type UnixBinds struct {
	mu    sync.Mutex
	files []boundFile
}

type boundFile struct {
	path     string
	dev, ino uint64
}

// NewUnixBinds returns an empty record.
func NewUnixBinds() *UnixBinds { return &UnixBinds{} }

// add records the socket file at path (lazycr's view) as made by pid.
func (u *UnixBinds) add(pid int, path string) {
	if u == nil || !sameMountNS(pid) {
		return
	}
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files = append(u.files, boundFile{path: path, dev: st.Dev, ino: st.Ino})
}

// sameMountNS reports whether pid is in lazycr's mount namespace (a path
// means the same file to both).
func sameMountNS(pid int) bool {
	var other unix.Stat_t
	self, err := proc.SelfNs("mnt")
	return err == nil && unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &other) == nil &&
		self.Ino == other.Ino && self.Dev == other.Dev
}

// Abort removes the socket files recorded that are still the ones the
// restore made.
func (u *UnixBinds) Abort() {
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, f := range u.files {
		var st unix.Stat_t
		if unix.Lstat(f.path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFSOCK && st.Dev == f.dev && st.Ino == f.ino {
			_ = unix.Unlink(f.path) // best effort: a rollback
		}
	}
	u.files = nil
}
